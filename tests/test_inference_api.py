"""The Python API (Bridge) against `predict` and evaluation: the same answers for the same inputs and settings,
sampling seeds, streaming, a caption model's caption, a reference .pth read with the reference's inputs, dtypes."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from epalm.common.command_line import run_command
from epalm.common.errors import ConfigError
from epalm.dataset.tasks import TASK_READERS
from epalm.inference import Bridge, predict
from epalm.inference.checkpoint_source import load_model
from epalm.inference.generation import GenerationSettings
from epalm.inference.task_kinds import READERS, task_kind
from epalm.models.checkpoint import reference_state
from epalm.training import run
from epalm.training.data import make_collator
from epalm.training.run_config import resolve_config
from tests.tiny_run import build_tiny_setup, tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny VQA run (training only) and a tiny caption run evaluated on its test split."""
    root = tmp_path_factory.mktemp("api")
    setup = build_tiny_setup(root)
    vqa = tiny_config(setup, root / "vqa.yaml", task_keys={"val_split": "", "test_split": ""}, max_steps=2)
    run.main(["--config", str(vqa), "--output_dir", str(root / "vqa")])
    # The demo's pretrained tiny LM writes captions from the first steps (a random one only ends them at once).
    run.main(["--config", "configs/demo/image_caption.yaml", "--data_dir", str(setup["data"]), "--output_dir",
              str(root / "caption"), "--set", "train.max_steps=10", "--set", "train.batch_size=16",
              "--set", "train.feature_cache=false", "--set", "eval.batch_size=5", "--set", "eval.max_length=12"])
    images = setup["data"] / "COCO" / "images"
    split = TASK_READERS.build("vqa_v2", setup["data"], "karpathy_test")
    return {"root": root, "setup": setup, "vqa": root / "vqa", "vqa_config": vqa, "caption": root / "caption",
            "images": images, "split": split}


@pytest.fixture(scope="module")
def bridge(runs):
    return Bridge.load(runs["vqa"], device="cpu")


def _image(runs, index=0) -> str:
    return str(runs["images"] / runs["split"][index].media)


def _predict(argv: list[str]) -> dict:
    out = io.StringIO()
    return predict.main([*argv, "--json"], stdout=out)


SAMPLED = {"do_sample": True, "temperature": 1.0, "top_k": 0, "seed": 7}
SAMPLED_FLAGS = ["--do_sample", "--temperature", "1.0", "--top_k", "0", "--seed", "7"]


def test_api_answers_equal_predict_for_the_same_inputs_and_settings(runs, bridge):
    questions = [runs["split"][i].prompt for i in range(4)]
    images = [_image(runs, i) for i in range(4)]
    by_predict = [_predict(["--checkpoint", str(runs["vqa"]), "--media", image, "--prompt", question,
                            "--max_new_tokens", "6", *SAMPLED_FLAGS])
                  for question, image in zip(questions, images)]
    assert {result["layout"] for result in by_predict} == {"one-instance"}
    answers = [result["answer"] for result in by_predict]
    assert any(answers), "sampled at temperature 1 from all the vocabulary: some answer has words"
    single = [bridge.ask(question, images=image, max_new_tokens=6, **SAMPLED)
              for question, image in zip(questions, images)]
    assert single == answers
    # a batch answers each row as it is answered alone (left padding), seeded per answer as a whole: greedy here
    greedy = [_predict(["--checkpoint", str(runs["vqa"]), "--media", image, "--prompt", question,
                        "--max_new_tokens", "6", "--repetition_penalty", "1.3"])["answer"]
              for question, image in zip(questions, images)]
    assert bridge.ask(questions, images=images, max_new_tokens=6, repetition_penalty=1.3, batch_size=3) == greedy


