"""The chat REPL and the one-shot predict command on a tiny run (2 training steps on tiny demo-format data)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from epalm.dataset.tasks import TASK_READERS
from tests.tiny_models import tiny_model
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.common.command_line import run_command
from epalm.inference import chat, predict
from epalm.inference.chat_inputs import MediaReader, parse_message
from epalm.inference.checkpoint_source import find_source, load_model
from epalm.inference.conversation import CHAT, ONE_INSTANCE, Conversation, GenerationSettings
from epalm.inference.nearest_tokens import nearest_tokens, visual_tokens
from epalm.models.checkpoint import reference_state
from epalm.training import run
from epalm.training.data import build_dataset, make_collator
from epalm.training.evaluator import clean_prediction, decode_continuations

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A run folder of 2 steps, no evaluation; the data, the images and the config beside it."""
    root = tmp_path_factory.mktemp("chat")
    setup = build_tiny_setup(root)
    # training only: the tests ask the questions
    config = tiny_config(setup, root / "c.yaml", task_keys={"val_split": "", "test_split": ""}, max_steps=2)
    run.main(["--config", str(config), "--output_dir", str(root / "run")])
    images = setup["data"] / "COCO" / "images"
    test_split = TASK_READERS.build("vqa_v2", setup["data"], "karpathy_test")
    return {"root": root, "run": root / "run", "config": config, "data": setup["data"], "images": images,
            "split": test_split}


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_model(str(tiny["run"]))


def _image(tiny, index=0) -> str:
    """A test-split image, relative to the media root."""
    return tiny["split"][index].media


def _ask(loaded, tiny, text, settings, conversation=None):
    """Parse `text`, read its media and ask it (in a fresh conversation unless one is given)."""
    message = parse_message(text, tiny["images"])
    conversation = conversation or Conversation(loaded, settings)
    return conversation.ask(message, [MediaReader(loaded).read(ref) for ref in message.media])


def _session(loaded, tiny, out, **kwargs):
    vqa = chat.RandomVQA(tiny["data"], "karpathy_test", seed=0)
    settings = GenerationSettings.from_run(loaded.cfg, **kwargs)
    return chat.ChatSession(loaded, settings, tiny["images"], topk=3, vqa=vqa, out=out)


def test_scripted_conversation_keeps_the_prompt_alive(loaded, tiny):
    broken = tiny["images"] / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    image = _image(tiny)
    script = "\n".join([
        f"<image:{image}> what colour are the shapes?", "how many are there?", f"/tokens {image}", "/randvqa",
        "<image:missing.png> what is it?", "<image:broken.jpg> what is it?", "<image> a bare placeholder",
        "/tokns x", "/reset", "/help", "",
    ])
    out = io.StringIO()
    session = _session(loaded, tiny, out)
    chat.repl(session, chat.line_reader(io.StringIO(script), out))  # returns at the end of input (Ctrl-D)
    text = out.getvalue()
    blocks = text.split(chat.PROMPT)
    assert len(blocks) == 12  # one prompt per line, and the last one met the end of input
    assert blocks[1].splitlines()[0].endswith("what colour are the shapes?")  # the piped line is echoed
    assert blocks[1].splitlines()[1].startswith("Model:")
    assert blocks[2].splitlines()[1].startswith("Model:")
    tokens = blocks[3].splitlines()
    assert "2 visual token(s)" in tokens[1] and "input embeddings" in tokens[2]
    assert tokens[3].strip().startswith("token 0 (layer 0)") and tokens[4].strip().startswith("token 1 (layers 1, 2)")
    assert all(line.count("'") >= 6 for line in tokens[3:5])  # three quoted tokens each (--topk 3)
    randvqa = blocks[4].splitlines()
    assert randvqa[1].startswith("Question ") and randvqa[2].startswith("Image: ")
    assert any(line.startswith("Model:") for line in randvqa)
    assert randvqa[-1].startswith("Human answers: ") and "(10)" in randvqa[-1]
    assert "error: <image:missing.png>: no such file" in blocks[5] and "--media_root" in blocks[5]
    assert "error: <image:broken.jpg>: cannot read" in blocks[6] and "not a decodable image" in blocks[6]
    assert "error: <image> needs its file: write <image:path>" in blocks[7]
    assert "error: unknown command /tokns (did you mean `/tokens`?)" in blocks[8]
    assert "(conversation cleared)" in blocks[9] and session.conversation.turns == []
    assert "/randvqa" in blocks[10]


