"""Values <-> stored form, one item (name: value) at a time.

The rule is "round-trips exactly or refuses": every codec either gives back an
equal value of the same type or raises :class:`UnserializableError` naming the
item, before anything is written.

- plain JSON (dict with str keys, list, str, int, finite float, bool, None) is
  stored inline in ``state_data``, readable from SQL; large ones go to chunks;
- other simple values (tuples, sets, bytes, dates, Decimals, NaN, numpy
  scalars, dicts with non-str keys...) use a tagged JSON (``xjson``);
- DataFrames and Series go to Arrow IPC chunks described by an exact spec
  (:mod:`statekit.frames`), so an appended row or a changed column stores only
  the chunks that changed;
- ndarrays go to ``.npy`` (never with pickle), cut into 2 MiB chunks;
- frames and arrays of at least STREAM_BYTES are not encoded here but streamed:
  the item carries a generator the save transaction runs, storing each chunk
  before the next is encoded, so the encoded value is never held whole;
- anything else is pickled only when the caller allows it, and signed.

Chunks are content-addressed by sha256: the store writes only those it lacks.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import frames, streaming, tagged_json
from .errors import IntegrityError, StatekitError, UnserializableError, UntrustedPayloadError
from .frames import ChunkReader, digest_of
from .memo import FrameMemo
from .signing import SigningKey

BYTES_PER_CHUNK = 2 * 1024 * 1024
"""Arrays, large JSON and pickles are cut into chunks of this size: a streamed array holds about three at once."""
INLINE_JSON_LIMIT = 256 * 1024
"""Plain JSON larger than this (encoded) is stored as content-addressed chunks."""
STREAM_BYTES = 32 * 1024 * 1024
"""Frames and arrays with at least this many bytes of data are streamed into the save transaction."""
Chunks = Iterator[tuple[str, bytes]]



def dumps(value: Any) -> str:
    """The one JSON text form statekit stores and checksums."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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
    stream: Callable[[], Chunks] | None = None
    """For a large value: a fresh generator of its chunks (each call encodes again, so a retried
    transaction can run it anew); ``descriptor`` and ``size`` are complete once one has run to its end."""


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
    if t is int:  # huge ints cannot be written as decimal text: tagged JSON stores them in hex
        return 20 if -(10**18) < v < 10**18 else (-1 if v.bit_length() > tagged_json.BIG_INT_BITS else len(str(v)))
    size = _SCALAR_SIZE.get(t)
    if size is not None:
        return size
    return None if t is list or t is dict else -1


_utf8_ok = tagged_json.utf8_ok


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


def _streamed(name: str, make: Callable[[], tuple[dict[str, Any], Chunks]], *, unique_size: bool,
              done: Callable[[dict[str, Any], int], None] | None = None) -> EncodedItem:
    """An item whose chunks come from ``make()`` as the save writes them; a codec failure is StreamRefused."""
    item = EncodedItem(name, False)

    def run() -> Chunks:
        digests: dict[str, None] = {}
        size = 0
        try:
            desc, pieces = make()
            for digest, data in pieces:
                if not unique_size or digest not in digests:
                    size += len(data)
                digests[digest] = None
                yield digest, data
                del data
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise streaming.StreamRefused(name, str(exc)) from None
        desc["chunks"] = list(digests)
        item.descriptor, item.size = desc, size
        if done is not None:
            done(desc, size)

    item.stream = run
    return item


# ---------------------------------------------------------------- public


def encode_item(name: str, value: Any, *, allow_pickle: bool, key: Callable[[], SigningKey],
                memo: FrameMemo | None = None, stream: bool = True) -> EncodedItem:
    """Encode one named value, or raise UnserializableError naming it.

    With a ``memo``, a DataFrame or Series encoded before and provably unchanged
    since (see :mod:`statekit.memo`) is not encoded again: the item carries its
    earlier descriptor and no bytes, and the store checks the chunks are there.
    With ``stream``, a frame or array of at least STREAM_BYTES is checked here
    and encoded later, chunk by chunk, by the save transaction (``item.stream``).
    """
    t = type(value)
    if memo is not None and (t is pd.DataFrame or t is pd.Series):
        hit = memo.lookup(value)
        if hit is not None:
            return EncodedItem(name, False, descriptor=hit[0], chunks={}, size=hit[1], reused=True)
    try:
        done = None if memo is None else (lambda desc, size: memo.remember(value, desc, size))
        item = _encode(name, value, allow_pickle, key, done if stream else False)
        if memo is not None and item.stream is None and item.descriptor.get("codec") == "arrow":
            memo.remember(value, item.descriptor, item.size)
        return item
    except UnserializableError:
        raise
    except RecursionError:
        raise UnserializableError(
            f"{name!r} ({type(value).__name__}) is nested too deeply to store.",
            name=name, type_name=type(value).__name__,
        ) from None


