"""Installing the project beside a user's torch keeps that torch: setup.py asks for floors, not exact pins.

A real install of another torch is gigabytes (done once by hand: docs/installation.md), so pip's resolver is asked
instead (`pip install --dry-run --no-index`): in a fresh virtual environment that sees this interpreter's packages,
with a torch and a torchvision of other versions in front of them, what setup.py asks for (`.[test]`) must need
nothing installed. The same question with setup.py's old exact pins has no answer: pip would have to replace the
user's torch.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
USERS_TORCH = {"torch": ("2.9.1", []), "torchvision": ("0.24.1", ["torch==2.9.1"])}  # a pair pip keeps together
pytestmark = pytest.mark.skipif(torch.__version__.startswith("2.9.1"), reason="the stand-in torch must differ")


def _environment_with_another_torch(folder: Path) -> Path:
    """A venv whose site-packages holds the user's torch and torchvision (their metadata), then this
    interpreter's installed packages (a .pth): its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), *(p for p in sys.path if p.endswith("site-packages"))])
    (site / "this_interpreter.pth").write_text("\n".join(ours) + "\n")
    for name, (version, requires) in USERS_TORCH.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        (info / "RECORD").write_text("")
    return python


def _declared(setup_text: str) -> list[str]:
    """What `pip install -e ".[test]"` asks for: install_requires and the test extra, read by running setup.py
    with setuptools' `setup` replaced (nothing is built)."""
    import os

    import setuptools

    captured: dict = {}
    real, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(REPO)  # setup.py lists the package folders
        exec(compile(setup_text, "setup.py", "exec"), {"__name__": "__main__"})
    finally:
        setuptools.setup = real
        os.chdir(cwd)
    return [*captured["install_requires"], *captured["extras_require"]["test"]]


def _dry_run(python: Path, requirements: list[str], report: Path) -> subprocess.CompletedProcess:
    """What pip would install there for `requirements`, from what is installed only (no index)."""
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--no-index",
                           "--report", str(report), *requirements], capture_output=True, text=True, timeout=300)


def test_installing_the_project_beside_another_torch_keeps_that_torch(tmp_path):
    python = _environment_with_another_torch(tmp_path / "venv")
    requirements = _declared((REPO / "setup.py").read_text())
    assert {"torch>=2.6", "torchvision>=0.21"} <= set(requirements), requirements
    done = _dry_run(python, requirements, tmp_path / "report.json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((tmp_path / "report.json").read_text())["install"] == []  # torch 2.9.1 stays; nothing else

    # setup.py as it was: pip would have to replace the user's torch (here, with no index, it cannot resolve)
    pinned = re.sub(r'"torchvision>=[^"]*"', '"torchvision==0.29.1"',
                    re.sub(r'"torch>=[^"]*"', '"torch==2.14.1"', (REPO / "setup.py").read_text()))
    assert "torch==2.14.1" in _declared(pinned)
    refused = _dry_run(python, _declared(pinned), tmp_path / "pinned.json")
    assert refused.returncode != 0 and "torch==2.14.1" in refused.stdout + refused.stderr