def test_one_image_message_is_read_exactly_as_evaluation_reads_the_sample(loaded, tiny):
    """Reference layout: the QA collator's `question</a>` and the medium `(1, ...)`, as the evaluation loader
    builds them for the same test sample (text, mask and preprocessed pixels equal)."""
    sample = tiny["split"][3]
    message = parse_message(f"<image:{sample.media}>  {sample.prompt}", tiny["images"])
    assert message.plain_text == sample.prompt
    conversation = Conversation(loaded, GenerationSettings(1, 5))
    reply = conversation.ask(message, [MediaReader(loaded).read(r) for r in message.media])
    assert reply.layout == ONE_INSTANCE
    dataset = build_dataset(tiny["split"], loaded.model, loaded.cfg, train=False)
    expected = make_collator("qa", loaded.tokenizer, loaded.cfg, train=False)([dataset[3]])
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(reply.batch[key], expected[key]), key
    assert torch.equal(reply.batch["media"]["image"], expected["media"])  # keyed: that modality's encoder reads it
    assert reply.batch["media"]["image"].shape[0] == 1 and "media_index" not in reply.batch
    assert loaded.tokenizer.decode(reply.batch["input_ids"][0]).endswith("</a>")
    # the model's answer to it is the evaluation's generation on that batch, read as evaluation reads it
    new = loaded.model.generate(expected["input_ids"], expected["attention_mask"], media=expected["media"],
                                max_new_tokens=5, num_beams=1)
    assert reply.answer == clean_prediction(decode_continuations(loaded.tokenizer, new, "qa")[0])


def _chat_row_batch(loaded, tiny, tmp_path, images, content):
    """The evaluation batch of a one-row chat split (the chat reader, the dataset, the run's chat collator)."""
    row = {"id": "r", "images": images, "messages": [{"role": "user", "content": content},
                                                     {"role": "assistant", "content": "yes"}]}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
    split = TASK_READERS.build("chat", tmp_path, "test", media_root=tiny["images"])
    cfg = replace(loaded.cfg, task=replace(loaded.cfg.task, reader="chat", chat_template="plain"))
    item = build_dataset(split, loaded.model, cfg, train=False)[0]
    return make_collator("chat", loaded.tokenizer, cfg, train=False, tokens_per_instance=1)([item])


def test_two_images_use_the_chat_layout_as_a_chat_row_would(loaded, tiny, tmp_path):
    a, b = _image(tiny, 0), _image(tiny, 2)
    message = parse_message(f"is <image:{a}> the same colour as <image:{b}>?", tiny["images"])
    assert message.chat_text == "is <image> the same colour as <image>?"
    reply = Conversation(loaded, GenerationSettings(1, 4)).ask(message, [MediaReader(loaded).read(r) for r in
                                                                         message.media])
    assert reply.layout == CHAT
    expected = _chat_row_batch(loaded, tiny, tmp_path, [a, b], message.chat_text)
    for key in ("input_ids", "attention_mask", "media_index"):
        assert torch.equal(reply.batch[key], expected[key]), key
    assert torch.equal(reply.batch["media"]["image"], expected["media"]["image"])
    assert reply.batch["media"]["image"].shape[0] == 2
    assert sorted(set(reply.batch["media_index"][0].tolist()) - {-1}) == [0, 1]


def test_chat_trained_model_reads_one_image_in_the_chat_layout(loaded, tiny, tmp_path):
    chat_trained = replace(loaded, cfg=replace(loaded.cfg, task=replace(loaded.cfg.task, reader="chat")))
    assert chat_trained.chat_trained and not loaded.chat_trained
    a = _image(tiny, 1)
    message = parse_message(f"<image:{a}> what shape are the objects?", tiny["images"])
    reply = Conversation(chat_trained, GenerationSettings(1, 3)).ask(message, [MediaReader(loaded).read(r) for r in
                                                                               message.media])
    assert reply.layout == CHAT
    expected = _chat_row_batch(loaded, tiny, tmp_path, [a], message.chat_text)
    assert torch.equal(reply.batch["input_ids"], expected["input_ids"])
    assert torch.equal(reply.batch["media_index"], expected["media_index"])


