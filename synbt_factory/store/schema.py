"""What a case of a synbt store must look like, checked from its metadata before any chunk is read.

Used by the readers of :class:`~synbt_factory.store.case_store.CaseStore` (which refuse a case that
breaks it) and by ``synbt store verify`` (which lists every break). Each check returns problem
strings instead of raising, so one bad case never hides the next.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "ALLOWED_CODECS",
    "MAX_ARRAY_BYTES",
    "array_problem",
    "case_attr_problems",
    "codec_names",
    "declared_shape",
]

# The Zarr v3 specification codecs the README promises, so other implementations read a store.
ALLOWED_CODECS = frozenset({"bytes", "zstd", "blosc"})
# No case array is near this (a 512×512×200 image is 0.2 GB); a larger declared size is damage, and
# reading it would exhaust memory before any checksum could be compared.
MAX_ARRAY_BYTES = 8 * 2**30


def codec_names(meta: dict[str, Any]) -> list[str]:
    """Names of every codec of an array's ``zarr.json`` document, nested ones (sharding) included."""
    names: list[str] = []
    stack = list(meta.get("codecs") or [])
    while stack:
        codec = stack.pop(0)
        if isinstance(codec, dict):
            names.append(str(codec.get("name")))
            config = codec.get("configuration")
            if isinstance(config, dict):
                stack.extend(config.get("codecs") or [])
                stack.extend(config.get("index_codecs") or [])
        else:
            names.append(str(codec))
    return names


def declared_shape(meta: dict[str, Any]) -> tuple[int, ...] | None:
    """The ``shape`` of an array document as ints, or None when it is not a list of non-negative ints."""
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        return None
    return tuple(shape)


def _itemsize(meta: dict[str, Any]) -> int | None:
    try:
        return int(np.dtype(str(meta.get("data_type"))).itemsize)
    except TypeError:
        return None


def array_problem(name: str, meta: dict[str, Any], image_shape: tuple[int, ...] | None) -> str | None:
    """What is wrong with one array's ``zarr.json`` document, or None.

    Args:
        name: the array's name in its case (``image`` must be (2, X, Y, Z)).
        meta: the parsed ``zarr.json`` document.
        image_shape: the case's declared image shape; every other array's last three axes must equal
            its spatial axes. None when the image itself is unreadable (then only limits are checked).
    """
    if meta.get("node_type") != "array":
        return f"{name!r} is not an array (node_type {meta.get('node_type')!r})"
    bad = sorted({c for c in codec_names(meta) if c not in ALLOWED_CODECS})
    if bad:
        return f"array {name!r} uses codec(s) {bad} outside the allowed set {sorted(ALLOWED_CODECS)}"
    shape = declared_shape(meta)
    if shape is None:
        return f"array {name!r} declares an invalid shape {meta.get('shape')!r}"
    itemsize = _itemsize(meta)
    if itemsize is None:
        return f"array {name!r} declares an unknown data type {meta.get('data_type')!r}"
    nbytes = math.prod(shape) * itemsize
    if nbytes > MAX_ARRAY_BYTES:
        return (
            f"array {name!r} declares shape {list(shape)} ({nbytes / 2**30:.0f} GiB), "
            f"over the {MAX_ARRAY_BYTES // 2**30} GiB limit"
        )
    chunks = ((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
    if (
        not isinstance(chunks, list)
        or len(chunks) != len(shape)
        or not all(isinstance(c, int) and c > 0 for c in chunks)
        or math.prod(chunks) * itemsize > MAX_ARRAY_BYTES
    ):
        return f"array {name!r} declares an invalid chunk shape {chunks!r}"
    if name == "image":
        if len(shape) != 4 or shape[0] != 2:
            return f"array 'image' has shape {list(shape)}, not (2, X, Y, Z)"
    elif image_shape is not None and (len(shape) < 3 or shape[-3:] != tuple(image_shape[1:])):
        return (
            f"array {name!r} has shape {list(shape)}, which does not match the image's spatial shape "
            f"{list(image_shape[1:])}"
        )
    return None


def _finite_numbers(value: Any, shape: tuple[int, ...]) -> bool:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return arr.shape == shape and bool(np.all(np.isfinite(arr)))


def case_attr_problems(attrs: dict[str, Any]) -> list[str]:
    """Problems of a case's attributes: ``affine`` must be a finite 4×4, ``spacing`` three positive numbers."""
    problems = []
    if "affine" not in attrs:
        problems.append("attribute 'affine' is missing")
    elif not _finite_numbers(attrs["affine"], (4, 4)):
        problems.append(f"attribute 'affine' is not a finite 4×4 matrix ({str(attrs['affine'])[:80]})")
    if "spacing" not in attrs:
        problems.append("attribute 'spacing' is missing")
    elif not _finite_numbers(attrs["spacing"], (3,)) or min(np.asarray(attrs["spacing"], np.float64)) <= 0:
        problems.append(f"attribute 'spacing' is not three positive numbers ({str(attrs['spacing'])[:80]})")
    return problems