def test_a_conversation_with_placeholders_is_predicts_tagged_prompt(runs, bridge):
    a, b = _image(runs, 0), _image(runs, 2)
    result = _predict(["--checkpoint", str(runs["vqa"]), "--prompt", f"is <image:{a}> the same as <image:{b}>?",
                       "--max_new_tokens", "5", *SAMPLED_FLAGS])
    assert result["layout"] == "chat"
    messages = [{"role": "user", "content": "is <image> the same as <image>?"}]
    answer = bridge.ask(messages=messages, images=[a, b], max_new_tokens=5, details=True, **SAMPLED)
    assert answer.text == result["answer"] and answer.layout == "chat"
    assert [m["path"] for m in answer.media] == [a, b]
    with pytest.raises(ValueError, match="no file left"):
        bridge.ask(messages=messages, images=[a])
    with pytest.raises(ValueError, match="more media than placeholders"):
        bridge.ask(messages=messages, images=[a, b, a])


def test_sampling_with_a_seed_repeats_and_differs_across_seeds(runs, bridge):
    image, question = _image(runs, 1), runs["split"][1].prompt
    first = [bridge.ask(question, images=image, max_new_tokens=8, **{**SAMPLED, "seed": seed}) for seed in range(5)]
    again = [bridge.ask(question, images=image, max_new_tokens=8, **{**SAMPLED, "seed": seed}) for seed in range(5)]
    assert first == again
    assert len(set(first)) >= 3, first
    greedy = bridge.ask(question, images=image, max_new_tokens=8)
    assert greedy == bridge.ask(question, images=image, max_new_tokens=8, seed=3)  # a seed does not change greedy
    state = torch.get_rng_state()
    bridge.ask(question, images=image, max_new_tokens=8, **SAMPLED)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left as it was


def test_streaming_yields_the_non_streamed_answer(runs, bridge):
    caption = Bridge.load(runs["caption"], device="cpu")
    image, question = _image(runs, 3), runs["split"][3].prompt
    # a seed whose sampled QA answer is followed by a `</a>` and more text: the stream must stop where ask cuts
    cut = next(seed for seed in range(200) if _continues_after_separator(bridge, question, image, seed))
    for model, prompt, settings in ((caption, "", {}), (bridge, question, {**SAMPLED, "seed": cut,
                                                                            "max_new_tokens": 20}),
                                    (caption, "", {**SAMPLED, "seed": 11})):
        stream = model.stream(prompt, images=image, **settings)
        pieces = list(stream)
        assert stream.text == model.ask(prompt, images=image, **settings)
        assert "".join(pieces).split() == stream.text.split() and not stream.stopped
    unread = caption.stream("", images=image)
    assert unread.pieces == []  # generation runs in its thread; the pieces are taken as they are read
    overlapping = caption.stream("", images=image, do_sample=True, seed=2)  # waits for the first: one at a time
    assert overlapping.read() == caption.ask("", images=image, do_sample=True, seed=2)
    assert unread.read() == caption.ask("", images=image)
    with pytest.raises(ConfigError, match="num_beams 1 only"):
        caption.stream("", images=image, num_beams=2)
    long = caption.stream("", images=image, do_sample=True, seed=1, max_new_tokens=40)
    next(iter(long), None)
    long.stop()
    assert long.text == " ".join("".join(long.pieces).split())


def test_a_prompt_past_the_lms_positions_is_refused_before_generation(runs, bridge):
    # the tiny LM has 64 positions: the same check (inference/generation.py: check_fits) as chat's
    image, long = _image(runs), " ".join(["shapes"] * 80)
    for call in (bridge.ask, bridge.stream):
        with pytest.raises(ValueError, match=r"a prompt takes \d+ positions .* more than the LM's 64"):
            call(long, images=image, max_new_tokens=4)
    with pytest.raises(ValueError, match="more than the LM's 64"):
        bridge.ask("what colour?", images=image, max_new_tokens=64)  # the answer's bound counts too
    assert bridge.ask("what colour?", images=image, max_new_tokens=4) is not None


