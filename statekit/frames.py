"""DataFrames and Series as Arrow IPC chunks: one chunk per column per 65,536 rows.

Fixed row boundaries mean an appended row or a changed column yields new
chunks only where something changed; content addressing then stores nothing
else. Chunks are LZ4-compressed. Large frames encode, hash and decode their
columns on a small thread pool (Arrow's compression and hashlib release the GIL).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import tagged_json

ROWS_PER_CHUNK = 65_536
PLACEHOLDER = "__statekit_placeholder__"
ChunkReader = Callable[[list[str]], dict[str, bytes]]


def digest_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
"""LZ4 costs little CPU and cuts the bytes written (and fsynced) by a third or more."""


def _chunk_ipc(arr: pa.Array, fld: pa.Field) -> bytes:
    sink = pa.BufferOutputStream()
    schema = pa.schema([fld])
    with pa.ipc.new_stream(sink, schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(pa.record_batch([arr], schema=schema))
    return sink.getvalue().to_pybytes()


def _object_column_fixup(name: Any, s: pd.Series) -> str:
    """Check an object column holds only strings (or bytes); say how its missing values come back.

    Arrow gives strings back as pandas' string dtype: the fixup restores ``object``
    with the original kind of missing value (None or NaN).
    """
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind not in ("string", "bytes", "empty"):
        raise TypeError(f"column {name!r} holds {kind} Python objects, which Arrow cannot round-trip exactly")
    mask = s.isna().to_numpy()
    if not mask.any():
        return "none"
    nulls = s[mask]
    if all(x is None for x in nulls):
        return "none"
    if all(type(x) is float for x in nulls):
        return "nan"
    raise TypeError(f"column {name!r} mixes None and NaN as missing values")


def encode_frame(df: pd.DataFrame, kind: str, series_name: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    if not df.columns.is_unique:
        raise TypeError("the DataFrame has duplicate column names")
    fixups: dict[str, str] = {}
    strings: dict[str, list[Any]] = {}
    for pos in range(df.shape[1]):
        col = df.iloc[:, pos]
        if isinstance(col.dtype, pd.StringDtype):  # Arrow restores the default storage: keep the original
            na = col.dtype.na_value
            strings[str(pos)] = [col.dtype.storage, "nan" if isinstance(na, float) else "NA"]
        if col.dtype == object:
            fixups[str(pos)] = _object_column_fixup(df.columns[pos], col)
    for level in range(df.index.nlevels):
        idx = df.index.get_level_values(level)
        if idx.dtype == object and pd.api.types.infer_dtype(idx, skipna=False) not in ("string", "bytes", "empty"):
            raise TypeError("the index holds Python objects that Arrow cannot round-trip exactly")
    placeholder: str | None = None
    if df.shape[1] == 0:
        placeholder = "range" if isinstance(df.columns, pd.RangeIndex) else str(df.columns.dtype)  # Arrow cannot count the rows of a table without columns
        df = df.assign(**{PLACEHOLDER: np.zeros(len(df), dtype=np.int8)})
    table = pa.Table.from_pandas(df, preserve_index=None)
    schema_bytes = table.schema.serialize().to_pybytes()
    chunks: dict[str, bytes] = {}
    schema_digest = digest_of(schema_bytes)
    chunks[schema_digest] = schema_bytes
    n = table.num_rows

    def encode_column(i: int) -> list[tuple[str, bytes]]:
        fld, col = table.schema.field(i), table.column(i)
        out = []
        for start in range(0, max(n, 1), ROWS_PER_CHUNK):
            piece = col.slice(start, ROWS_PER_CHUNK).combine_chunks() if n else pa.array([], type=fld.type)
            data = _chunk_ipc(piece, fld.remove_metadata())
            out.append((digest_of(data), data))
        return out

    # Arrow's compression and hashlib release the GIL: large frames encode their columns in parallel
    if table.nbytes >= PARALLEL_BYTES and table.num_columns > 1:
        encoded = list(_pool().map(encode_column, range(table.num_columns)))
    else:
        encoded = [encode_column(i) for i in range(table.num_columns)]
    columns: list[list[str]] = []
    for pieces in encoded:
        columns.append([d for d, _ in pieces])
        chunks.update(pieces)
    desc: dict[str, Any] = {
        "codec": "arrow",
        "kind": kind,
        "rows": n,
        "schema": schema_digest,
        "columns": columns,
        "fixups": fixups,
        "strings": strings,
        "placeholder": placeholder,
    }
    if kind == "series":
        desc["series_name"] = tagged_json.encode(series_name)
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


def decode_frame(desc: Mapping[str, Any], read: ChunkReader) -> Any:
    wanted = [desc["schema"], *[d for col in desc["columns"] for d in col]]
    data = read(wanted)
    schema = pa.ipc.read_schema(pa.py_buffer(data[desc["schema"]]))

    def decode_column(i: int) -> pa.ChunkedArray:
        pieces = []
        for d in desc["columns"][i]:
            reader = pa.ipc.open_stream(pa.py_buffer(data[d]))
            pieces.extend(reader.read_all().column(0).chunks)
        return pa.chunked_array(pieces, type=schema.field(i).type)

    total = sum(len(data[d]) for d in wanted)
    columns = range(len(desc["columns"]))
    arrays = parallel_map(decode_column, list(columns)) if total >= PARALLEL_BYTES else [decode_column(i) for i in columns]
    table = pa.Table.from_arrays(arrays, schema=schema)
    df = table.to_pandas()
    for pos, fix in desc.get("fixups", {}).items():
        p = int(pos)
        col = df.iloc[:, p].astype(object)
        df.isetitem(p, col.where(col.notna(), np.nan if fix == "nan" else None))
    if desc.get("placeholder"):
        df = df.drop(columns=[PLACEHOLDER])
        kind = desc["placeholder"]
        df.columns = pd.RangeIndex(0) if kind == "range" else pd.Index([], dtype=kind)
    for pos, (storage, na) in desc.get("strings", {}).items():
        p = int(pos)
        want = pd.StringDtype(storage, na_value=np.nan if na == "nan" else pd.NA)
        if df.dtypes.iloc[p] != want:
            df.isetitem(p, df.iloc[:, p].astype(want))
    if desc["kind"] == "series":
        s = df.iloc[:, 0]
        s.name = tagged_json.decode(desc["series_name"])
        return s
    return df
