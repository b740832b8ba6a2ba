"""A free TCP port on this host: each launch (a training job's rendezvous, the web page, a test's) takes its own, so
that two on one host never meet on a shared default such as accelerate's 29500."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system's pick); another process may still take it before it is used."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