def _continues_after_separator(bridge, question, image, seed) -> bool:
    from epalm.inference.generation import model_inputs, seeded

    settings = bridge.settings.with_overrides(**{**SAMPLED, "seed": seed, "max_new_tokens": 20})
    prepared = bridge.prepare(_request_for(question, image))
    batch, _ = bridge._batch([prepared])
    with torch.no_grad(), seeded(seed, bridge.loaded.device):
        new = bridge.loaded.model.generate(**model_inputs(bridge.loaded, batch), **settings.generate_kwargs(20))
    row = new[0].tolist()
    separator = bridge.loaded.tokenizer.convert_tokens_to_ids("</a>")
    eos = bridge.loaded.tokenizer.eos_token_id
    return separator in row and row.index(separator) > 0 and eos not in row[: row.index(separator) + 2] and \
        len(row) > row.index(separator) + 2


def test_a_caption_models_caption_is_its_evaluation_caption(runs):
    """No prompt (or an empty one): BOS alone, as evaluation reads an image, and evaluation's length bound."""
    predictions = json.loads((runs["caption"] / "eval" / "test_predictions.json").read_text())
    split = TASK_READERS.build("coco_caption", runs["setup"]["data"], "test")
    paths = {sample.uid: str(split.media_path(sample)) for sample in split}
    assert len(predictions) == len(paths) and any(row["caption"] for row in predictions)
    caption = Bridge.load(runs["caption"], device="cpu")
    assert [caption.ask("", images=paths[row["image_id"]]) for row in predictions] == \
        [row["caption"] for row in predictions]
    assert caption.ask([""] * len(predictions), images=[paths[row["image_id"]] for row in predictions]) == \
        [row["caption"] for row in predictions]
    first = predictions[0]
    printed = io.StringIO()
    predict.main(["--checkpoint", str(runs["caption"]), "--media", paths[first["image_id"]]], stdout=printed)
    assert printed.getvalue() == first["caption"] + "\n"
    prepared = caption.prepare(caption_request := _request(caption, paths[first["image_id"]]))
    batch, kind = caption._batch([prepared])
    assert kind == "caption" and batch["input_ids"].tolist() == [[caption.loaded.tokenizer.bos_token_id]]
    assert caption_request.typed == ""


def _request(bridge, path):
    from epalm.inference.requests import prompt_request

    return prompt_request("", [("image", path)], Path("."))


def test_a_reference_pth_is_read_with_the_reference_inputs(runs, bridge):
    path = runs["root"] / "released.pth"
    torch.save({"model": {k: v.clone() for k, v in reference_state(bridge.loaded.model).items()}}, path)
    ours = load_model(str(path), [str(runs["vqa_config"])], "cpu", reference_inputs=False)
    theirs = load_model(str(path), [str(runs["vqa_config"])], "cpu")
    assert ours.cfg.model.injection_mode == "causal" and theirs.cfg.model.injection_mode == "epalm"
    assert theirs.model.config.injection_mode == "epalm"
    assert theirs.cfg.model.encoders["image"].normalization == "clip"
    assert theirs.cfg.task.prompt_template == "{question}?</a>" and ours.cfg.task.prompt_template == "{question}</a>"
    assert (theirs.cfg.eval.padding_side, theirs.cfg.eval.beam_score_length) == ("right", "sequence")
    # predict on the .pth reads the reference's prompt (and answers with its 3 beams, 4.20's scores) ...
    question, image = runs["split"][0].prompt, _image(runs, 0)
    result = _predict(["--checkpoint", str(path), "--config", str(runs["vqa_config"]), "--media", image,
                       "--prompt", question])
    assert result["settings"]["num_beams"] == 3 and result["settings"]["beam_score_length"] == "sequence"
    reference = Bridge(theirs)
    batch, _ = reference._batch([reference.prepare(_request_for(question, image))])
    expected = make_collator("qa", theirs.tokenizer, theirs.cfg, train=False)(
        [{"index": 0, "uid": 0, "prompt": question, "target": None, "skipped": None, "media": torch.zeros(3)}])
    assert batch["input_ids"].tolist() == expected["input_ids"].tolist()
    bare = question.rstrip("?")  # the word-level test tokenizer reads `?` and `??` alike: show it on a bare one
    ids = [Bridge(loaded)._batch([Bridge(loaded).prepare(_request_for(bare, image))])[0]["input_ids"][0].tolist()
           for loaded in (theirs, ours)]
    assert ids[0] == [*ids[1][:-1], theirs.tokenizer.unk_token_id, ids[1][-1]]  # `question?</a>`, `question</a>`
    assert result["answer"] == reference.ask(question, images=image)
    # ... unless told to use ours
    ours_result = _predict(["--checkpoint", str(path), "--config", str(runs["vqa_config"]), "--media", image,
                            "--prompt", question, "--our_defaults", "--max_new_tokens", "5", *SAMPLED_FLAGS])
    assert ours_result["answer"] == bridge.ask(question, images=image, max_new_tokens=5, **SAMPLED)
    assert run_command(predict.main, ["--checkpoint", str(runs["vqa"]), "--our_defaults", "--prompt", "x"]) == 2


