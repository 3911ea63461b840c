"""DataFrames and Series as Arrow IPC chunks plus a JSON spec (format 2).

A value is described by a spec (see :mod:`statekit.pandas_arrays`) whose leaves
are Arrow arrays. Each leaf is cut at fixed row boundaries (65,536 rows), so an
appended row or a changed column yields new chunks only where something
changed; content addressing then stores nothing else. Chunks are LZ4-compressed.

Everything read back is treated as hostile: each chunk must hold exactly one
field of the type the stored schema gives its leaf, pass Arrow's full
validation and have the length the descriptor says, before pandas sees it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.internals import create_dataframe_from_blocks

from . import frames_legacy, tagged_json
from .pandas_arrays import Decoder, Encoder, _label, safe_np_dtype

ROWS_PER_CHUNK = 65_536
FORMAT = 2
ChunkReader = Callable[[list[str]], dict[str, bytes]]
READ_BATCH = 64
"""Chunks fetched per query while decoding: bounds the compressed bytes held at once."""


def digest_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
"""LZ4 costs little CPU and cuts the bytes written (and fsynced) by a third or more."""
_CHUNK_FIELD = "v"  # one name for every chunk: equal content at another position is the same chunk


def _chunk_ipc(arr: pa.Array) -> bytes:
    sink = pa.BufferOutputStream()
    schema = pa.schema([pa.field(_CHUNK_FIELD, arr.type)])
    with pa.ipc.new_stream(sink, schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(pa.record_batch([arr], schema=schema))
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes, ftype: pa.DataType) -> list[pa.Array]:
    """The arrays of one chunk, refused unless it holds one field of ``ftype`` and validates in full."""
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    if len(reader.schema) != 1 or reader.schema.field(0).type != ftype:
        raise ValueError(f"a chunk holds {reader.schema.types}, its schema says {ftype}")
    out = []
    for batch in reader:
        batch.validate(full=True)
        out.append(batch.column(0))
    return out


# ---------------------------------------------------------------- encoding


def _attrs_spec(value: Any) -> dict[str, Any]:
    try:
        attrs = tagged_json.encode(dict(value.attrs))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"its attrs hold a {exc}, which cannot be stored exactly") from None
    return {"attrs": attrs, "flags": {"allows_duplicate_labels": bool(value.flags.allows_duplicate_labels)}}


def _part(what: str, fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"its {what} holds {exc}") from None


def encode_value(value: pd.DataFrame | pd.Series) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The descriptor and chunks of a DataFrame or Series; TypeError/ValueError when not exact."""
    enc = Encoder()
    if isinstance(value, pd.DataFrame):
        spec: dict[str, Any] = {"columns": _part("column labels", enc.index, value.columns),
                                "index": _part("index", enc.index, value.index)}
        spec["data"] = [_part(f"column {value.columns[i]!r}", enc.array, value.iloc[:, i].array)
                        for i in range(value.shape[1])]
        kind = "frame"
    else:
        spec = {"index": _part("index", enc.index, value.index), "data": [_part("data", enc.array, value.array)],
                "name": _part("name", _label, value.name)}
        kind = "series"
    spec.update(_attrs_spec(value))
    leaves = enc.leaves
    schema = pa.schema([pa.field(str(i), leaf.type) for i, leaf in enumerate(leaves)])
    schema_bytes = schema.serialize().to_pybytes()
    back = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
    for i, leaf in enumerate(leaves):
        if back.field(i).type != leaf.type:  # e.g. an extension type Arrow does not know how to read
            raise TypeError(f"Arrow type {leaf.type}, which does not survive Arrow IPC")
    chunks: dict[str, bytes] = {}
    schema_digest = digest_of(schema_bytes)
    chunks[schema_digest] = schema_bytes

    def encode_leaf(leaf: pa.Array | pa.ChunkedArray) -> list[tuple[str, bytes]]:
        out = []
        n = len(leaf)
        for start in range(0, max(n, 1), ROWS_PER_CHUNK):
            piece = leaf.slice(start, ROWS_PER_CHUNK)
            if isinstance(piece, pa.ChunkedArray):
                piece = piece.combine_chunks() if piece.num_chunks else pa.array([], type=leaf.type)
            if not pa.types.is_primitive(piece.type):  # one layout per content, however the input was sliced
                piece = pa.concat_arrays([piece, pa.array([], type=piece.type)])
            try:
                piece.validate(full=True)  # what the loader would refuse is never written
            except pa.ArrowInvalid as exc:
                raise TypeError(f"Arrow data of type {leaf.type} that does not validate ({exc})") from None
            data = _chunk_ipc(piece)
            out.append((digest_of(data), data))
        return out

    total = sum(leaf.nbytes for leaf in leaves)
    encoded = parallel_map(encode_leaf, leaves) if total >= PARALLEL_BYTES else [encode_leaf(x) for x in leaves]
    for pieces in encoded:
        chunks.update(pieces)
    desc: dict[str, Any] = {
        "codec": "arrow",
        "format": FORMAT,
        "kind": kind,
        "rows": len(value),
        "schema": schema_digest,
        "leaves": [[d for d, _ in pieces] for pieces in encoded],
        "lengths": [len(leaf) for leaf in leaves],
        "spec": spec,
    }
    return desc, chunks


