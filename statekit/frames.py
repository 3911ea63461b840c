"""DataFrames and Series as Arrow IPC chunks plus a JSON spec (format 2).

A value is described by a spec (see :mod:`statekit.pandas_arrays`) whose leaves
are Arrow arrays. Consecutive leaves of one length are packed into groups of
about GROUP_BYTES (cut by type and length, never by value), and each group is
cut at fixed row boundaries (65,536 rows): a changed cell or an appended row
yields new chunks only where something changed, and content addressing stores
nothing else. A wide frame is a few chunks, not one per column. Chunks are
LZ4-compressed.

Everything read back is treated as hostile: each chunk must hold exactly the
fields the stored schema gives its leaves, pass Arrow's full validation and
have the length the descriptor says, before pandas sees it. Loading fills
pandas' blocks one chunk at a time, so a frame is never held twice. Frames
written before format 2 are read by :mod:`statekit.frames_legacy`.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.internals import create_dataframe_from_blocks

from . import frames_legacy, tagged_json
from .chunk_groups import ChunkReader, Groups, digest_of, encode_piece, plan_groups, read_ipc, row_starts
from .pandas_arrays import Decoder, Encoder, label, safe_np_dtype

FORMAT = 2


# ---------------------------------------------------------------- encoding


def _attrs_spec(value: Any) -> dict[str, Any]:
    try:
        attrs = tagged_json.encode(dict(value.attrs))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"its attrs hold a {exc}, which cannot be stored exactly") from None
    return {"attrs": attrs, "flags": {"allows_duplicate_labels": bool(value.flags.allows_duplicate_labels)}}


def _column_arrays(df: pd.DataFrame) -> Any:
    """The frame's column arrays, without building a Series per column (20,000 columns took seconds)."""
    fast = getattr(df, "_iter_column_arrays", None)  # pandas-internal; the public way is the fallback
    if fast is not None:
        return fast()
    return (df.iloc[:, i].array for i in range(df.shape[1]))


def _part(what: str, fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"its {what} holds {exc}") from None


class Prepared:
    """A value's descriptor, its chunk digests still to come, and the leaves its chunks are cut from."""

    def __init__(self, desc: dict[str, Any], schema_bytes: bytes, leaves: list[Any], groups: list[tuple[int, int]]):
        self.desc = desc
        self.schema_bytes = schema_bytes
        self.leaves = leaves
        self.groups = groups
        self.data_bytes = sum(leaf.nbytes for leaf in leaves)


def prepare(value: pd.DataFrame | pd.Series) -> Prepared:
    """The spec, schema and leaves of a DataFrame or Series; TypeError/ValueError when it cannot be exact."""
    enc = Encoder()
    if isinstance(value, pd.DataFrame):
        spec: dict[str, Any] = {"columns": _part("column labels", enc.index, value.columns),
                                "index": _part("index", enc.index, value.index)}
        data = []
        for i, arr in enumerate(_column_arrays(value)):
            try:
                data.append(enc.array(arr))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"its column {value.columns[i]!r} holds {exc}") from None
        spec["data"] = _runs(data)
        kind = "frame"
    else:
        spec = {"index": _part("index", enc.index, value.index), "data": [_part("data", enc.array, value.array)],
                "name": _part("name", label, value.name)}
        kind = "series"
    spec.update(_attrs_spec(value))
    leaves = enc.leaves
    schema = pa.schema([pa.field(str(i), leaf.type) for i, leaf in enumerate(leaves)])
    schema_bytes = schema.serialize().to_pybytes()
    back = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
    for i, leaf in enumerate(leaves):
        if back.field(i).type != leaf.type:  # e.g. an extension type Arrow does not know how to read
            raise TypeError(f"Arrow type {leaf.type}, which does not survive Arrow IPC")
    groups = plan_groups(leaves)
    desc: dict[str, Any] = {
        "codec": "arrow",
        "format": FORMAT,
        "kind": kind,
        "rows": len(value),
        "schema": digest_of(schema_bytes),
        # [first leaf, number of leaves, their length, one chunk per 65,536 rows]
        "groups": [[first, count, len(leaves[first]), []] for first, count in groups],
        "spec": spec,
    }
    return Prepared(desc, schema_bytes, leaves, groups)


