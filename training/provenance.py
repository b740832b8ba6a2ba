"""What produced a result: the resolved config, package versions and the git commit."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from epalm.common.config_io import to_dict

PACKAGES = ("torch", "transformers", "accelerate", "timm", "pycocoevalcap", "av", "librosa", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit.stdout.strip() + ("+uncommitted-changes" if dirty.stdout.strip() else "")


def provenance(cfg) -> dict[str, Any]:
    return {"config": to_dict(cfg), "versions": package_versions(), "git_commit": git_commit()}
