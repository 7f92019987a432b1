"""Whole case arrays encoded as Zarr v3 chunks in one pass: the bytes zarr writes, without its per-chunk machinery.

``zarr``'s ``array[...] = data`` goes through an asynchronous codec pipeline built for partial updates: for
every chunk it schedules tasks, allocates a chunk filled with the fill value and copies the data into it, then
hands each codec step to a thread. For a case written once, whole, that bookkeeping cost more CPU than the
compression itself. Here each array's ``zarr.json`` is rendered once per (shape, dtype, layout) by zarr itself
(:func:`array_plan`), and its chunks are cut from the array and encoded with the codecs that document declares
(``bytes`` then ``zstd`` or ``blosc``, through numcodecs, as zarr does). Stores written either way are
byte-identical (``tests/store/test_chunk_writer.py`` compares them file by file), so readers need nothing new.

Arrays this module does not handle (a byte order other than little-endian, a non-numeric dtype, a codec
outside ``bytes``/``zstd``/``blosc``) get no plan; the caller writes them through zarr.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from synbt_factory.store.layout import StoreLayout

__all__ = ["ArrayPlan", "EncodingJob", "array_plan", "encode_chunk", "start_encoding", "writer_pool"]

_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass(frozen=True)
class ArrayPlan:
    """How one array of a given shape, dtype and layout is stored.

    Attributes:
        document: the array's ``zarr.json`` bytes, as zarr renders them.
        chunks: the chunk shape.
        chunk_keys: chunk grid coordinates → the chunk's key relative to the array (``c/0/1/0/1``, or
            ``c.0.1.0.1`` with the ``"."`` separator).
        encode: C-order chunk bytes (a ``uint8`` view) → the stored bytes.
    """

    document: bytes
    chunks: tuple[int, ...]
    chunk_keys: Callable[[tuple[int, ...]], str]
    encode: Callable[[np.ndarray], bytes]


def _bytes_codec_ok(config: dict[str, Any], dtype: np.dtype) -> bool:
    """Whether the ``bytes`` codec's configuration keeps the array's own (little-endian) bytes."""
    endian = config.get("endian")
    return dtype.itemsize == 1 or endian in (None, "little")


def _compressor(codec: dict[str, Any]) -> Callable[[np.ndarray], bytes] | None:
    """numcodecs' encoder for a ``zstd`` or ``blosc`` codec document (zarr's own choice of implementation)."""
    from numcodecs import Blosc, Zstd

    name, config = codec.get("name"), codec.get("configuration") or {}
    if name == "zstd":
        return Zstd(level=int(config.get("level", 0)), checksum=bool(config.get("checksum", False))).encode
    if name == "blosc" and config.get("shuffle") in _BLOSC_SHUFFLE:
        return Blosc(
            cname=str(config["cname"]),
            clevel=int(config["clevel"]),
            shuffle=_BLOSC_SHUFFLE[config["shuffle"]],
            blocksize=int(config.get("blocksize", 0)),
            typesize=int(config["typesize"]),
        ).encode
    return None


def _encoder(codecs: list[dict[str, Any]], dtype: np.dtype) -> Callable[[np.ndarray], bytes] | None:
    """The whole chain ``bytes`` [→ compressor] as one function, or None when it is another chain."""
    if not codecs or codecs[0].get("name") != "bytes" or len(codecs) > 2:
        return None
    if not _bytes_codec_ok(codecs[0].get("configuration") or {}, dtype):
        return None
    if len(codecs) == 1:
        return bytes
    return _compressor(codecs[1])


@functools.lru_cache(maxsize=256)
def _plan(shape: tuple[int, ...], dtype: str, layout: StoreLayout) -> ArrayPlan | None:
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    options = layout.array_options(shape)
    chunks = tuple(options["chunks"])
    array = zarr.create_array(MemoryStore(), shape=shape, dtype=dtype, **options)
    metadata = array.metadata
    document = metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    encode = _encoder(json.loads(document)["codecs"], np.dtype(dtype))
    if encode is None:
        return None
    return ArrayPlan(document=document, chunks=chunks, chunk_keys=metadata.encode_chunk_key, encode=encode)


def array_plan(shape: tuple[int, ...], dtype: np.dtype, layout: StoreLayout) -> ArrayPlan | None:
    """The storage plan of an array, or None when it must be written through zarr.

    Only little-endian hosts and numeric (or bool) dtypes in native or no byte order get a plan. The zarr
    document is rendered once per distinct (shape, dtype, layout) and cached; the chunks are encoded as that
    document (what readers go by) declares.
    """
    dtype = np.dtype(dtype)
    if sys.byteorder != "little" or dtype.kind not in "biuf" or dtype.byteorder not in "=|<":
        return None
    shape = tuple(int(s) for s in shape)
    chunks = layout.chunks_for(shape)
    if len(shape) < 3 or len(chunks) != len(shape) or not all(s > 0 for s in shape):
        return None
    return _plan(shape, dtype.str, layout)


def _chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    return np.ndindex(*(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True)))


_scratch = threading.local()


def _block(chunks: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """This thread's reusable chunk buffer (no fresh pages to fault in for every chunk)."""
    key = (chunks, dtype.str)
    cache = getattr(_scratch, "blocks", None)
    if cache is None:
        cache = _scratch.blocks = {}
    block = cache.get(key)
    if block is None:
        if len(cache) >= 8:
            cache.clear()
        block = cache[key] = np.empty(chunks, dtype=dtype)
    return block


