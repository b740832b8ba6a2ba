"""The command line as users meet it: --help of every command, user errors as one `error:` line with exit
status 2 (checked before anything slow is built), tracebacks only with --debug and for real bugs."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from epalm.common.command_line import DEBUG_ENV, run_command
from epalm.common.config_io import ConfigError, to_dict
from epalm.common.errors import UserError
from epalm.models.config import ModelConfig
import epalm.training.run as entry

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = "configs/demo/image_vqa.yaml"

# Every command of the project: the module whose `argument_parser()` builds its parser, and its `main`.
COMMANDS = {
    "main.py": ("epalm.training.run_config", "epalm.training.run"),
    "epalm.dataset.metrics.score": ("epalm.dataset.metrics.score", "epalm.dataset.metrics.score"),
    "epalm.demo.synthetic.build": ("epalm.demo.synthetic.build", "epalm.demo.synthetic.build"),
    "epalm.demo.synthetic.build_audio": ("epalm.demo.synthetic.build_audio", "epalm.demo.synthetic.build_audio"),
    "epalm.demo.synthetic.build_video": ("epalm.demo.synthetic.build_video", "epalm.demo.synthetic.build_video"),
    "epalm.demo": ("epalm.demo.runner", "epalm.demo.runner"),
    "epalm.studies.ablation": ("epalm.studies.ablation", "epalm.studies.ablation"),
    "epalm.studies.probes": ("epalm.studies.probes.command", "epalm.studies.probes.command"),
    "epalm.demo.pretraining": ("epalm.demo.pretraining.__main__", "epalm.demo.pretraining.__main__"),
    "epalm.demo.pretraining.lm_sizes": ("epalm.demo.pretraining.lm_sizes", "epalm.demo.pretraining.lm_sizes"),
    "epalm.training.count_parameters": ("epalm.training.count_parameters", "epalm.training.count_parameters"),
    "epalm.training.check_data": ("epalm.training.check_data", "epalm.training.check_data"),
    "epalm.training.memory_estimate": ("epalm.training.memory_estimate", "epalm.training.memory_estimate"),
    "benchmarks.run": ("benchmarks.run", "benchmarks.run"),
    "benchmarks.ideas": ("benchmarks.ideas", "benchmarks.ideas"),
    "benchmarks.op_counts": ("benchmarks.op_counts", "benchmarks.op_counts"),
    "benchmarks.gpu_smoke": ("benchmarks.gpu_smoke", "benchmarks.gpu_smoke"),
    "epalm.demo.synthetic.build_sensor": ("epalm.demo.synthetic.build_sensor", "epalm.demo.synthetic.build_sensor"),
    "epalm.studies.fewshot": ("epalm.studies.fewshot.__main__", "epalm.studies.fewshot.__main__"),
    "epalm.inference.chat": ("epalm.inference.chat", "epalm.inference.chat"),  # also `main.py chat` ...
    "epalm.inference.predict": ("epalm.inference.predict", "epalm.inference.predict"),
    "epalm.inference.export": ("epalm.inference.export", "epalm.inference.export"),
    "epalm.inference.serve": ("epalm.inference.serve", "epalm.inference.serve"),
}


def module_name(path: str) -> str:
    """The module a file of the repository is imported as: the library's folders under `epalm.` (setup.py)."""
    name = path.removesuffix(".py").removesuffix("/__main__").replace("/", ".")
    return name if name.startswith("benchmarks.") else f"epalm.{name}"


def _launch(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The commands of the issue's table, as a user types them, started together (each pays the imports)."""
    tmp = tmp_path_factory.mktemp("typed")
    commands = {
        "help": ["main.py", "--help"],
        "key": ["main.py", "--config", DEMO_CONFIG, "--set", "train.max_stepz=3"],
        "data_dir": ["main.py", "--config", DEMO_CONFIG, "--data_dir", str(tmp / "nonexistent")],
        "checkpoint": ["main.py", "--config", DEMO_CONFIG, "--data_dir", str(tmp), "--output_dir", str(tmp / "run"),
                       "--evaluate", "--checkpoint", "/nonexistent.pth"],
        "debug": ["main.py", "--config", DEMO_CONFIG, "--set", "train.max_stepz=3", "--debug"],
        "two_processes": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "main.py", "--config", DEMO_CONFIG,
                          "--output_dir", str(tmp / "ddp"), "--set", "train.max_stepz=3"],
    }
    running = {name: _launch(*args, env={"ACCELERATE_USE_CPU": "true"}) for name, args in commands.items()}
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=900)
        results[name] = subprocess.CompletedProcess(commands[name], process.returncode, out, err)
    results["tmp"] = tmp
    return results