def test_conversation_turns_restart_and_reset(loaded, tiny):
    conversation = Conversation(loaded, GenerationSettings(1, 3))

    def ask(text):
        return _ask(loaded, tiny, text, None, conversation)

    first = ask(f"<image:{_image(tiny)}> what colour are the shapes?")
    follow = ask("how many shapes?")  # no medium: chat layout, after the first turn and its image
    assert follow.layout == CHAT and follow.note is None
    assert follow.batch["media"]["image"].shape[0] == 1
    text = loaded.tokenizer.decode(follow.batch["input_ids"][0])
    assert text.index("colour") < text.index("many")  # the first question, then the follow-up
    assert (follow.batch["media_index"][0] >= 0).sum() == 1
    again = ask(f"<image:{_image(tiny, 1)}> what shape are the objects?")  # one medium: answered alone
    assert again.layout == ONE_INSTANCE and "new conversation" in again.note and "2 earlier turn(s)" in again.note
    assert len(conversation.turns) == 1
    conversation.reset()
    alone = ask("how many shapes?")
    assert "media" not in alone.batch and first.layout == ONE_INSTANCE


def test_long_conversations_drop_their_earliest_turns(loaded, tiny):
    conversation = Conversation(loaded, GenerationSettings(1, 8))  # the tiny LM has 64 positions
    notes = [_ask(loaded, tiny, "are the shapes on the left or on the right of the picture?", None,
                  conversation).note for _ in range(6)]
    assert any(note and "earliest turn(s) left out" in note for note in notes)
    too_long = parse_message(" ".join(["shapes"] * 80), tiny["images"])
    with pytest.raises(ValueError, match="positions"):
        conversation.ask(too_long, [])


def test_ctrl_c_twice_within_the_window_quits(loaded, tiny):
    """At the prompt (0 s), then while a command runs (10 s: too late to quit), then at the prompt (11 s): quits."""
    events = iter([KeyboardInterrupt, "/reset", "/slow", KeyboardInterrupt, "never read"])
    times = iter([0.0, 10.0, 11.0])

    def read(prompt):
        event = next(events)
        if event is KeyboardInterrupt:
            raise KeyboardInterrupt
        return event

    def slow(_):
        raise KeyboardInterrupt  # Ctrl-C while generating

    out = io.StringIO()
    session = _session(loaded, tiny, out)
    session.commands["/slow"] = slow
    chat.repl(session, read, clock=lambda: next(times))
    text = out.getvalue()
    assert text.count("Ctrl-C again within 3 s to quit") == 2 and "(interrupted; Ctrl-C again" in text
    assert "(conversation cleared)" in text and next(events) == "never read"


def test_tokens_are_the_nearest_rows_by_cosine_similarity(loaded, tiny):
    model, tokenizer = loaded.model, loaded.tokenizer
    image = MediaReader(loaded).read(parse_message(f"<image:{_image(tiny)}>", tiny["images"]).media[0])
    report = nearest_tokens(model, tokenizer, visual_tokens(model, image, "image"), k=4)
    connected = model.connect(model.encode(image[None]))[0]
    embeddings = model.lm.model.get_input_embeddings().weight[: len(tokenizer)]
    similarity = F.normalize(connected, dim=-1) @ F.normalize(embeddings, dim=-1).T
    for row, sims in zip(report.rows, similarity):
        values, ids = sims.topk(4)
        assert [text for text, _ in row.neighbours] == [tokenizer.decode([i]) for i in ids.tolist()]
        assert [value for _, value in row.neighbours] == pytest.approx(values.tolist(), abs=1e-5)


@pytest.mark.parametrize("connector", ["linear", "prefix"])
def test_tokens_compare_in_the_space_each_connector_writes(connector):
    """OPT with word_embed_proj_dim != hidden_size: layer tokens against project_in(E), prefix tokens against E."""
    options = {"connector": "prefix", "connector_options": {"tokens": 3}, "injected_hidden_states": 1} \
        if connector == "prefix" else {}
    model = tiny_model("opt", **options)
    embeddings = model.lm.model.get_input_embeddings().weight[:50]
    space, description = model.placement.vocabulary_space(model.lm, 50)
    if connector == "prefix":
        assert torch.equal(space, embeddings) and space.shape[1] == 24
        assert model.connect(model.encode(torch.zeros(1, 3, 32, 32))).shape[-1] == 24
    else:
        assert "project_in" in description and space.shape[1] == 32
        assert torch.allclose(space, model.lm.model.model.decoder.project_in(embeddings))


