"""Values <-> stored form, one item (name: value) at a time.

The rule is "round-trips exactly or refuses": every codec either gives back an
equal value of the same type or raises :class:`UnserializableError` naming the
item, before anything is written.

- plain JSON (dict with str keys, list, str, int, finite float, bool, None) is
  stored inline in ``state_data``, readable from SQL; large ones go to chunks;
- other simple values (tuples, sets, bytes, dates, Decimals, NaN, numpy
  scalars, dicts with non-str keys...) use a tagged JSON (``xjson``);
- DataFrames and Series go to Arrow IPC, one blob per column per 65,536 rows,
  so an appended row or a changed column stores only the chunks that changed;
- ndarrays go to ``.npy`` (never with pickle), cut into 8 MiB chunks;
- anything else is pickled only when the caller allows it, and signed.

Chunks are content-addressed by sha256: the store writes only those it lacks.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import io
import json
import math
import os
import pickle
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import IntegrityError, StatekitError, UnserializableError, UntrustedPayloadError
from .memo import FrameMemo
from .signing import SigningKey

ROWS_PER_CHUNK = 65_536
BYTES_PER_CHUNK = 8 * 1024 * 1024
INLINE_JSON_LIMIT = 256 * 1024
"""Plain JSON larger than this (encoded) is stored as content-addressed chunks."""

TAG = "__sk__"
PLACEHOLDER = "__statekit_placeholder__"
ChunkReader = Callable[[list[str]], dict[str, bytes]]


def dumps(value: Any) -> str:
    """The one JSON text form statekit stores and checksums."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def digest_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class EncodedItem:
    """One encoded value: either inline JSON or a descriptor plus its chunks."""

    name: str
    inline: bool
    value: Any = None  # the JSON value, when inline
    descriptor: dict[str, Any] = field(default_factory=dict)
    chunks: dict[str, bytes] = field(default_factory=dict)
    size: int = 0
    reused: bool = False  # from the frame memo: no bytes, the chunks must already be stored


# ---------------------------------------------------------------- plain JSON


def is_plain_json(value: Any) -> bool:
    """True when ``json.loads(json.dumps(value))`` gives back an equal value of the same types."""
    return plain_json_size(value) >= 0


_SCALAR_SIZE = {type(None): 5, bool: 5}


def plain_json_size(value: Any, _depth: int = 0) -> int:
    """About how many bytes ``value`` takes as JSON, or -1 when it is not plain JSON.

    One walk both checks the types and sizes the value, so small states are not
    encoded twice (once to size them, once to store them). Scalars inside
    containers are handled inline: this runs on every save.
    """
    t = type(value)
    if t is str:
        return len(value) + 2 if value.isascii() or _utf8_ok(value) else -1
    if t is dict:
        if _depth > 200:
            return -1
        total = 2
        for k, v in value.items():
            if type(k) is not str or not _utf8_ok(k):
                return -1
            n = _scalar_size(v)
            if n is None:
                n = plain_json_size(v, _depth + 1)
            if n < 0:
                return -1
            total += n + len(k) + 4
        return total
    if t is list:
        if _depth > 200:
            return -1
        total = 2
        for v in value:
            n = _scalar_size(v)
            if n is None:
                n = plain_json_size(v, _depth + 1)
            if n < 0:
                return -1
            total += n + 1
        return total
    n = _scalar_size(value)
    return -1 if n is None else n


def _scalar_size(v: Any) -> int | None:
    """The JSON size of a scalar (-1 if it is not plain JSON), or None for a container."""
    t = type(v)
    if t is str:
        return len(v) + 2 if v.isascii() or _utf8_ok(v) else -1
    if t is float:
        return 24 if v - v == 0.0 else -1  # NaN and infinities are not JSON
    if t is int:
        return 20 if -(10**18) < v < 10**18 else len(str(v))
    size = _SCALAR_SIZE.get(t)
    if size is not None:
        return size
    return None if t is list or t is dict else -1


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored as text
        return False
    return True


# ---------------------------------------------------------------- tagged JSON


