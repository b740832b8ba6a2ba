"""`main.py serve`: the page's handlers as plain functions, then the page in a real browser (headless Chromium
driven by selenium): upload, ask, read the streamed answer from the page, bad uploads, and a screenshot.

The browser test runs against a model on the demo's shipped LM and ViT trained a few steps on tiny synthetic
data, or against the checkpoint EPALM_SERVE_CHECKPOINT names (with EPALM_SERVE_IMAGE, an image to ask about;
the README's screenshot: the demo's image VQA run). EPALM_SERVE_SCREENSHOT=path also saves the screenshot there.
It skips, saying why, only where Gradio, selenium, Chromium or its driver is missing (`.ci/run` installs them).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from epalm.common.ports import free_port
from epalm.dataset.tasks import TASK_READERS
from epalm.inference import Bridge, serve
from epalm.inference.serve_app import AUTO, DONE, ServeHandlers
from epalm.training import run
from tests.tiny_run import build_tiny_setup

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
QUESTION = "what colour are the shapes?"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A run on the demo's LM and ViT (a few steps on tiny data), a test image and the data it came from."""
    if os.environ.get("EPALM_SERVE_CHECKPOINT"):
        return {"run": Path(os.environ["EPALM_SERVE_CHECKPOINT"]), "image": Path(os.environ["EPALM_SERVE_IMAGE"]),
                "root": tmp_path_factory.mktemp("serve"), "data": None}
    root = tmp_path_factory.mktemp("serve")
    setup = build_tiny_setup(root)
    run.main(["--config", "configs/demo/image_vqa.yaml", "--data_dir", str(setup["data"]), "--output_dir",
              str(root / "run"), "--set", "train.max_steps=10", "--set", "train.batch_size=16",
              "--set", "train.feature_cache=false", "--set", "task.test_split="])
    split = TASK_READERS.build("vqa_v2", setup["data"], "karpathy_test")
    return {"run": root / "run", "image": split.media_path(split[0]), "root": root, "data": setup["data"]}


@pytest.fixture(scope="module")
def bridge(demo):
    return Bridge.load(demo["run"], device="cpu")


def _finish(steps):
    steps = list(steps)
    return steps, steps[-1]


def test_the_handler_streams_predicts_answer_and_reports_bad_uploads(demo, bridge):
    handlers = ServeHandlers(bridge, [], max_upload_bytes=1 << 20)
    steps, (answer, status, tokens) = _finish(handlers.answer(str(demo["image"]), None, AUTO, QUESTION, False, 1.0,
                                                              1.0, None))
    assert status == DONE and answer == bridge.ask(QUESTION, images=demo["image"])
    assert "token 0" in tokens and all(step[2] == tokens for step in steps)
    _, (sampled, status, _) = _finish(handlers.answer(str(demo["image"]), None, AUTO, QUESTION, True, 1.3, 0.9, 5))
    assert status == DONE
    assert sampled == bridge.ask(QUESTION, images=demo["image"], do_sample=True, temperature=1.3, top_p=0.9, seed=5)
    root = demo["root"]
    (root / "notes.txt").write_text("not an image at all\n")
    (root / "empty.png").write_bytes(b"")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 a cut jpeg")
    shutil.copy(demo["image"], root / "copy.jpg")
    small = ServeHandlers(bridge, [], max_upload_bytes=100)
    for handler, path, message in ((handlers, root / "notes.txt", "notes.txt is not a readable image file"),
                                   (handlers, root / "empty.png", "The uploaded file empty.png is empty."),
                                   (handlers, root / "broken.jpg", "broken.jpg is not a readable image file"),
                                   (small, root / "copy.jpg", "KB, over the 100 bytes limit"),
                                   (handlers, None, "Upload an image, video or audio file")):
        _, (answer, status, tokens) = _finish(handler.answer(str(path) if path else None, None, AUTO, QUESTION,
                                                             False, 1.0, 1.0, None))
        assert status.startswith("**Error:**") and message in status and answer == "", (path, status)