PARALLEL_BYTES = 8 * 1024 * 1024
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool_in_child() -> None:
    global _POOL
    _POOL = None  # the parent's worker threads do not exist after fork()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def parallel_map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on the codec threads (for work that releases the GIL)."""
    return list(_pool().map(fn, items)) if len(items) > 1 else [fn(x) for x in items]


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="statekit-codec")
        return _POOL


# ---------------------------------------------------------------- decoding


class _Feed:
    """Hands out chunk bytes in the order leaves need them, a batch of queries at a time, keeping few."""

    def __init__(self, leaves: list[list[str]], read: ChunkReader):
        self.leaves = leaves
        self.read = read
        self.uses = Counter(d for leaf in leaves for d in leaf)
        self.held: dict[str, bytes] = {}

    def take(self, leaf: int) -> list[bytes]:
        if any(d not in self.held for d in self.leaves[leaf]):
            batch = list(dict.fromkeys(self.leaves[leaf]))
            for later in self.leaves[leaf + 1 :]:
                if len(batch) >= READ_BATCH:
                    break
                batch.extend(d for d in later if d not in batch)
            self.held.update(self.read([d for d in batch if d not in self.held]))
        out = []
        for d in self.leaves[leaf]:
            out.append(self.held[d])
            self.uses[d] -= 1
            if self.uses[d] <= 0:
                del self.held[d]
        return out


def decode_frame(desc: Mapping[str, Any], read: ChunkReader) -> Any:
    if desc.get("format") is None:
        return frames_legacy.decode(desc, read, read_ipc)
    if desc.get("format") != FORMAT:
        raise ValueError(f"unknown frame format {desc.get('format')!r}")
    leaves = [[str(d) for d in leaf] for leaf in desc["leaves"]]
    lengths = [int(n) for n in desc["lengths"]]
    rows = int(desc["rows"])
    schema = pa.ipc.read_schema(pa.py_buffer(read([desc["schema"]])[desc["schema"]]))
    if not len(schema) == len(leaves) == len(lengths):
        raise ValueError("the descriptor and the schema disagree on the number of leaves")
    feed = _Feed(leaves, read)

    def leaf_of(i: int) -> pa.ChunkedArray:
        ftype = schema.field(i).type
        pieces = [p for data in feed.take(i) for p in read_ipc(data, ftype)]
        arr = pa.chunked_array(pieces, type=ftype)
        if len(arr) != lengths[i]:
            raise ValueError(f"leaf {i} holds {len(arr)} values, the descriptor says {lengths[i]}")
        return arr

    dec = Decoder(leaf_of, lengths.__getitem__)
    spec = desc["spec"]
    kind = desc["kind"]
    if kind == "frame":
        columns = dec.index(spec["columns"])
        index = dec.index(spec["index"], length=rows)
        if len(spec["data"]) != len(columns):
            raise ValueError("the frame's columns and data disagree")
        out: Any = create_dataframe_from_blocks(_blocks(dec, spec["data"], rows), index, columns)
    elif kind == "series":
        index = dec.index(spec["index"], length=rows)
        if len(spec["data"]) != 1:
            raise ValueError("a series holds one array")
        arr = dec.array(spec["data"][0])
        if len(arr) != rows:
            raise ValueError("the series' data does not match its index")
        name = tagged_json.decode(spec["name"])
        hash(name)
        out = pd.Series(arr, index=index, name=name, copy=False, dtype=arr.dtype)  # no inference from objects
    else:
        raise ValueError(f"unknown kind {kind!r}")
    attrs = tagged_json.decode(spec["attrs"])
    if type(attrs) is not dict:
        raise ValueError("attrs must be a dict")
    out.attrs = attrs
    flags = spec["flags"]
    if type(flags.get("allows_duplicate_labels")) is not bool:
        raise ValueError("bad flags")
    out.flags.allows_duplicate_labels = flags["allows_duplicate_labels"]
    return out


def _blocks(dec: Decoder, specs: list[dict[str, Any]], rows: int) -> list[tuple[Any, np.ndarray]]:
    """pandas blocks: numpy columns of one dtype share one 2D array, filled in place (no second copy)."""
    groups: dict[np.dtype, list[int]] = {}
    blocks: list[tuple[Any, np.ndarray]] = []
    for pos, spec in enumerate(specs):
        if spec.get("t") == "np":
            groups.setdefault(safe_np_dtype(spec["dtype"]), []).append(pos)
    for dtype, positions in groups.items():
        block = np.empty((len(positions), rows), dtype=dtype)
        for j, pos in enumerate(positions):
            dec.numpy(specs[pos], out=block[j])
        blocks.append((block, np.array(positions, dtype=np.intp)))
    for pos, spec in enumerate(specs):
        if spec.get("t") == "np":
            continue
        arr = dec.array(spec)
        if len(arr) != rows:
            raise ValueError("a column's length does not match the frame's rows")
        if isinstance(arr, np.ndarray):
            arr = arr.reshape(1, -1)
        blocks.append((arr, np.array([pos], dtype=np.intp)))
    return blocks
