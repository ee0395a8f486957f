"""Generic strict conversion between plain dicts (YAML) and typed dataclasses.

``from_dict(cls, data, where)`` builds a dataclass tree, rejecting unknown keys and wrong types with
one :class:`SegDeepError` naming the dotted key. ``apply_overrides(data, ["a.b=1"])`` edits a plain
dict with ``key.sub=value`` strings (values parsed as YAML scalars/lists, never executed).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

import yaml

from SegDeepLib.errors import SegDeepError

_NONE = type(None)


def _fail(where: str, problem: str) -> SegDeepError:
    return SegDeepError(f"config key '{where}': {problem}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check/convert ``value`` against annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and _NONE in args:
            return None
        for option in (a for a in args if a is not _NONE):
            try:
                return _convert(option, value, where)
            except SegDeepError:
                continue
        raise _fail(where, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise _fail(where, f"must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(where, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, f"expected a mapping, got {value!r}")
        return {str(k): _convert(args[1] if args else Any, v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types raise)."""
    label = where or "<root>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(label, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(names)}"
        raise _fail(_join(where, key), f"unknown key{hint}")
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise _fail(label, f"missing required value ({exc})") from None


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (YAML/JSON-able)."""
    return dataclasses.asdict(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=1e-3"`` -> (["optimizer", "lr"], 0.001). Values are YAML scalars/lists."""
    if "=" not in text:
        raise SegDeepError(f"override '{text}': use key.sub=value (e.g. optimizer.lr=1e-3)")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise SegDeepError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SegDeepError(f"override '{text}': cannot parse the value ({exc})") from None
    return path, fix_yaml_floats(value)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.sub=value`` applied (creating mappings as needed)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SegDeepError(f"override '{text}': '{part}' is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def fix_yaml_floats(data: Any) -> Any:
    """Turn YAML 1.1 strings such as ``1e-3`` (no dot) into floats, recursively."""
    if isinstance(data, dict):
        return {k: fix_yaml_floats(v) for k, v in data.items()}
    if isinstance(data, list):
        return [fix_yaml_floats(v) for v in data]
    if isinstance(data, str):
        try:
            return float(data) if _looks_numeric(data) else data
        except ValueError:
            return data
    return data


def _looks_numeric(text: str) -> bool:
    text = text.strip().lower()
    return bool(text) and text[0] in "+-.0123456789" and "e" in text and text[-1].isdigit()