def test_a_picked_sample_is_asked_and_an_upload_replaces_it(demo, bridge):
    if demo["data"] is None:
        pytest.skip("a checkpoint given by EPALM_SERVE_CHECKPOINT: no synthetic split here")
    args = serve.argument_parser().parse_args(["--checkpoint", str(demo["run"]), "--data_dir", str(demo["data"]),
                                               "--split", "karpathy_test", "--examples", "4"])
    examples, name = serve.split_examples(bridge.loaded, args.data_dir, args.split, args.examples)
    assert name == "vqa_v2 karpathy_test" and len(examples) == 4
    handlers = ServeHandlers(bridge, examples, 1 << 20)
    path, question, preview = handlers.pick(examples[1].label, "typed")
    assert question == examples[1].prompt and preview == path == str(examples[1].path)
    assert handlers.pick(None, "typed", "shown.png") == (None, "typed", "shown.png")
    _, (answer, status, _) = _finish(handlers.answer(str(demo["image"]), path, AUTO, question, False, 1, 1, None))
    assert status == DONE and answer == bridge.ask(question, images=path)  # the pick, not the earlier upload
    assert handlers.uploaded(str(demo["image"])) == (None, str(demo["image"]))
    assert "**LM**" in serve.description(bridge.loaded) and "**trained** 10 steps" in serve.description(bridge.loaded)


# --- the real browser ----------------------------------------------------------------------------------------
def _browser_missing() -> str | None:
    for module, extra in (("gradio", "web"), ("selenium", "test")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver; .ci/run does it where apt works)"
    return None


@pytest.fixture(scope="module")
def page(demo):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="gradio-")
    args = serve.argument_parser().parse_args(["--checkpoint", str(demo["run"]), "--port", "0"])
    built, handlers = serve.build(args)
    url = serve.launch(built, "127.0.0.1", free_port(), args.max_upload_mb, [], block=False)
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='chrome-')}"):
        options.add_argument(flag)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))  # no selenium-manager lookup
    try:
        yield {"driver": driver, "url": url, "handlers": handlers}
    finally:
        driver.quit()
        built.close()


def _css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _ask(driver, url, path: Path, question: str) -> str:
    """Open the page, upload `path`, ask `question`, wait for the status line; returns it."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#ask"))
    _css(driver, "#upload input[type=file]").send_keys(str(path.resolve()))
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#upload td.filename[aria-label="{path.name}"]'))
    box = _css(driver, "#question textarea")
    box.clear()
    box.send_keys(question)
    _css(driver, "#ask").click()
    _wait(driver, lambda d: _css(d, "#status").text.strip().startswith((DONE, "Error")))
    return _css(driver, "#status").text.strip()


def test_the_page_in_a_real_browser(page, demo, bridge):
    from selenium.webdriver.common.by import By

    driver, url = page["driver"], page["url"]
    status = _ask(driver, url, demo["image"], QUESTION)
    answer = _css(driver, "#answer textarea").get_property("value")
    assert status == DONE and answer == bridge.ask(QUESTION, images=demo["image"])
    assert "token 0" in _css(driver, "#tokens").text and "trained" in _css(driver, "#model").text
    assert driver.find_elements(By.CSS_SELECTOR, "#preview img")  # the uploaded image, shown
    shot = demo["root"] / "serve.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("EPALM_SERVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["EPALM_SERVE_SCREENSHOT"])
    # bad uploads: a message in the page, and the server goes on
    root = demo["root"]
    (root / "notes.txt").write_text("not an image\n")
    (root / "empty.png").write_bytes(b"")
    assert "notes.txt is not a readable image file" in _ask(driver, url, root / "notes.txt", QUESTION)
    assert "empty.png is empty" in _ask(driver, url, root / "empty.png", QUESTION)
    big = root / "big.png"
    with open(big, "wb") as handle:  # 200 MB, sparse: nothing is written to disk
        handle.truncate(200 * 2**20)
    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#ask"))
    _css(driver, "#upload input[type=file]").send_keys(str(big))

    def toast_text(d):
        return " ".join(t.get_attribute("textContent") for t in d.find_elements(By.CSS_SELECTOR,
                                                                                  "[data-testid=toast-body]"))

    _wait(driver, lambda d: "exceed the maximum allowed size" in toast_text(d))
    assert "big.png" in toast_text(driver)
    assert _ask(driver, url, demo["image"], QUESTION) == DONE  # still serving


def test_serve_refuses_without_gradio_and_binds_locally(monkeypatch, demo):
    args = serve.argument_parser().parse_args(["--checkpoint", "x"])
    assert args.host == "127.0.0.1" and args.max_upload_mb == 50
    import builtins

    real = builtins.__import__

    def no_gradio(name, *rest, **kwargs):
        if name == "gradio":
            raise ImportError("no gradio here")
        return real(name, *rest, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    from epalm.common.command_line import run_command

    assert run_command(serve.main, ["--checkpoint", str(demo["run"])]) == 2


def test_main_py_serve_help_as_typed():
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "main.py", "serve", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0 and "--max_upload_mb" in done.stdout and "127.0.0.1" in done.stdout