def _x_encode(v: Any, depth: int = 0) -> Any:
    if depth > 200:
        raise ValueError("nested too deeply")
    t = type(v)
    if v is None or t is bool or t is int:
        return v
    if t is str:
        if _utf8_ok(v):
            return v
        return {TAG: "str", "v": base64.b64encode(v.encode("utf-8", "surrogatepass")).decode()}
    if t is float:
        return v if math.isfinite(v) else {TAG: "float", "v": repr(v)}
    if t is list:
        return [_x_encode(x, depth + 1) for x in v]
    if t is dict:
        if all(type(k) is str and k != TAG and _utf8_ok(k) for k in v):
            return {k: _x_encode(x, depth + 1) for k, x in v.items()}
        return {TAG: "dict", "v": [[_x_encode(k, depth + 1), _x_encode(x, depth + 1)] for k, x in v.items()]}
    if t is tuple:
        return {TAG: "tuple", "v": [_x_encode(x, depth + 1) for x in v]}
    if t is set or t is frozenset:
        return {TAG: t.__name__, "v": [_x_encode(x, depth + 1) for x in v]}
    if t is bytes:
        return {TAG: "bytes", "v": base64.b64encode(v).decode()}
    if t is complex:
        return {TAG: "complex", "v": [repr(v.real), repr(v.imag)]}
    if t is decimal.Decimal:
        return {TAG: "decimal", "v": str(v)}
    if t is uuid.UUID:
        return {TAG: "uuid", "v": str(v)}
    if t is dt.datetime:
        key = _tz_key(v.tzinfo)
        if key:  # wall time, fold and zone name: exact even inside a DST gap or overlap
            return {TAG: "datetime", "v": v.replace(tzinfo=None).isoformat(), "tz": key, "fold": v.fold}
        return {TAG: "datetime", "v": v.isoformat(), "tz": None, "fold": v.fold}
    if t is dt.date:
        return {TAG: "date", "v": v.isoformat()}
    if t is dt.time:
        return {TAG: "time", "v": v.isoformat(), "tz": _tz_key(v.tzinfo)}
    if t is dt.timedelta:
        return {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if t is pd.Timestamp:
        return {TAG: "timestamp", "v": v.isoformat(), "unit": v.unit, "tz": _tz_key(v.tzinfo)}
    if t is pd.Timedelta:
        return {TAG: "pd_timedelta", "v": int(v.value), "unit": v.unit}
    if isinstance(v, np.generic) and v.dtype.kind in "biufcmM":
        kind = v.dtype.kind
        payload = int(v.view(np.int64)) if kind in "mM" else _x_encode(v.item(), depth + 1)
        return {TAG: "np", "dtype": v.dtype.str, "v": payload}
    raise TypeError(type(v).__name__)


def _tz_key(tz: dt.tzinfo | None) -> str | None:
    if tz is None or tz is dt.UTC:
        return None
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return str(key) if key else None


def _x_decode(v: Any) -> Any:
    if type(v) is list:
        return [_x_decode(x) for x in v]
    if type(v) is not dict:
        return v
    tag = v.get(TAG)
    if tag is None:
        return {k: _x_decode(x) for k, x in v.items()}
    p = v["v"]
    if tag == "str":
        return base64.b64decode(p).decode("utf-8", "surrogatepass")
    if tag == "float":
        return float(p)
    if tag == "dict":
        return {_freeze(_x_decode(k)): _x_decode(x) for k, x in p}
    if tag == "tuple":
        return tuple(_x_decode(x) for x in p)
    if tag == "set":
        return {_freeze(_x_decode(x)) for x in p}
    if tag == "frozenset":
        return frozenset(_freeze(_x_decode(x)) for x in p)
    if tag == "bytes":
        return base64.b64decode(p)
    if tag == "complex":
        return complex(float(p[0]), float(p[1]))
    if tag == "decimal":
        return decimal.Decimal(p)
    if tag == "uuid":
        return uuid.UUID(p)
    if tag == "datetime":
        out = dt.datetime.fromisoformat(p).replace(fold=v.get("fold", 0))
        return out.replace(tzinfo=zoneinfo.ZoneInfo(v["tz"])) if v.get("tz") else out
    if tag == "date":
        return dt.date.fromisoformat(p)
    if tag == "time":
        out_t = dt.time.fromisoformat(p)
        return out_t.replace(tzinfo=zoneinfo.ZoneInfo(v["tz"])) if v.get("tz") else out_t
    if tag == "timedelta":
        return dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2])
    if tag == "timestamp":
        ts = pd.Timestamp(p).as_unit(v["unit"])
        return ts.tz_convert(v["tz"]) if v.get("tz") else ts
    if tag == "pd_timedelta":
        return pd.Timedelta(p, unit="ns").as_unit(v["unit"])
    if tag == "np":
        dtype = np.dtype(v["dtype"])
        if dtype.kind in "mM":  # stored as the int64 count of its unit (NaT included)
            return np.array(p, dtype=np.int64).view(dtype)[()]
        return dtype.type(_x_decode(p))
    raise IntegrityError(f"unknown tag {tag!r} in stored value")


