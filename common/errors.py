"""Errors that are the user's to fix (a config key, a path, a file's content, a launch), not bugs.

The command-line entry points print these as one `error: ...` line and exit with status 2; any other
exception is a bug and keeps its traceback. Each class also derives from the built-in type code and
tests already expect (ValueError, FileNotFoundError, KeyError), so `except ValueError` still catches it.
"""
from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator


class UserError(Exception):
    """Base of every error a user fixes by changing what they typed or the files they gave."""


class ConfigError(UserError, ValueError):
    """A configuration key or value that is unknown or invalid."""


class DataFormatError(UserError, ValueError):
    """A data, annotation or checkpoint file whose content is not what was expected."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named by the user (or required by a data layout) that does not exist."""


class UnknownNameError(UserError, KeyError):
    """A name looked up in a registry (task reader, encoder, connector, modality ...) that is not there."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class LaunchError(UserError, RuntimeError):
    """A launch that does not match the machine (process counts, devices, precision)."""


class StoppedToResume(Exception):
    """A run that stopped on purpose with its resumable state saved (a preemption signal: training/preemption.py).
    Not an error: the command line exits with `exit_status` (sysexits.h's EX_TEMPFAIL, "try again later")."""

    exit_status = 75


@contextlib.contextmanager
def loading(what: str, name: str) -> Iterator[None]:
    """A library's OSError while loading `name` (a hub id or folder that is not there, no connection to the hub)
    becomes a MissingFileError naming what was being loaded, with the library's own message."""
    try:
        yield
    except UserError:
        raise
    except OSError as error:
        raise MissingFileError(f"{what} '{name}': {error}") from error


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """' (did you mean `<prefix>x`?)' for the closest known name x, or '' when none is close."""
    others = [str(k) for k in known if str(k) != str(name)]
    match = difflib.get_close_matches(str(name), others, n=1, cutoff=0.6)
    return f" (did you mean `{prefix}{match[0]}`?)" if match else ""


def check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    """ConfigError unless `value` is one of `choices`: "key 'x' is not one of a, b (did you mean `a`?)"."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key} {value!r} is not one of {', '.join(choices)}{did_you_mean(str(value), choices)}")


class MediaDecodeError(Exception):
    """A media file is missing, unreadable or corrupt (not a user error: the data pipeline reports it once, skips
    the item and counts it)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
