"""`predict --input --output`: a folder of media or a JSONL of prompts, one line per row, resumable; and the chat's
streamed replies (Ctrl-C stops a reply, not the chat)."""
from __future__ import annotations

import io
import json
import shutil

import pytest

from epalm.common.command_line import run_command
from epalm.dataset.tasks import TASK_READERS
from epalm.inference import Bridge, chat, predict
from epalm.inference.generation import GenerationSettings
from epalm.training import run
from tests.tiny_run import build_tiny_setup, tiny_config

SAMPLED = ["--do_sample", "--top_k", "0", "--seed", "3", "--max_new_tokens", "5"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    setup = build_tiny_setup(root)
    config = tiny_config(setup, root / "c.yaml", task_keys={"val_split": "", "test_split": ""}, max_steps=2)
    run.main(["--config", str(config), "--output_dir", str(root / "run")])
    split = TASK_READERS.build("vqa_v2", setup["data"], "karpathy_test")
    folder = root / "photos"
    (folder / "more").mkdir(parents=True)
    images = [split.media_path(sample) for sample in split.samples[:3]]
    for target, image in zip(["a.jpg", "b.jpg", "more/c.jpg"], images):
        shutil.copy(image, folder / target)
    (folder / "broken.png").write_bytes(b"not a picture")
    (folder / "notes.txt").write_text("not a medium: left out by extension")
    return {"root": root, "run": root / "run", "folder": folder, "bridge": Bridge.load(root / "run", device="cpu"),
            "images": images, "questions": [sample.prompt for sample in split.samples[:3]]}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_of_media_gives_one_line_per_file_and_resumes(tiny):
    out = tiny["root"] / "answers" / "folder.jsonl"
    argv = ["--checkpoint", str(tiny["run"]), "--input", str(tiny["folder"]), "--output", str(out),
            "--prompt", "what colour are the shapes?", "--batch_size", "2", *SAMPLED]
    counts = predict.main(argv, stdout=io.StringIO())
    assert counts == {"rows": 4, "skipped": 0, "answered": 3, "failed": 1}
    rows = _lines(out)
    assert [row["id"] for row in rows] == ["a.jpg", "b.jpg", "broken.png", "more/c.jpg"]  # input order
    assert "cannot read" in rows[2]["error"] and "answer" not in rows[2]
    bridge = tiny["bridge"]
    for row in (rows[0], rows[1], rows[3]):
        expected = bridge.ask("what colour are the shapes?", images=row["media"][0]["path"], do_sample=True,
                              top_k=0, seed=3, max_new_tokens=5)
        assert row["answer"] == expected and row["layout"] == "one-instance"
    # a crash cut the last line: the rerun drops it and the error row, and asks those two again
    text = out.read_text()
    out.write_text(text[: text.rindex('"answer"')])
    counts = predict.main(argv, stdout=io.StringIO())
    assert counts == {"rows": 4, "skipped": 2, "answered": 1, "failed": 1}
    rows = _lines(out)
    assert sorted(row["id"] for row in rows) == ["a.jpg", "b.jpg", "broken.png", "more/c.jpg"]
    assert predict.main(argv, stdout=io.StringIO())["skipped"] == 3  # only the error row is asked again


def test_a_jsonl_of_prompts_and_conversations(tiny):
    a, b = (str(path) for path in tiny["images"][:2])
    rows = [{"id": "q1", "prompt": tiny["questions"][0], "images": [a]},
            {"prompt": "is <image> as <image>?"},  # placeholders without files: the row's error
            {"id": "conv", "messages": [{"role": "user", "content": "is <image> the same as <image>?"}],
             "images": [a, b]},
            {"id": "cap", "images": a},
            {"id": "bad", "prompt": "x", "colour": "red"}]
    source = tiny["root"] / "prompts.jsonl"
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n{not json\n")
    out = tiny["root"] / "answers" / "prompts.jsonl"
    counts = predict.main(["--checkpoint", str(tiny["run"]), "--input", str(source), "--output", str(out),
                           *SAMPLED], stdout=io.StringIO())
    assert counts["answered"] == 3 and counts["failed"] == 3
    lines = {str(row["id"]): row for row in _lines(out)}
    assert set(lines) == {"q1", "2", "conv", "cap", "bad", "6"}  # ids default to the line number
    bridge = tiny["bridge"]
    settings = dict(do_sample=True, top_k=0, seed=3, max_new_tokens=5)
    assert lines["q1"]["answer"] == bridge.ask(tiny["questions"][0], images=a, **settings)
    assert lines["conv"]["answer"] == bridge.ask(messages=rows[2]["messages"], images=[a, b], **settings)
    assert lines["conv"]["layout"] == "chat" and lines["cap"]["prompt"] == ""
    assert "needs its file" in lines["2"]["error"] and "unknown field" in lines["bad"]["error"]
    assert "not valid JSON" in lines["6"]["error"]


@pytest.mark.parametrize("argv, message", [
    (["--input", "{root}/photos"], "--input and --output go together"),
    (["--input", "{root}/nowhere", "--output", "{root}/o.jsonl"], "--input {root}/nowhere: no such file"),
    (["--input", "{root}/photos", "--output", "{root}/o.jsonl", "--modality", "video"], "this model reads image"),
    (["--input", "{root}/photos", "--output", "{root}/o.jsonl", "--json"], "--media and --json are for one prompt"),
])
def test_batch_errors_are_one_line(tiny, capsys, argv, message):
    argv = [a.format(root=tiny["root"]) for a in argv]
    assert run_command(predict.main, ["--checkpoint", str(tiny["run"]), *argv]) == 2
    assert message.format(root=tiny["root"]) in capsys.readouterr().err


def test_the_chat_streams_replies_and_ctrl_c_stops_one(tiny):
    loaded = tiny["bridge"].loaded
    image = str(tiny["images"][0])
    settings = GenerationSettings.from_run(loaded.cfg, num_beams=1, max_new_tokens=5, do_sample=True, top_k=0,
                                           seed=4)
    script = f"<image:{image}> what colour are the shapes?\nhow many?\n"
    transcripts = []
    for stream in (True, False):
        out = io.StringIO()
        session = chat.ChatSession(loaded, settings, tiny["root"], topk=3, vqa=None, out=out, stream=stream)
        chat.repl(session, chat.line_reader(io.StringIO(script), out))
        transcripts.append(out.getvalue())
    assert transcripts[0] == transcripts[1]  # the streamed replies print as the whole ones do
    assert transcripts[0].count("Model: ") == 2

    class Interrupted:  # a reply interrupted by Ctrl-C after its first piece
        pieces, stopped = ["half"], False

        def __iter__(self):
            yield "half"
            raise KeyboardInterrupt

        def stop(self):
            self.stopped = True

    out = io.StringIO()
    session = chat.ChatSession(loaded, settings, tiny["root"], topk=3, vqa=None, out=out, stream=True)
    interrupted = Interrupted()
    real = session.conversation.stream
    session.conversation.stream = lambda prepared: interrupted
    session.handle(f"<image:{image}> what colour?")
    assert interrupted.stopped and "Model: half [stopped: this turn is not kept]" in out.getvalue()
    assert session.conversation.turns == []
    session.conversation.stream = real
    session.handle("and now?")  # the chat goes on
    assert out.getvalue().count("Model: ") == 2 and len(session.conversation.turns) == 1
    with pytest.raises(ValueError, match="num_beams 1 only"):
        chat.ChatSession(loaded, GenerationSettings(num_beams=2), tiny["root"], 3, None, out, stream=True)
