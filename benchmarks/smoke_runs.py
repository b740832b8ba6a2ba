"""What the smoke command's checks share: a row of the table, running `main.py` (alone or under a launcher) with its
output in a log file, the synthetic data, a free port."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "demo" / "image_vqa.yaml"
PASS, FAIL, MET, NOT_MET = "pass", "FAIL", "met", "NOT MET"


@dataclass
class Row:
    check: str
    status: str  # pass, FAIL, met, NOT MET, NOT MET (information), skipped: <why>
    detail: str = ""
    seconds: float = 0.0


def skipped(check: str, why: str, detail: str = "") -> Row:
    return Row(check, f"skipped: {why}", detail)


def run_logged(command: list[str], log: Path, env: dict | None = None, timeout: float = 900) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        try:
            done = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            handle.write(f"\ntimed out after {timeout} s\n")
            return 124
    return done.returncode


def main_run(out: Path, name: str, argv: list[str], launcher: list[str] | None = None,
             env: dict | None = None) -> tuple[int, Path]:
    """`python main.py ARGV` (or under `launcher`), its output in OUT/logs/NAME.log: (exit status, log)."""
    log = out / "logs" / f"{name}.log"
    command = (launcher or [sys.executable]) + ["main.py", *argv]
    return run_logged(command, log, env={"TOKENIZERS_PARALLELISM": "false", **(env or {})}), log


def timed(check: str, body: Callable[[], list[Row]]) -> list[Row]:
    start = time.time()
    try:
        rows = body()
    except Exception as error:  # one broken check must not hide the others' results
        rows = [Row(check, FAIL, f"{type(error).__name__}: {error}")]
    rows[0].seconds = round(time.time() - start, 1)
    return rows


def tail(log: Path, lines: int = 3) -> str:
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return " | ".join(line.strip()[-160:] for line in text[-lines:])


def build_data(folder: Path, spec: dict) -> Path:
    from epalm.demo.synthetic.build import build_image_dataset

    build_image_dataset(folder, seed=0, progress=False, **spec)
    return folder


def read_json(path: Path):
    return json.loads(path.read_text())
