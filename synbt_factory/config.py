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

__all__ = [
    "config_to_dict",
    "config_from_dict",
    "load_config_file",
    "load_config_sections",
    "read_config_file",
    "replace",
]

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


def read_config_file(path: Path) -> Any:
    """The parsed content of a JSON or TOML (``.toml``) config file.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: not valid JSON / TOML (``json.JSONDecodeError``, ``tomllib.TOMLDecodeError``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        import tomllib

        return tomllib.loads(path.read_text())
    return json.loads(path.read_text())


def load_config_file(cls: type[T], path: Path) -> T:
    """Read a JSON or TOML config file into ``cls``."""
    return config_from_dict(cls, read_config_file(path))


def load_config_sections(path: Path, sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """Overrides for several configs from one JSON or TOML file, to merge into their defaults.

    The file holds either one table per section (``{"model": {...}, "train": {...}}``; a missing section is
    empty) or flat keys, each going to every section whose dataclass has a field of that name.

    Args:
        path: the config file.
        sections: section name → its config dataclass, e.g. ``{"model": VQVAEConfig, "train": VQVAETrainConfig}``.

    Returns:
        section name → the overrides found for it (not validated: merge them into a config to validate).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a table, or holds flat keys no section has.
    """
    path = Path(path)
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a table/object")
    if set(data) <= set(sections):
        return {name: dict(data.get(name, {})) for name in sections}
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in sections.items()}
    unknown = sorted(set(data).difference(*fields.values()))
    if unknown:
        names = " nor ".join(cls.__name__ for cls in sections.values())
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (neither {names} fields)")
    return {name: {k: v for k, v in data.items() if k in keys} for name, keys in fields.items()}


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that re-runs validation (it does: frozen dataclasses call __post_init__)."""
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
