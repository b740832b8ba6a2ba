"""Using a trained bridge: loading a run or checkpoint, the Python API (`from epalm.inference import Bridge`),
chat, predict, export, serve, nearest vocabulary tokens."""
from __future__ import annotations

from typing import Any

__all__ = ["Answer", "Bridge"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import epalm.inference.<module>` stays as light as that module.
    if name in __all__:
        from epalm.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'epalm.inference' has no attribute {name!r}")