def chunks_of(prep: Prepared) -> Iterator[tuple[str, bytes]]:
    """The value's chunks in order (the schema first), filling in the descriptor's digests as they come.

    Chunks are encoded a few at a time on the codec threads (large values) and
    handed out in order, so a consumer that stores each one and lets it go holds
    only the window in flight, never the whole encoded value.
    """
    yield prep.desc["schema"], prep.schema_bytes
    units = [(g, (prep.leaves[first : first + count], start))
             for g, (first, count) in enumerate(prep.groups) for start in row_starts(len(prep.leaves[first]))]
    parallel = prep.data_bytes >= PARALLEL_BYTES
    groups = prep.desc["groups"]
    for g, (digest, data) in zip((g for g, _ in units), ordered_map(encode_piece, [w for _, w in units], parallel),
                                 strict=True):
        groups[g][3].append(digest)
        yield digest, data
        del data


def encode_value(value: pd.DataFrame | pd.Series) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The descriptor and chunks of a DataFrame or Series; TypeError/ValueError when not exact."""
    prep = prepare(value)
    chunks = dict(chunks_of(prep))
    return prep.desc, chunks


PARALLEL_BYTES = 8 * 1024 * 1024
WORKERS = min(8, os.cpu_count() or 2)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool_in_child() -> None:
    global _POOL
    _POOL = None  # the parent's worker threads do not exist after fork()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def ordered_map(fn: Callable[[Any], Any], items: list[Any], parallel: bool = True) -> Iterator[Any]:
    """``fn(x)`` for each item, in order, with at most a small window of items in flight on the codec threads."""
    if not parallel or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = _pool()
    window = 2 * WORKERS
    pending: deque[Future[Any]] = deque()
    try:
        for x in items:
            pending.append(pool.submit(fn, x))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:  # the consumer stopped (an error, a closed stream): drop what has not started
            f.cancel()


def parallel_map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on the codec threads (for work that releases the GIL)."""
    return list(_pool().map(fn, items)) if len(items) > 1 else [fn(x) for x in items]


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="statekit-codec")
        return _POOL


# ---------------------------------------------------------------- decoding


def decode_frame(desc: Mapping[str, Any], read: ChunkReader) -> Any:
    if desc.get("format") is None:
        return frames_legacy.decode(desc, read, read_ipc)
    if desc.get("format") != FORMAT:
        raise ValueError(f"unknown frame format {desc.get('format')!r}")
    rows = int(desc["rows"])
    schema = pa.ipc.read_schema(pa.py_buffer(read([desc["schema"]])[desc["schema"]]))
    groups = Groups(desc, schema, read)
    dec = Decoder(groups)
    spec = desc["spec"]
    kind = desc["kind"]
    if kind == "frame":
        columns = dec.index(spec["columns"])
        index = dec.index(spec["index"], length=rows)
        data = _expand(spec["data"], len(columns))
        if len(data) != len(columns):
            raise ValueError("the frame's columns and data disagree")
        out: Any = create_dataframe_from_blocks(_blocks(dec, data, rows), index, columns)
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
    if groups.bytes_read >= PARALLEL_BYTES:
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps the freed pages otherwise
    return out


def _runs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Numpy columns of one dtype on consecutive leaves as one entry: a wide frame's descriptor stays small."""
    out: list[dict[str, Any]] = []
    for spec in specs:
        last = out[-1] if out else None
        if (last is not None and spec["t"] == "np" and last["t"] == "np" and last["dtype"] == spec["dtype"]
                and spec["leaf"] == last["leaf"] + last.get("run", 1)):
            last["run"] = last.get("run", 1) + 1
        else:
            out.append(dict(spec))
    return out


def _expand(specs: Any, most: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in specs:
        run = spec.get("run", 1) if spec["t"] == "np" else 1
        if type(run) is not int or not 0 < run <= most - len(out):
            raise ValueError("a run of columns longer than the frame")
        if run == 1:
            out.append(spec)
        else:
            out.extend({**spec, "leaf": int(spec["leaf"]) + k} for k in range(run))
    return out


def _blocks(dec: Decoder, specs: list[dict[str, Any]], rows: int) -> list[tuple[Any, np.ndarray]]:
    """pandas blocks: numpy columns of one dtype share one 2D array, filled in place (no second copy)."""
    groups: dict[np.dtype, list[int]] = {}
    blocks: list[tuple[Any, np.ndarray]] = []
    for pos, spec in enumerate(specs):
        if spec.get("t") == "np":
            if dec.length_of(int(spec["leaf"])) != rows:  # checked before any memory is set aside
                raise ValueError("a column's length does not match the frame's rows")
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
