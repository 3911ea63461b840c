"""Previews of a stored version that read only what they show.

``statekit show`` prints each value's type, a frame's shape and dtypes and its
first rows. A frame is stored as Arrow chunks of 65,536 rows per column, so its
head needs only the schema and the first chunk of each column: a 100 MB frame
is previewed by reading a few MB. An ndarray's shape and dtype are in the
``.npy`` header at the start of its first chunk. Other values are small enough
to decode whole. Every chunk read is checked against its digest, and the
snapshot's checksum is verified, exactly as a full load does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import codecs, validate
from .chunk_groups import ROWS_PER_CHUNK
from .errors import IntegrityError, NotFoundError, UntrustedPayloadError
from .snapshot import StateSnapshot
from .writer import alive

if TYPE_CHECKING:
    from .store import StateManager

HEAD_ROWS = 5


@dataclass
class Preview:
    """What a preview shows of one value: its type, and either the value or (for big ones) a part of it."""

    type_name: str
    value: Any = None  # the whole value (small values)
    shape: tuple[int, ...] | None = None  # frames, series and arrays
    dtypes: list[tuple[Any, str]] | None = None  # (column, dtype) for frames; (name, dtype) for series, arrays
    head: Any = None  # the first rows (frames, series) or elements (arrays)
    partial: bool = False  # True when ``head`` holds only part of the value


def preview(sm: StateManager, entity_id: str, version: int | None = None, *, branch: str | None = None,
            include_expired: bool = False, rows: int = HEAD_ROWS) -> tuple[StateSnapshot, dict[str, Preview]]:
    """The snapshot's metadata and a preview of each of its values, reading only the chunks the previews need."""
    entity_id = validate.identifier(entity_id, "entity_id")
    version = validate.optional_version(version, "version")
    b = validate.branch(branch)
    rows = validate.count(rows, "rows")  # type: ignore[assignment]
    repo = sm._repo  # noqa: SLF001 - same package

    def work(cur: Any, _a: int) -> tuple[StateSnapshot, dict[str, Preview]]:
        row = repo.read_snapshot(cur, entity_id, version, b)
        if row is None:
            raise sm._not_found(cur, entity_id, version, b)  # noqa: SLF001
        snap = row.snapshot
        if not include_expired and not alive(snap):
            raise NotFoundError(f"{entity_id!r} v{snap.version} has expired; pass --include-expired to see it.")
        row.verify()

        def read(digests: list[str]) -> dict[str, bytes]:
            return repo.read_chunks(cur, digests, snap)

        out: dict[str, Preview] = {}
        for name in snap.names:
            try:
                out[name] = _one(row, name, read, sm, rows)
            except IntegrityError as exc:
                if exc.snapshot_id is None:
                    raise IntegrityError(
                        f"Snapshot {snap.snapshot_id} ({snap.entity_id!r} v{snap.version}), value {name!r}: {exc}",
                        snapshot_id=snap.snapshot_id, entity_id=snap.entity_id, version=snap.version,
                    ) from None
                raise
        return sm._attach(snap), out  # noqa: SLF001

    return sm.db.run_hot(work, write=False)


def _one(row: Any, name: str, read: Callable[[list[str]], dict[str, bytes]], sm: StateManager,
         rows: int) -> Preview:
    if name in row.state_data:
        value = row.state_data[name]
        return Preview(type(value).__name__, value=value)
    desc = row.items.get(name)
    if not isinstance(desc, dict):
        raise IntegrityError(f"value {name!r} has no descriptor")
    codec = desc.get("codec")
    if codec == "arrow":
        return _frame(desc, read, sm, rows)
    if codec == "npy":
        return _array(desc, read, rows)
    value = codecs.decode_item(desc, read, sm._signing_key)  # noqa: SLF001
    return of_value(value, rows)


def of_value(value: Any, rows: int = HEAD_ROWS) -> Preview:
    """The preview of a value already in memory (e.g. a pickled frame, which decodes only whole)."""
    if isinstance(value, pd.DataFrame):
        dtypes = [(c, str(t)) for c, t in zip(value.columns, value.dtypes, strict=True)]
        return Preview("DataFrame", shape=value.shape, dtypes=dtypes, head=value.head(rows), partial=len(value) > rows)
    if isinstance(value, pd.Series):
        return Preview("Series", shape=value.shape, dtypes=[(value.name, str(value.dtype))], head=value.head(rows),
                       partial=len(value) > rows)
    if isinstance(value, np.ndarray):
        head = value.reshape(-1)[:rows] if not value.dtype.hasobject else np.empty(0)
        return Preview("ndarray", shape=value.shape, dtypes=[(None, str(value.dtype))], head=head,
                       partial=value.size > len(head))
    return Preview(type(value).__name__, value=value)