def encode_chunk(plan: ArrayPlan, data: np.ndarray, coords: tuple[int, ...]) -> bytes:
    """The stored bytes of chunk ``coords`` of ``data``; an edge chunk is padded with the fill value (0)."""
    box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, plan.chunks, strict=True))
    piece = data[box]
    block = _block(plan.chunks, data.dtype)
    if piece.shape == plan.chunks:
        np.copyto(block, piece)
    else:
        block[...] = 0
        block[tuple(slice(0, n) for n in piece.shape)] = piece
    return plan.encode(block.reshape(-1).view(np.uint8))


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def writer_pool() -> ThreadPoolExecutor:
    """This process's pool for encoding and hashing (a forked child gets a pool of its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = max(1, min(4, os.cpu_count() or 1))
            _pool = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="synbt-store"))
        return _pool[1]


@dataclass(frozen=True)
class EncodingJob:
    """Checksums and encoded files of a case, being computed in :func:`writer_pool`.

    Attributes:
        digests: array name → its checksum.
        files: (key relative to the case group, stored bytes): each planned array's ``zarr.json`` (already
            done) and chunks.
    """

    digests: dict[str, Future[str]]
    files: list[tuple[str, Future[bytes]]]

    def cancel(self) -> None:
        """Drop the work not started yet (after a failure, so the pool does not run it for nothing)."""
        for future in [*self.digests.values(), *(f for _, f in self.files)]:
            future.cancel()


def _done(value: bytes) -> Future[bytes]:
    future: Future[bytes] = Future()
    future.set_result(value)
    return future


def start_encoding(
    arrays: dict[str, np.ndarray], plans: dict[str, ArrayPlan], *, checksum: Callable[[np.ndarray], str]
) -> EncodingJob:
    """Start the checksums of every array and the encoding of the planned ones, concurrently.

    sha256 (hashlib) and blosc release the GIL, so the checksums run next to the compression; checksums are
    queued first, the longest (the image's) first, since the case group (which records them) is written
    before any chunk.

    Args:
        arrays: C-contiguous arrays by name.
        plans: plans of the arrays to encode (a subset of ``arrays``).
        checksum: the array digest (``array_sha256``).
    """
    pool = writer_pool()
    by_size = sorted(arrays, key=lambda name: -arrays[name].nbytes)
    digests = {name: pool.submit(checksum, arrays[name]) for name in by_size}
    files: list[tuple[str, Future[bytes]]] = []
    for name, plan in plans.items():
        files.append((f"{name}/zarr.json", _done(plan.document)))
        files.extend(
            (f"{name}/{plan.chunk_keys(coords)}", pool.submit(encode_chunk, plan, arrays[name], coords))
            for coords in _chunk_grid(arrays[name].shape, plan.chunks)
        )
    return EncodingJob(digests=digests, files=files)
