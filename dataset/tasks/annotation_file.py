"""Load annotation JSON and check its fields, failing with the file, the entry and what was expected."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from epalm.common.errors import DataFormatError, MissingFileError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing file or bad JSON raises an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from error


def entry_list(data: Any, path: str | Path, key: str | None = None) -> list:
    """The list of entries of a file: the top-level list, or the list under `key` of a top-level object."""
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise DataFormatError(f"{path}: expected a JSON object with a '{key}' list")
        data = data[key]
        where = f"{path}: '{key}'"
    else:
        where = f"{path}: top level"
    if not isinstance(data, list):
        raise DataFormatError(f"{where} must be a list of entries, got {type(data).__name__}")
    return data


def location(path: str | Path, index: int, entry: Any, id_key: str | None = None) -> str:
    """'file: entry 3 (question_id=42)': where an error message points."""
    where = f"{path}: entry {index}"
    if id_key and isinstance(entry, dict) and id_key in entry:
        where += f" ({id_key}={entry[id_key]!r})"
    return where


def require(entry: Any, name: str, expected: type | tuple[type, ...], where: str) -> Any:
    """Return `entry[name]`, or raise DataFormatError saying which field is missing or of the wrong type."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    wanted = " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in expected)
    if not isinstance(entry, dict):
        raise DataFormatError(f"{where}: expected an object with field '{name}', got {type(entry).__name__}")
    if name not in entry:
        raise DataFormatError(f"{where}: missing field '{name}' (expected {wanted})")
    value = entry[name]
    # bool is a subclass of int in Python, but true/false is never a valid id or score here.
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise DataFormatError(f"{where}: field '{name}' must be {wanted}, got {type(value).__name__} {value!r:.60}")
    return value