def _frame(desc: dict[str, Any], read: Callable[[list[str]], dict[str, bytes]], sm: StateManager,
           rows: int) -> Preview:
    """A frame's head from the first chunk of each column (the first 65,536 rows at most)."""
    if desc.get("format") is not None:
        return _frame_grouped(desc, read, sm, rows)
    columns = desc.get("columns")
    total = desc.get("rows")
    if not isinstance(columns, list) or not all(isinstance(c, list) for c in columns) or type(total) is not int:
        raise IntegrityError("a frame descriptor is malformed")
    first = [c[:1] for c in columns]
    part = {**desc, "columns": first, "rows": min(total, ROWS_PER_CHUNK),
            "chunks": [desc.get("schema"), *[d for c in first for d in c]]}
    try:
        head = codecs.decode_item(part, read, sm._signing_key)  # noqa: SLF001
    except IntegrityError:  # a layout the head reader does not know: decode it all (damage then raises)
        head = codecs.decode_item(desc, read, sm._signing_key)  # noqa: SLF001
    if not isinstance(head, (pd.DataFrame, pd.Series)):
        raise IntegrityError("a frame descriptor does not describe a frame")
    head = _range_index(head, read([desc["schema"]])[desc["schema"]])
    n = total if total >= 0 else len(head)
    if isinstance(head, pd.Series):
        return Preview("Series", shape=(n,), dtypes=[(head.name, str(head.dtype))], head=head.head(rows),
                       partial=n > rows)
    dtypes = [(c, str(t)) for c, t in zip(head.columns, head.dtypes, strict=True)]
    return Preview("DataFrame", shape=(n, head.shape[1]), dtypes=dtypes, head=head.head(rows), partial=n > rows)


def _frame_grouped(desc: dict[str, Any], read: Callable[[list[str]], dict[str, bytes]], sm: StateManager,
                   rows: int) -> Preview:
    """The head of a frame stored in chunk groups: the first chunk of every group whose leaves run along the rows.

    Leaves of other lengths (categories, column labels) are read whole. Anything the cut does not
    decode (an unusual layout, or damage) falls back to decoding the whole value, which checks everything.
    """
    total, groups, spec = desc.get("rows"), desc.get("groups"), desc.get("spec")
    if type(total) is not int or not isinstance(groups, list) or not isinstance(spec, dict):
        raise IntegrityError("a frame descriptor is malformed")
    head_rows = min(total, ROWS_PER_CHUNK)
    cut = []
    for group in groups:
        if isinstance(group, list) and len(group) == 4 and group[2] == total and isinstance(group[3], list):
            group = [group[0], group[1], head_rows, group[3][:1]]
        cut.append(group)
    index = spec.get("index")
    if isinstance(index, dict) and index.get("t") == "range" and all(
            type(index.get(k)) is int for k in ("start", "stop", "step")) and index["step"]:
        index = {**index, "stop": index["start"] + index["step"] * head_rows}
    part = {**desc, "rows": head_rows, "groups": cut, "spec": {**spec, "index": index}}
    try:
        head = codecs.decode_item(part, read, sm._signing_key)  # noqa: SLF001
    except IntegrityError:
        head = codecs.decode_item(desc, read, sm._signing_key)  # noqa: SLF001
    if not isinstance(head, (pd.DataFrame, pd.Series)):
        raise IntegrityError("a frame descriptor does not describe a frame")
    if isinstance(head, pd.Series):
        return Preview("Series", shape=(total,), dtypes=[(head.name, str(head.dtype))], head=head.head(rows),
                       partial=total > rows)
    dtypes = [(c, str(t)) for c, t in zip(head.columns, head.dtypes, strict=True)]
    return Preview("DataFrame", shape=(total, head.shape[1]), dtypes=dtypes, head=head.head(rows),
                   partial=total > rows)


def _range_index(head: Any, schema_bytes: bytes) -> Any:
    """Arrow rebuilds a stored RangeIndex only when every row is there: rebuild it for the head too."""
    try:
        meta = pa.ipc.read_schema(pa.py_buffer(schema_bytes)).pandas_metadata or {}
        (spec,) = meta.get("index_columns", [None])
        if isinstance(spec, dict) and spec.get("kind") == "range":
            start, step = int(spec["start"]), int(spec["step"])
            head = head.copy(deep=False)
            head.index = pd.RangeIndex(start, start + step * len(head), step, name=spec.get("name"))
    except (ValueError, TypeError, KeyError, pa.ArrowException):
        pass  # the head keeps the index Arrow gave it; the full load checks the rest
    return head


def _array(desc: dict[str, Any], read: Callable[[list[str]], dict[str, bytes]], rows: int) -> Preview:
    """An ndarray's shape and dtype from the .npy header in its first chunk, and its first elements."""
    chunks = desc.get("chunks")
    if not isinstance(chunks, list) or not chunks:
        raise IntegrityError("an array descriptor is malformed")
    data = read(chunks[:1])[chunks[0]]
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in header:
            raise ValueError(f".npy version {version}")
        shape, fortran, dtype = header[version](buf)
    except (ValueError, TypeError, OverflowError, SyntaxError) as exc:
        raise IntegrityError(f"an .npy header does not decode ({exc})") from None
    if dtype.hasobject:
        raise UntrustedPayloadError("refusing an .npy payload that declares Python objects (it would need pickle)")
    offset = buf.tell()
    count = 1
    for dim in shape:
        count *= int(dim)
    take = min(count, rows) if not fortran or len(shape) <= 1 else 0
    if dtype.itemsize == 0:
        take = 0
    available = (len(data) - offset) // dtype.itemsize if dtype.itemsize else 0
    take = min(take, available)
    head = np.frombuffer(data, dtype=dtype, count=take, offset=offset) if take else np.empty(0, dtype=dtype)
    return Preview("ndarray", shape=tuple(int(d) for d in shape), dtypes=[(None, str(dtype))], head=head,
                   partial=count > take)