def test_predict_prints_the_answer_and_json(loaded, tiny):
    image = str(tiny["images"] / _image(tiny))
    question = tiny["split"][0].prompt
    out = io.StringIO()
    result = predict.main(["--checkpoint", str(tiny["run"]), "--media", image, "--prompt", question,
                           "--max_new_tokens", "5"], stdout=out)
    session_answer = _ask(loaded, tiny, f"<image:{image}> {question}", GenerationSettings(1, 5)).answer
    assert out.getvalue() == session_answer + "\n" and result["layout"] == ONE_INSTANCE
    out = io.StringIO()
    predict.main(["--checkpoint", str(tiny["run"]), "--media", image, "--media", f"image:{image}", "--prompt",
                  "same colour?", "--json", "--num_beams", "2"], stdout=out)
    payload = json.loads(out.getvalue())
    assert payload["layout"] == CHAT and payload["prompt"] == "same colour?"
    assert [m["modality"] for m in payload["media"]] == ["image", "image"]
    assert payload["settings"] == {"num_beams": 2, "max_new_tokens": None}  # None: evaluation's bound
    assert isinstance(payload["answer"], str)


def test_reference_pth_and_checkpoint_folder_load_the_same_model(loaded, tiny):
    weights = tiny["run"] / "checkpoints" / "last" / "trainable"
    assert find_source(str(tiny["run"]), []).weights == weights
    assert find_source(str(weights), []).run_config == tiny["run"] / "config.yaml"  # the run's sections found
    state = {k: v.clone() for k, v in reference_state(loaded.model).items()}
    assert sorted(state)[0] == "connector.0.bias"  # the reference's names
    torch.save({"model": state}, tiny["root"] / "released.pth")
    image = str(tiny["images"] / _image(tiny))
    answers = []
    for extra in (["--checkpoint", str(weights)],
                  ["--checkpoint", str(tiny["root"] / "released.pth"), "--config", str(tiny["config"])]):
        answers.append(predict.predict(predict.argument_parser().parse_args(
            [*extra, "--media", image, "--prompt", "what colour are the shapes?", "--max_new_tokens", "4"])))
    assert answers[0]["answer"] == answers[1]["answer"]


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{root}/absent"], "--checkpoint {root}/absent: no such file or folder"),
    (["--checkpoint", "{root}/data"], "neither a run folder"),
    (["--checkpoint", "{root}/released.pth"], "is a reference eP-ALM file, which holds no model config"),
    (["--checkpoint", "{root}/run", "--config", "{root}/c.yaml"], "--config is for a reference .pth file"),
    (["--checkpoint", "{root}/run", "--media_root", "{root}/nowhere"], "--media_root {root}/nowhere: no such folder"),
    (["--checkpoint", "{root}/run", "--input", "{root}/data", "--output", "{root}/out.jsonl", "--media_root",
      "{root}/nowhere"], "--media_root {root}/nowhere: no such folder"),
    (["--checkpoint", "{root}/run", "--media", "video:{root}/c.yaml"], "this model reads image, not video"),
    (["--checkpoint", "{root}/run", "--media", "{root}/nope.jpg"], "no such file {root}/nope.jpg"),
])
def test_predict_errors_are_one_line_and_status_2(tiny, capsys, argv, message):
    (tiny["root"] / "released.pth").touch()
    argv = [a.format(root=tiny["root"]) for a in argv]
    assert run_command(predict.main, [*argv, "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(root=tiny["root"]) in err and "Traceback" not in err


def test_main_py_chat_reads_real_stdin(tiny):
    """`python main.py chat` through a pipe: answers, survives a missing file, quits at the end of input."""
    image = _image(tiny)
    script = f"<image:{image}> what colour are the shapes?\n<image:absent.jpg> hi\n/reset\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "chat", "--checkpoint", str(tiny["run"]),
                           "--media_root", str(tiny["images"]), "--max_new_tokens", "3"],
                          input=script, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("Model:") for line in lines)
    assert any(line.startswith("error: <image:absent.jpg>: no such file") for line in lines)
    assert lines[-2] == "(conversation cleared)" and lines[-1] == chat.PROMPT  # then the end of input
