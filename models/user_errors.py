"""Errors that are the user's to fix (a config key, a path, a file's content, a launch), not bugs.

The command-line entry points print these as one `error: ...` line and exit with status 2; any other
exception is a bug and keeps its traceback. Each class also derives from the built-in type code and
tests already expect (ValueError, FileNotFoundError, KeyError), so `except ValueError` still catches it.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """' (did you mean `<prefix>x`?)' for the closest known name x, or '' when none is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean `{prefix}{match[0]}`?)" if match else ""