def _assert_one_error_line(stderr: str, *expected: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for text in expected:
        assert text in errors[0], errors[0]


def _options(parser: argparse.ArgumentParser):
    """(parser, action) for every option and positional of the parser and of its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        if not isinstance(action, argparse._HelpAction):
            yield parser, action


# --- --help ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_every_command_has_a_one_line_help(command):
    parser = importlib.import_module(COMMANDS[command][0]).argument_parser()
    assert isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class,
                                                                    argparse.RawDescriptionHelpFormatter)
    assert "examples:" in parser.epilog and "exit status" in parser.epilog
    flags = set()
    for owner, action in _options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {owner.prog}: {name} has no help"
        assert "\n" not in action.help and len(action.help % vars(action)) <= 80, f"{command}: {name}"
        flags.update(action.option_strings)
    assert "--debug" in flags


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_exits_0_with_the_examples(command, capsys):
    main = importlib.import_module(COMMANDS[command][1]).main
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "examples:" in out and "exit status: 0 done; 2" in out and "--debug" in out


def test_every_entry_point_is_listed_and_ends_through_run_command():
    """A command added later (any `if __name__ == "__main__"`) must be in COMMANDS and print user errors as one line."""
    found = {}
    for path in REPO.glob("**/*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("tests", "build", "outputs", "data") or any(p.startswith(".") for p in relative.parts):
            continue  # tests, build outputs, virtual environments
        text = path.read_text()
        if 'if __name__ == "__main__":' in text:
            found[str(relative)] = text.split('if __name__ == "__main__":', 1)[1]
    modules = {"main.py" if name == "main.py" else module_name(name) for name in found}
    assert modules == set(COMMANDS)
    for name, block in found.items():
        assert "run_command(" in block, name


def test_main_py_help_as_a_subprocess(launched):
    done = launched["help"]
    assert done.returncode == 0, done.stderr
    for flag in ("--config", "--output_dir", "--data_dir", "--text_model", "--vision_model", "--checkpoint", "--seed",
                 "--evaluate", "--resume", "--save_best", "--set", "--debug"):
        assert re.search(rf"^  {flag}\b.*\S+", done.stdout, re.M), flag  # listed with its help on the same line
    assert "--evaluate --checkpoint outputs/vqa/best" in done.stdout  # a run's best/
    assert "--checkpoint ePALM_pt_L_vqa.pth" in done.stdout  # a released .pth


# --- the table, as a user types it ---------------------------------------------------------------
def test_misspelled_key_is_one_line_with_a_suggestion(launched):
    done = launched["key"]
    assert done.returncode == 2
    _assert_one_error_line(done.stderr, "unknown config key(s) ['train.max_stepz']", "did you mean `train.max_steps`?")


def test_missing_data_dir_is_one_line(launched):
    done = launched["data_dir"]
    assert done.returncode == 2
    _assert_one_error_line(done.stderr, f"data_dir {launched['tmp'] / 'nonexistent'}: no such folder")


def test_missing_checkpoint_is_one_line(launched):
    done = launched["checkpoint"]
    assert done.returncode == 2
    _assert_one_error_line(done.stderr, "--checkpoint /nonexistent.pth: no such file or folder")
    assert not (launched["tmp"] / "run").exists()  # nothing was started


def test_debug_keeps_the_traceback(launched):
    done = launched["debug"]
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError: unknown config key(s) ['train.max_stepz']" in done.stderr


def test_a_two_process_launch_prints_the_error_once(launched):
    done = launched["two_processes"]
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did you mean `train.max_steps`?" in errors[0], done.stderr
    assert re.search(r"exitcode\s*:\s*2", done.stderr)  # torchrun's own report: the processes ended with status 2


def test_a_real_bug_keeps_its_traceback(monkeypatch):
    """A plain ValueError (not a epalm.common.errors class) is a bug: it leaves run_command, so Python prints its
    traceback and exits with status 1."""
    def broken(cfg):
        raise ValueError("an internal invariant broke")

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(entry, "preflight", broken)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        run_command(entry.main, ["--config", DEMO_CONFIG])


# --- more user errors, in process (the same run_command as main.py) ----------------------------------------
@pytest.fixture
def run_in_repo(monkeypatch, tmp_path, capsys):
    """run(argv) -> (exit status, the error line): main.py's path, nothing heavy may be reached."""
    monkeypatch.chdir(REPO)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a model was built or data read before the cheap checks failed")

    monkeypatch.setattr(entry, "build_model", must_not_run)
    monkeypatch.setattr(entry, "make_accelerator", must_not_run)

    def run(*argv: str) -> tuple[int, str]:
        status = run_command(entry.main, ["--config", DEMO_CONFIG, "--output_dir", str(tmp_path / "run"), *argv])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        return status, "\n".join(line for line in err.splitlines() if line.startswith(("error:", "  ")))

    return run


@pytest.mark.parametrize("argv, expected", [
    (["--set", "model.injection_mode=casual"], "model.injection_mode 'casual' is not one of causal, epalm "
                                               "(did you mean `causal`?)"),
    (["--set", "train.loss_tokens=answers"], "train.loss_tokens 'answers' is not one of answer, all (did you mean "
                                             "`answer`?)"),
    (["--set", "model.prompt_init=vocabulary"], "(did you mean `vocab`?)"),
    (["--set", "task.reader=vqa_v3"], "task.reader: unknown task reader 'vqa_v3' (did you mean `vqa_v2`?)"),
    (["--set", "task.reader_options={human_answer: true}"], "reader 'vqa_v2' has no option 'human_answer' "
                                                            "(did you mean `human_answers`?)"),
    (["--set", "task.metric=exact"], "task.metric 'exact' is not one of vqa, exact_match, caption"),
    (["--vision_model", "vit_bse_patch16_224"], "not a timm model (did you mean `vit_base_patch16_224`?)"),
    (["--text_model", "models/demo_weights/opt-dem"], "model.lm.name models/demo_weights/opt-dem: no such file or "
                                                      "folder (did you mean `models/demo_weights/opt-demo`?)"),
    (["--config", "configs/demo/image_vqaa.yaml"], "did you mean `configs/demo/image_vqa.yaml`?"),
    (["--set", "train.lr=["], "--set train.lr=[: the value is not valid YAML"),
    (["--set", "model.encoders.image.dtype=bf16"], "encoder dtype must be one of"),
])
def test_config_values_fail_with_a_suggestion(run_in_repo, tmp_path, argv, expected):
    status, message = run_in_repo("--data_dir", str(tmp_path), *argv)
    assert status == 2 and expected in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid on a GPU machine")
def test_fp16_on_a_cpu_machine_is_a_launch_error(run_in_repo, tmp_path):
    status, message = run_in_repo("--data_dir", str(tmp_path), "--set", "mixed_precision=fp16")
    assert status == 2 and "mixed_precision fp16 needs a GPU" in message


def test_a_bad_yaml_file_names_file_and_line(run_in_repo, tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  lr: [1e-3\n")
    status, message = run_in_repo("--data_dir", str(tmp_path), "--config", str(tmp_path / "bad.yaml"))
    assert status == 2 and f"{tmp_path / 'bad.yaml'}: not valid YAML" in message and "(line 3, column 1)" in message


def test_splits_are_read_before_the_model_and_name_the_file(run_in_repo, tmp_path):
    status, message = run_in_repo("--data_dir", str(tmp_path), "--evaluate", "--set", "task.test_split=karpathy_tset")
    assert status == 2 and "vqa/karpathy_tset.json: annotation file of split 'karpathy_tset' not found " \
                           "(did you mean `karpathy_test`?)" in message
    (tmp_path / "vqa").mkdir()
    (tmp_path / "vqa" / "karpathy_test.json").write_text(json.dumps([{"question_id": 7, "sent": "what?"}]))
    status, message = run_in_repo("--data_dir", str(tmp_path), "--evaluate")
    assert status == 2 and "karpathy_test.json: entry 0 (question_id=7): missing field 'img_id'" in message


# --- --checkpoint: checked before anything is built ---------------------------------------------------------
def _checkpoint_folder(folder: Path, **model) -> Path:
    folder.mkdir(parents=True)
    save_file({"connector.0.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    cfg = yaml.safe_load((REPO / "configs/demo/base.yaml").read_text())["model"]
    config = to_dict(ModelConfig(**{**{k: v for k, v in cfg.items() if k != "lm"}, **model}))
    (folder / "epalm_config.json").write_text(json.dumps({"format_version": 1, "model": config}))
    return folder


def test_checkpoint_problems_are_named_before_the_model_is_built(run_in_repo, tmp_path):
    def fails(checkpoint: Path, expected: str) -> None:
        status, message = run_in_repo("--data_dir", str(tmp_path), "--evaluate", "--checkpoint", str(checkpoint))
        assert status == 2 and expected in message, message

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    fails(text, f"{text}: cannot read as a reference eP-ALM checkpoint with weights_only=True")
    timm_like = tmp_path / "vit.pth"
    torch.save({"state_dict": {"blocks.0.weight": torch.zeros(1)}}, timm_like)
    fails(timm_like, "expected a dict with a 'model' dict of tensors (the reference's format), found a dict with "
                     "keys ['state_dict']")
    other = tmp_path / "other.pth"
    torch.save({"model": {"visual_encoder.blocks.0.weight": torch.zeros(1)}}, other)
    fails(other, "not an eP-ALM checkpoint: it holds tensors other than the connection and the soft prompt")

    run = tmp_path / "run_folder"
    best = _checkpoint_folder(run / "best")
    fails(run, f"--checkpoint {run}: a folder without model.safetensors (did you mean `{best}`?)")
    fails(best / "model.safetensors", "give the folder that holds it")
    (best / "epalm_config.json").unlink()
    fails(best, "no epalm_config.json beside model.safetensors")

    other_prompt = _checkpoint_folder(tmp_path / "prompt5", prompt_len=5)
    fails(other_prompt, "model.prompt_len: checkpoint 5, configured 8")


def test_a_matching_checkpoint_folder_passes_the_checks(monkeypatch, tmp_path):
    from epalm.training.preflight import check_checkpoint
    from epalm.training.run_config import resolve_config

    monkeypatch.chdir(REPO)
    cfg = resolve_config(["--config", DEMO_CONFIG])
    check_checkpoint(str(_checkpoint_folder(tmp_path / "best")), cfg.model)  # the layout matches: no error


# --- the rules of run_command ---------------------------------------------------------------------------------
def test_debug_environment_variable_and_other_ranks(monkeypatch, capsys):
    def bad_key(argv):
        raise ConfigError("unknown config key(s) ['x']\n  detail line")

    assert run_command(bad_key, []) == 2
    assert capsys.readouterr().err == "error: unknown config key(s) ['x']\n  detail line\n"
    monkeypatch.setenv("RANK", "1")  # another process of a launch: same status, nothing printed
    assert run_command(bad_key, []) == 2 and capsys.readouterr().err == ""
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        run_command(bad_key, [])


def test_debug_is_taken_out_of_argv_and_bugs_propagate():
    seen = []
    assert run_command(seen.append, ["--set", "a=1", "--debug"]) == 0 and seen == [["--set", "a=1"]]
    with pytest.raises(ZeroDivisionError):
        run_command(lambda argv: 1 / 0, [])
    with pytest.raises(UserError):
        run_command(lambda argv: (_ for _ in ()).throw(ConfigError("x")), ["--debug"])
