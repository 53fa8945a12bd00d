"""Typed configuration: frozen dataclasses, strict dict/YAML loading, and dicts for checkpoints.

Each concern defines its own frozen dataclass next to the code that uses it (the model's in
``ecgmae.models.config``, preprocessing in ``ecgmae.data.signal``, training in ``ecgmae.engine``);
this module holds the machinery they share, so every config rejects unknown keys the same way and
round-trips through ``to_dict`` / ``from_dict`` into checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ecgmae.errors import ECGMAEError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ECGMAEError, ValueError):
    """A configuration value or key is wrong; the message says which and where. An :class:`ECGMAEError` like
    every error a user can act on (and a ``ValueError``, as it always was)."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data dict of a (possibly nested) config dataclass: tuples become lists, JSON-safe."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        out[f.name] = _plain(getattr(cfg, f.name))
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build ``cls`` from a dict, rejecting unknown keys and converting lists to tuples.

    Args:
        cls: a dataclass type.
        data: keys are field names; missing keys take the field defaults.
        where: named in error messages (a file path or a section name).

    Raises:
        ConfigError: on unknown keys, missing required keys, or a nested value of the wrong kind.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; allowed: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints.get(name, Any), value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        items = typing.get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_coerce(items[0], v, where) for v in value)
        if len(items) == len(value):
            return tuple(_coerce(a, v, where) for a, v in zip(items, value, strict=True))
        return tuple(value)
    if tp is int:
        return _integer(value, where)
    if tp is float:
        return _number(value, where)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # YAML reads `devices: 2` or `precision: 32` as numbers
    if tp is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _integer(value: Any, where: str) -> int:
    """An integer config value; whole floats (``64.0``) and numeric strings are accepted, nothing else."""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _number(value: Any, where: str) -> float:
    """A real config value (not NaN); YAML 1.1 reads ``5e-4`` as a string, so numeric strings are accepted."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def replace(cfg: T, where: str = "overrides", **changes: Any) -> T:
    """``dataclasses.replace`` with the same unknown-key check as :func:`from_dict`."""
    merged = to_dict(cfg)
    merged.update(changes)
    return from_dict(type(cfg), merged, where)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
