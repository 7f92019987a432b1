"""Frozen dataclass configs and their JSON round trip.

Every component has a ``@dataclass(frozen=True, kw_only=True)`` config validated in
``__post_init__``. Configs are embedded in checkpoints and store metadata as plain
JSON dicts, and rebuilt with :func:`config_from_dict`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["config_to_dict", "config_from_dict", "load_config_file", "replace"]

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) dataclass config; tuples become lists."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return config_from_dict(annotation, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args:
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(annotation):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
    return value


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config of type ``cls`` from :func:`config_to_dict` output.

    Unknown keys raise ``ValueError`` naming them, so a typo in a config file is not ignored.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)  # type: ignore[return-value]


def load_config_file(cls: type[T], path: Path) -> T:
    """Read a JSON or TOML config file into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(path.read_text())
    else:
        data = json.loads(path.read_text())
    return config_from_dict(cls, data)


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that re-runs validation (it does: frozen dataclasses call __post_init__)."""
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