def _encode(name: str, value: Any, allow_pickle: bool, key: Callable[[], SigningKey],
            stream: Callable[[dict[str, Any], int], None] | None | bool) -> EncodedItem:
    """``stream`` is False (encode now) or what to call once a streamed value's descriptor is complete."""
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
            prep = frames.prepare(value)
            if stream is not False and prep.data_bytes >= STREAM_BYTES:
                return _streamed(name, _frame_maker(value, prep), unique_size=True, done=stream or None)
            chunks = dict(frames.chunks_of(prep))
            desc = prep.desc
            desc["chunks"] = list(chunks)
            return EncodedItem(name, False, descriptor=desc, chunks=chunks, size=sum(map(len, chunks.values())))
        except (TypeError, ValueError, pa.ArrowException) as exc:
            reason = str(exc)
    elif t is np.ndarray:
        if value.dtype.hasobject:
            reason = "an object-dtype array needs pickle"
        elif stream is not False and value.nbytes >= STREAM_BYTES:
            array = value
            return _streamed(name, lambda: ({"codec": "npy"}, streaming.npy_chunks(array, BYTES_PER_CHUNK)),
                             unique_size=False)
        else:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value, allow_pickle=False)
            data = buf.getvalue()
            digests, chunks = _split(data)
            return EncodedItem(name, False, descriptor={"codec": "npy", "chunks": digests}, chunks=chunks, size=len(data))
    else:
        try:
            tagged = tagged_json.encode(value)
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


def _frame_maker(value: Any, prep: frames.Prepared) -> Callable[[], tuple[dict[str, Any], Chunks]]:
    """The first run uses the leaves checked at plan time; a retry prepares them from the value again."""
    first = [prep]

    def make() -> tuple[dict[str, Any], Chunks]:
        p = first.pop() if first else frames.prepare(value)
        return p.desc, frames.chunks_of(p)

    return make


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
        return frames.decode_frame(desc, read)
    if codec == "npy":
        data = read(list(desc["chunks"]))
        joined = bytearray(sum(len(data[d]) for d in desc["chunks"]))  # writable: the array is built over it
        at = 0
        for d in desc["chunks"]:
            joined[at : at + len(data[d])] = data[d]
            at += len(data[d])
        del data
        return _decode_npy(joined)
    if codec == "json":
        return json.loads(_join(desc, read))
    if codec == "xjson":
        tagged = desc["value"] if "value" in desc else json.loads(_join(desc, read))
        return tagged_json.decode(tagged)
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


def _decode_npy(data: bytearray) -> np.ndarray:
    """An .npy payload, checked before numpy reads it: known header, no objects, bytes that match the shape."""
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise IntegrityError(f"an .npy payload of unknown version {version}")
    shape, fortran, dtype = readers[version](buf)
    if dtype.hasobject:  # we never write these: only a forged payload declares one
        raise UntrustedPayloadError("refusing an .npy payload that declares Python objects (it would need pickle)")
    count = 1
    for n in shape:
        if type(n) is not int or n < 0:
            raise IntegrityError("an .npy payload declares a bad shape")
        count *= n
    if count * dtype.itemsize != len(data) - buf.tell():
        raise IntegrityError(f"an .npy payload holds {len(data) - buf.tell()} bytes of data, its header "
                             f"declares {count} x {dtype.itemsize}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def copy_value(value: Any, *, exact_only: bool = False) -> Any:
    """A copy the caller may mutate without touching ``value``.

    Frames are copied shallowly (copy-on-write makes that safe), arrays and values
    built from the types statekit stores without pickle (JSON, tagged JSON) deeply:
    those copies are exact. Any other object is deep-copied, which its class may do
    unfaithfully (a ``__deepcopy__`` that turns an int into a float); with
    ``exact_only`` such a value raises TypeError instead, so the caller can decode
    it again rather than hand out a copy that is not the value that was saved.
    """
    import copy
    import datetime as dt
    import decimal
    import uuid

    t = type(value)
    if t is pd.DataFrame or t is pd.Series:
        return value.copy(deep=False)
    if t is np.ndarray and not value.dtype.hasobject:
        return value.copy()
    atoms = (type(None), bool, int, float, complex, str, bytes, decimal.Decimal, uuid.UUID, dt.date, dt.datetime,
             dt.time, dt.timedelta, pd.Timestamp, pd.Timedelta)

    def plain(v: Any, depth: int) -> bool:
        vt = type(v)
        if vt in atoms or (isinstance(v, np.generic) and vt.__module__ == "numpy" and v.dtype.kind in "biufcmM"):
            return True
        if depth > 200:
            return False
        if vt is list or vt is tuple or vt is set or vt is frozenset:
            return all(plain(x, depth + 1) for x in v)
        if vt is dict:
            return all(plain(k, depth + 1) and plain(x, depth + 1) for k, x in v.items())
        return False

    if exact_only and not plain(value, 0):
        raise TypeError(f"a {t.__module__}.{t.__qualname__} may not deep-copy exactly")
    return copy.deepcopy(value)
