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

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.internals import create_dataframe_from_blocks

from . import frames_legacy, tagged_json
from .pandas_arrays import Decoder, Encoder, label, safe_np_dtype

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


def _chunk_ipc(arrays: list[pa.Array]) -> bytes:
    sink = pa.BufferOutputStream()
    schema = pa.schema([pa.field(str(i), a.type) for i, a in enumerate(arrays)])
    with pa.ipc.new_stream(sink, schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(pa.record_batch(arrays, schema=schema))
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes, ftype: pa.DataType) -> list[pa.Array]:
    """The arrays of a one-field chunk (format 1)."""
    return [cols[0] for cols in read_group(data, [ftype])]


def read_group(data: bytes, types: list[pa.DataType]) -> list[list[pa.Array]]:
    """The batches of one chunk, refused unless its fields have exactly ``types`` and it validates in full."""
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    if reader.schema.types != types:
        raise ValueError(f"a chunk holds {reader.schema.types}, its schema says {types}")
    out = []
    for batch in reader:
        batch.validate(full=True)
        out.append(batch.columns)
    return out


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


def encode_value(value: pd.DataFrame | pd.Series) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The descriptor and chunks of a DataFrame or Series; TypeError/ValueError when not exact."""
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
    chunks: dict[str, bytes] = {}
    schema_digest = digest_of(schema_bytes)
    chunks[schema_digest] = schema_bytes

    groups = _plan_groups(leaves)
    total = sum(leaf.nbytes for leaf in leaves)
    work = [(first, leaves[first : first + count]) for first, count in groups]
    encoded = parallel_map(_encode_group, work) if total >= PARALLEL_BYTES else [_encode_group(w) for w in work]
    for pieces in encoded:
        chunks.update(pieces)
    desc: dict[str, Any] = {
        "codec": "arrow",
        "format": FORMAT,
        "kind": kind,
        "rows": len(value),
        "schema": schema_digest,
        # [first leaf, number of leaves, their length, one chunk per 65,536 rows]
        "groups": [[first, count, len(leaves[first]), [d for d, _ in pieces]]
                   for (first, count), pieces in zip(groups, encoded, strict=True)],
        "spec": spec,
    }
    return desc, chunks


GROUP_BYTES = 256 * 1024
"""Leaves are packed into one chunk up to about this many bytes, so a wide frame is a few chunks, not one per column."""


def _nominal_width(t: pa.DataType) -> int:
    """Bytes per value used to plan groups: from the type alone, so equal types always group alike."""
    try:
        return max(1, t.bit_width // 8)
    except ValueError:
        return 16


def _plan_groups(leaves: list[pa.Array | pa.ChunkedArray]) -> list[tuple[int, int]]:
    """Runs of consecutive leaves of one length, cut at GROUP_BYTES of nominal size.

    The cut points depend on types and lengths only, never on values: a changed
    cell changes one chunk, and an appended row only the last chunk of each group.
    """
    groups: list[tuple[int, int]] = []
    first, size = 0, 0
    for i, leaf in enumerate(leaves):
        n = len(leaf)
        width = min(n, ROWS_PER_CHUNK) * _nominal_width(leaf.type)
        if i > first and (n != len(leaves[first]) or size + width > GROUP_BYTES):
            groups.append((first, i - first))
            first, size = i, 0
        size += width
    if leaves:
        groups.append((first, len(leaves) - first))
    return groups


def _encode_group(work: tuple[int, list[pa.Array | pa.ChunkedArray]]) -> list[tuple[str, bytes]]:
    _, members = work
    n = len(members[0])
    out = []
    for start in range(0, max(n, 1), ROWS_PER_CHUNK):
        pieces = []
        for leaf in members:
            piece = leaf.slice(start, ROWS_PER_CHUNK)
            if isinstance(piece, pa.ChunkedArray):
                piece = piece.combine_chunks() if piece.num_chunks else pa.array([], type=leaf.type)
            if not pa.types.is_primitive(piece.type):  # one layout per content, however the input was sliced
                piece = pa.concat_arrays([piece, pa.array([], type=piece.type)])
            try:
                piece.validate(full=True)  # what the loader would refuse is never written
            except pa.ArrowInvalid as exc:
                raise TypeError(f"Arrow data of type {leaf.type} that does not validate ({exc})") from None
            pieces.append(piece)
        data = _chunk_ipc(pieces)
        out.append((digest_of(data), data))
    return out


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


class _Groups:
    """Decodes chunk groups as their leaves are asked for, a batch of queries at a time, keeping little.

    Each group's chunks are read, checked (field types, full validation, lengths)
    and split into its leaves; a leaf is handed out once, then forgotten.
    """

    def __init__(self, desc: Mapping[str, Any], schema: pa.Schema, read: ChunkReader):
        self.read = read
        self.groups: list[tuple[int, int, int, list[str]]] = []
        self.group_of: dict[int, int] = {}
        for g, (first, count, length, digests) in enumerate(desc["groups"]):
            first, count, length = int(first), int(count), int(length)
            if count < 1 or length < 0 or first != sum(c for _, c, _, _ in self.groups):
                raise ValueError("the descriptor's chunk groups do not tile its leaves")
            self.groups.append((first, count, length, [str(d) for d in digests]))
            self.group_of.update((i, g) for i in range(first, first + count))
        if len(self.group_of) != len(schema):
            raise ValueError("the descriptor and the schema disagree on the number of leaves")
        self.schema = schema
        self.uses = Counter(d for *_, digests in self.groups for d in digests)
        self.held: dict[str, bytes] = {}
        self.bytes_read = 0
        self.open: dict[int, dict[int, pa.ChunkedArray]] = {}

    def length(self, leaf: int) -> int:
        return self.groups[self.group_of[leaf]][2]

    def type(self, leaf: int) -> pa.DataType:
        self.group_of[leaf]  # noqa: B018 - a KeyError for a leaf the descriptor does not have
        return self.schema.field(leaf).type

    def _stream(self, g: int) -> Iterator[bytes]:
        """The group's chunks in order, fetched READ_BATCH at a time and forgotten once handed out."""
        digests = self.groups[g][3]
        for at, d in enumerate(digests):
            if d not in self.held:
                batch = list(dict.fromkeys(x for x in digests[at : at + READ_BATCH] if x not in self.held))
                for *_, later in self.groups[g + 1 :]:
                    if len(batch) >= READ_BATCH:
                        break
                    batch.extend(x for x in later if x not in batch and x not in self.held)
                got = self.read(batch)
                self.bytes_read += sum(map(len, got.values()))
                self.held.update(got)
            data = self.held[d]
            self.uses[d] -= 1
            if self.uses[d] <= 0:
                del self.held[d]
            yield data

    def _types(self, g: int) -> list[pa.DataType]:
        first, count, _, _ = self.groups[g]
        return [self.schema.field(j).type for j in range(first, first + count)]

    def pieces(self, i: int) -> Iterator[pa.Array]:
        """A leaf's arrays one chunk at a time (a leaf alone in its group is never held whole as Arrow data)."""
        g = self.group_of[i]
        first, count, length, _ = self.groups[g]
        if count > 1 or g in self.open:
            yield from self.leaf(i).chunks
            return
        total = 0
        types = self._types(g)
        for data in self._stream(g):
            for columns in read_group(data, types):
                total += len(columns[0])
                if total > length:
                    raise ValueError(f"leaf {i} holds more values than the descriptor says ({length})")
                yield columns[0]
        if total != length:
            raise ValueError(f"leaf {i} holds {total} values, the descriptor says {length}")

    def leaf(self, i: int) -> pa.ChunkedArray:
        g = self.group_of[i]
        if g not in self.open:
            first, count, length, _ = self.groups[g]
            types = self._types(g)
            pieces: list[list[pa.Array]] = [[] for _ in range(count)]
            for data in self._stream(g):
                for columns in read_group(data, types):
                    for k, col in enumerate(columns):
                        pieces[k].append(col)
            arrays = {}
            for k in range(count):
                arr = pa.chunked_array(pieces[k], type=types[k])
                if len(arr) != length:
                    raise ValueError(f"leaf {first + k} holds {len(arr)} values, the descriptor says {length}")
                arrays[first + k] = arr
            self.open[g] = arrays
        arr = self.open[g].pop(i)
        if not self.open[g]:
            del self.open[g]
        return arr


def decode_frame(desc: Mapping[str, Any], read: ChunkReader) -> Any:
    if desc.get("format") is None:
        return frames_legacy.decode(desc, read, read_ipc)
    if desc.get("format") != FORMAT:
        raise ValueError(f"unknown frame format {desc.get('format')!r}")
    rows = int(desc["rows"])
    schema = pa.ipc.read_schema(pa.py_buffer(read([desc["schema"]])[desc["schema"]]))
    groups = _Groups(desc, schema, read)
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