def _request_for(question, image):
    from epalm.inference.requests import prompt_request

    return prompt_request(question, [("image", image)], Path("."))


def test_precision_and_device_as_asked(runs):
    half = Bridge.load(runs["vqa"], device="cpu", dtype="bfloat16")
    assert half.loaded.model.lm.dtype == torch.bfloat16
    assert next(half.loaded.model.encoders["image"].parameters()).dtype == torch.bfloat16
    assert next(half.loaded.model.connectors["image"].parameters()).dtype == torch.float32  # trained: fp32
    assert isinstance(half.ask(runs["split"][0].prompt, images=_image(runs), max_new_tokens=3), str)
    assert half.visual_tokens(_image(runs)).shape == (2, 32)
    with pytest.raises(ConfigError, match="--dtype"):
        Bridge.load(runs["vqa"], dtype="float8")


def test_sampling_settings_are_checked_and_evaluation_samples_reproducibly(runs, tmp_path):
    with pytest.raises(ConfigError, match="only apply to sampling"):
        resolve_config(["--set", "eval.temperature=0.7"])
    with pytest.raises(ConfigError, match="top_p must be in"):
        resolve_config(["--set", "eval.do_sample=true", "--set", "eval.top_p=1.5"])
    assert run_command(predict.main, ["--checkpoint", str(runs["vqa"]), "--prompt", "x", "--top_k", "5"]) == 2
    sampling_run = GenerationSettings.from_run(resolve_config(["--set", "eval.do_sample=true", "--set",
                                                               "eval.temperature=0.7"]))
    assert sampling_run.sampling.temperature == 0.7
    greedy = sampling_run.with_overrides(do_sample=False)  # --no-do_sample: the run's temperature goes too
    assert greedy.sampling.generation_config() is None and greedy.sampling.temperature == 1.0
    # a run that samples its test predictions, then --evaluate of its checkpoint: the same draws, because evaluation
    # seeds them itself (whatever training drew before), and not the greedy answers
    sampled = ["--set", "eval.do_sample=true", "--set", "eval.top_k=0", "--set", "task.test_split=karpathy_test"]
    run.main(["--config", str(runs["vqa_config"]), "--output_dir", str(tmp_path / "trained"), *sampled])
    weights = tmp_path / "trained" / "checkpoints" / "last" / "trainable"
    files = [json.loads((tmp_path / "trained" / "eval" / "karpathy_test_predictions.json").read_text())]
    for name, extra in (("again", sampled), ("greedy", sampled[-2:])):
        run.main(["--config", str(runs["vqa_config"]), "--evaluate", "--checkpoint", str(weights), *extra,
                  "--output_dir", str(tmp_path / name)])
        files.append(json.loads((tmp_path / name / "eval" / "karpathy_test_predictions.json").read_text()))
    assert files[0] == files[1]
    assert files[0] != files[2] and sum(row["answer"] != "" for row in files[0]) > len(files[0]) // 2


def test_every_registered_reader_has_a_kind():
    assert set(TASK_READERS.names()) <= set(READERS)
    assert task_kind("my_plugin_captions") == "caption" and task_kind("my_plugin_qa") == "qa"