def _freeze(v: Any) -> Any:
    """Lists decoded where a hashable was stored (never happens for our own output)."""
    return tuple(v) if type(v) is list else v


# ---------------------------------------------------------------- frames


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


def _encode_frame(df: pd.DataFrame, kind: str, series_name: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
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
        desc["series_name"] = _x_encode(series_name)
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


def _decode_frame(desc: Mapping[str, Any], read: ChunkReader) -> Any:
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
        s.name = _x_decode(desc["series_name"])
        return s
    return df


# ---------------------------------------------------------------- ndarray and bytes


def _split(data: bytes) -> tuple[list[str], dict[str, bytes]]:
    mv = memoryview(data)
    digests: list[str] = []
    chunks: dict[str, bytes] = {}
    for start in range(0, max(len(data), 1), BYTES_PER_CHUNK):
        piece = bytes(mv[start : start + BYTES_PER_CHUNK])
        d = digest_of(piece)
        chunks[d] = piece
        digests.append(d)
    return digests, chunks


def _join(desc: Mapping[str, Any], read: ChunkReader) -> bytes:
    data = read(list(desc["chunks"]))
    return b"".join(data[d] for d in desc["chunks"])


# ---------------------------------------------------------------- public


def encode_item(name: str, value: Any, *, allow_pickle: bool, key: Callable[[], SigningKey],
                memo: FrameMemo | None = None) -> EncodedItem:
    """Encode one named value, or raise UnserializableError naming it.

    With a ``memo``, a DataFrame or Series encoded before and provably unchanged
    since (see :mod:`statekit.memo`) is not encoded again: the item carries its
    earlier descriptor and no bytes, and the store checks the chunks are there.
    """
    t = type(value)
    if memo is not None and (t is pd.DataFrame or t is pd.Series):
        hit = memo.lookup(value)
        if hit is not None:
            return EncodedItem(name, False, descriptor=hit[0], chunks={}, size=hit[1], reused=True)
    try:
        item = _encode(name, value, allow_pickle, key)
        if memo is not None and item.descriptor.get("codec") == "arrow":
            memo.remember(value, item.descriptor, item.size)
        return item
    except UnserializableError:
        raise
    except RecursionError:
        raise UnserializableError(
            f"{name!r} ({type(value).__name__}) is nested too deeply to store.",
            name=name, type_name=type(value).__name__,
        ) from None


def _encode(name: str, value: Any, allow_pickle: bool, key: Callable[[], SigningKey]) -> EncodedItem:
    t = type(value)
    approx = plain_json_size(value)
    if approx >= 0:
        if approx <= INLINE_JSON_LIMIT:
            return EncodedItem(name, True, value=value, size=approx)
        data = dumps(value).encode("utf-8")
        digests, chunks = _split(data)
        return EncodedItem(name, False, descriptor={"codec": "json", "chunks": digests}, chunks=chunks, size=len(data))
    reason = ""
    if t is pd.DataFrame or t is pd.Series:
        try:
            frame = value if t is pd.DataFrame else value.to_frame(name="__statekit_series__")
            desc, chunks = _encode_frame(frame, "frame" if t is pd.DataFrame else "series", getattr(value, "name", None))
            desc["chunks"] = list(chunks)
            return EncodedItem(name, False, descriptor=desc, chunks=chunks, size=sum(map(len, chunks.values())))
        except (TypeError, ValueError, pa.ArrowException) as exc:
            reason = str(exc)
    elif t is np.ndarray:
        if value.dtype.hasobject:
            reason = "an object-dtype array needs pickle"
        else:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value, allow_pickle=False)
            data = buf.getvalue()
            digests, chunks = _split(data)
            return EncodedItem(name, False, descriptor={"codec": "npy", "chunks": digests}, chunks=chunks, size=len(data))
    else:
        try:
            tagged = _x_encode(value)
        except (TypeError, ValueError) as exc:
            reason = f"contains a {exc}" if isinstance(exc, TypeError) else str(exc)
        else:
            text = dumps(tagged)
            if len(text) <= INLINE_JSON_LIMIT:
                return EncodedItem(name, False, descriptor={"codec": "xjson", "value": tagged, "chunks": []}, size=len(text))
            digests, chunks = _split(text.encode("utf-8"))
            return EncodedItem(name, False, descriptor={"codec": "xjson", "chunks": digests}, chunks=chunks, size=len(text))
    if not allow_pickle:
        raise UnserializableError(
            f"Cannot store {name!r} ({_type_name(value)}) without pickle"
            + (f": {reason}" if reason else "")
            + ". Pass allow_pickle=True to store it as a signed pickle, or convert it first.",
            name=name, type_name=_type_name(value),
        )
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception as exc:  # noqa: BLE001 - pickle raises anything the object's __reduce__ raises
        raise UnserializableError(
            f"Cannot store {name!r} ({_type_name(value)}): it cannot be pickled ({exc}).",
            name=name, type_name=_type_name(value),
        ) from None
    signer = key()
    digests, chunks = _split(data)
    desc = {"codec": "pickle", "chunks": digests, "hmac": signer.sign(data), "key_id": signer.key_id}
    return EncodedItem(name, False, descriptor=desc, chunks=chunks, size=len(data))


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def decode_item(desc: Mapping[str, Any], read: ChunkReader, key: Callable[[], SigningKey]) -> Any:
    """Rebuild a value from its descriptor; chunk digests are checked by ``read``.

    A descriptor or payload that does not decode (damaged, or forged by someone
    who wrote to the database) raises IntegrityError, never a decoder's own error.
    """
    try:
        return _decode(desc, read, key)
    except StatekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the stored item is not what we wrote
        raise IntegrityError(f"a stored value does not decode ({type(exc).__name__}: {exc})") from None


