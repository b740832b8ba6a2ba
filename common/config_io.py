"""Strict conversion between nested dataclass configs and plain dicts (YAML, JSON, command line).

An unknown or misspelled key is an error that names it with its full dotted path; the reference
silently ignores a dozen keys, and a silently ignored key costs a GPU-day.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml

from epalm.common.errors import ConfigError, did_you_mean

__all__ = ["ConfigError", "from_dict", "to_dict", "set_dotted", "parse_override", "merge", "yaml_problem"]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Parse `value` as `tp`; YAML reads `2e-4` as a string and the command line gives only strings."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{path}: {value!r} fits none of {tp}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin is dict and _is_dataclass_type(typing.get_args(tp)[1]):  # e.g. dict[str, EncoderConfig]
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of names to sections, got {value!r}")
        return {key: _coerce(item, typing.get_args(tp)[1], f"{path}.{key}") for key, item in value.items()}
    if tp is Any or origin in (dict, list, tuple) or tp in (dict, list):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value) if tp is float else value if isinstance(value, int) else int(str(value))
        except ValueError:
            raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}") from None
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, values: dict[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{path}." if path else ""
        hint = did_you_mean(unknown[0], known, prefix=where)
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}{hint}; known under "
                          f"'{path or 'top'}': {sorted(known)}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or 'config'}: {error}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    """`a.b.c=value` into nested dicts (checked against the dataclasses later, by from_dict)."""
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def yaml_problem(error: yaml.YAMLError) -> str:
    """'expected ',' or ']' (line 3, column 1)': PyYAML's message without its multi-line excerpt."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or error}{where}"


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=1e-3` -> ("train.lr", 0.001); the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: not of the form key.path=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text}: the value is not valid YAML: {yaml_problem(error)}") from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