def _decode(desc: Mapping[str, Any], read: ChunkReader, key: Callable[[], SigningKey]) -> Any:
    codec = desc["codec"]
    if codec == "arrow":
        return _decode_frame(desc, read)
    if codec == "npy":
        buf = io.BytesIO(_join(desc, read))
        version = np.lib.format.read_magic(buf)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        _shape, _order, dtype = header[version](buf) if version in header else (None, None, np.dtype("u1"))
        if dtype.hasobject:  # we never write these: only a forged payload declares one
            raise UntrustedPayloadError("refusing an .npy payload that declares Python objects (it would need pickle)")
        buf.seek(0)
        return np.lib.format.read_array(buf, allow_pickle=False)
    if codec == "json":
        return json.loads(_join(desc, read))
    if codec == "xjson":
        tagged = desc["value"] if "value" in desc else json.loads(_join(desc, read))
        return _x_decode(tagged)
    if codec == "pickle":
        data = _join(desc, read)
        signer = key()
        sig = desc.get("hmac")
        if not isinstance(sig, str) or not signer.verify(data, sig):
            raise UntrustedPayloadError(
                "refusing to unpickle a payload that is not signed with your key "
                f"(signed by key {desc.get('key_id', 'unknown')!s}, yours is {signer.key_id}); "
                "it may have been written by someone else"
            )
        return pickle.loads(data)  # noqa: S301 - signature checked above
    raise IntegrityError(f"unknown codec {codec!r}")


def copy_value(value: Any) -> Any:
    """A copy that the caller may mutate without touching a cached value."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.copy(deep=False)  # copy-on-write (pandas >= 3) makes this safe and cheap
    if isinstance(value, np.ndarray):
        return value.copy()
    import copy

    return copy.deepcopy(value)
