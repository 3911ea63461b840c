"""A snapshot row as stored, checked before anything reads it: its checksum and the shape of every column.

**The stored checksum** (format 2, written since schema 2) is two sha256 hex
digests joined by a colon: the content hash (inline values and item
descriptors, which name every chunk by its digest) and the row hash, over every
other column that says what a snapshot is (ids, entity, version, branch,
parent, state type, times, status, kind, actor, message, metadata, names,
sizes) and the content hash. So a name removed from ``names`` or an edited
``metadata`` is damage, like a flipped byte in a value. ``StateSnapshot.checksum``
is the content hash: a rollback has the checksum of the version it restores.
``purge_expired`` rewrites the row hash of a snapshot it re-parents, after
checking the old one.

Rows written before schema 2 hold the content hash alone (format 1). They
still verify, and their other columns are checked for consistency instead:
``names`` must list exactly the values the row holds. Opening an older store
gives every format-1 row whose content hash and names verify a format-2
checksum (see ``db.py``); the others keep theirs, so verify() reports them.

Any column that cannot be read (bad JSON, an unknown kind, a text where a
number belongs, an unparsable time) is an :class:`SnapshotDamage` naming the
snapshot, never a decoder's own exception.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from .codecs import dumps
from .errors import IntegrityError
from .models import SnapshotStatus, StateType, TransitionType
from .snapshot import StateSnapshot, StateTransition

SNAPSHOT_COLUMNS = (
    "snapshot_id, entity_id, version, branch, state_type, parent_snapshot_id, parent_version, "
    "checksum, created_at, expires_at, status, kind, actor, message, metadata, names, "
    "size_bytes, new_bytes"
)
META_COLUMNS = SNAPSHOT_COLUMNS
FULL_COLUMNS = SNAPSHOT_COLUMNS + ", state_data, items"
_HEX = re.compile(r"[0-9a-f]{64}")
_V2 = re.compile(r"[0-9a-f]{64}:[0-9a-f]{64}")
ADVICE = "Load an earlier version, or use StateManager.last_intact() to find the newest good one."


def full_columns(postgres: bool) -> str:
    """FULL_COLUMNS, with PostgreSQL's json columns read as their stored text (which the checksum covers)."""
    if not postgres:
        return FULL_COLUMNS
    return FULL_COLUMNS.replace("metadata, names", "metadata::text, names::text").replace(
        "state_data, items", "state_data::text, items::text")


def state_checksum(state_text: str, items_text: str) -> str:
    """Format 1 (schema 1): sha256 over the inline values and the item descriptors only."""
    h = hashlib.sha256(state_text.encode("utf-8"))
    h.update(b"\n")
    h.update(items_text.encode("utf-8"))
    return h.hexdigest()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HEADER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def _stamp(value: datetime | None) -> int | None:
    """A time as whole microseconds since 1970 UTC: what both databases keep of it, in any time zone."""
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def row_checksum(s: StateSnapshot, metadata_text: str, names_text: str) -> str:
    """sha256 over every column that defines the snapshot; ``s.checksum`` (the content hash) stands for its values."""
    header = _HEADER.encode([
        s.snapshot_id, s.entity_id, s.version, s.branch, s.state_type.value, s.parent_snapshot_id,
        s.parent_version, _stamp(s.created_at), _stamp(s.expires_at), s.status.value, s.kind.value, s.actor,
        s.message, s.size_bytes, s.new_bytes, s.checksum,
    ])
    h = hashlib.sha256()
    for part in (header, metadata_text, names_text):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def stored_checksum(s: StateSnapshot, metadata_text: str, names_text: str) -> str:
    """Format 2, as stored: the content hash (``s.checksum``), a colon, and the row hash."""
    return f"{s.checksum}:{row_checksum(s, metadata_text, names_text)}"


class SnapshotDamage(IntegrityError):
    """A damaged snapshot row; ``problem`` is what verify() calls it (checksum_mismatch, unreadable)."""

    def __init__(self, message: str, *, problem: str, what: str = "", snapshot_id: Any = None,
                 entity_id: Any = None, version: Any = None):
        super().__init__(message, snapshot_id=snapshot_id if isinstance(snapshot_id, str) else None,
                         entity_id=entity_id if isinstance(entity_id, str) else None,
                         version=version if _is_int(version) else None)
        self.problem = problem
        self.what = what


def damaged(s: Any, what: str, problem: str = "checksum_mismatch") -> SnapshotDamage:
    """The error for snapshot ``s`` (a StateSnapshot or a raw row) being damaged in the way ``what`` says."""
    if isinstance(s, StateSnapshot):
        sid, e, v = s.snapshot_id, s.entity_id, s.version
    else:
        sid, e, v = (tuple(s) + (None,) * 3)[:3]
    return SnapshotDamage(f"Snapshot {sid} ({e!r} v{v}) is damaged: {what}. {ADVICE}",
                          problem=problem, what=what, snapshot_id=sid, entity_id=e, version=v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


def _json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) else text


def parse_time(value: Any) -> datetime:
    """A stored timestamp (naive-UTC text on SQLite, an aware datetime on PostgreSQL) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a time")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _column(row: tuple[Any, ...], name: str, value: Any, check: Any) -> Any:
    try:
        out = check(value)
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError, RecursionError) as exc:
        raise damaged(row, f"its {name} column cannot be read ({type(exc).__name__}: {str(exc)[:120]})",
                      "unreadable") from None
    return out


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise TypeError(f"{v!r} is not a non-empty text")
    return v


def _opt_str(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{v!r} is not a text")
    return v  # type: ignore[no-any-return]


def _count(v: Any, least: int = 0) -> int:
    if not _is_int(v) or v < least:
        raise ValueError(f"{v!r} is not a whole number >= {least}")
    return int(v)


def _opt_count(v: Any) -> int | None:
    return None if v is None else _count(v, 1)


def _names(text: Any) -> tuple[str, ...]:
    names = _json(text)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise TypeError("not a list of names")
    if len(set(names)) != len(names):
        raise ValueError("a name is listed twice")
    return tuple(names)


def _mapping(text: Any) -> dict[str, Any]:
    value = _json(text)
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value


_KIND_OF = {k.value: k for k in TransitionType}
_TYPE_OF = {t.value: t for t in StateType}
_STATUS_OF = {t.value: t for t in SnapshotStatus}


def snapshot_from_row(row: tuple[Any, ...]) -> StateSnapshot:
    """A StateSnapshot from a row of SNAPSHOT_COLUMNS; a column that cannot be read is SnapshotDamage.

    The common case is checked in one go; a row that fails is checked column by column, to name the column.
    """
    try:
        sid, e, v, b, t, psid, pv, checksum, created, expires = row[:10]
        size, new = row[16], row[17]
        if not (type(sid) is str and sid and type(e) is str and e and type(v) is int and v >= 1
                and type(b) is str and b and (psid is None or type(psid) is str)
                and (pv is None or (type(pv) is int and pv >= 1)) and type(checksum) is str and checksum
                and (row[12] is None or type(row[12]) is str) and (row[13] is None or type(row[13]) is str)
                and type(size) is int and size >= 0 and type(new) is int and new >= 0):
            raise TypeError
        metadata = _mapping(row[14])
        return StateSnapshot(
            snapshot_id=sid, entity_id=e, version=v, branch=b, state_type=_TYPE_OF[t], parent_snapshot_id=psid,
            parent_version=pv, checksum=checksum.split(":", 1)[0], created_at=parse_time(created),
            expires_at=None if expires is None else parse_time(expires), status=_STATUS_OF[row[10]],
            kind=_KIND_OF[row[11]], actor=row[12], message=row[13], metadata=metadata, names=_names(row[15]),
            size_bytes=size, new_bytes=new,
        )
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError, RecursionError):
        return _snapshot_from_row_slowly(row)


def _snapshot_from_row_slowly(row: tuple[Any, ...]) -> StateSnapshot:
    return StateSnapshot(
        snapshot_id=_column(row, "snapshot_id", row[0], _str),
        entity_id=_column(row, "entity_id", row[1], _str),
        version=_column(row, "version", row[2], lambda v: _count(v, 1)),
        branch=_column(row, "branch", row[3], _str),
        state_type=_column(row, "state_type", row[4], StateType),
        parent_snapshot_id=_column(row, "parent_snapshot_id", row[5], _opt_str),
        parent_version=_column(row, "parent_version", row[6], _opt_count),
        checksum=_column(row, "checksum", row[7], lambda v: _str(v).split(":", 1)[0]),
        created_at=_column(row, "created_at", row[8], parse_time),
        expires_at=_column(row, "expires_at", row[9], lambda v: None if v is None else parse_time(v)),
        status=_column(row, "status", row[10], SnapshotStatus),
        kind=_column(row, "kind", row[11], TransitionType),
        actor=_column(row, "actor", row[12], _opt_str),
        message=_column(row, "message", row[13], _opt_str),
        metadata=_column(row, "metadata", row[14], _mapping),
        names=_column(row, "names", row[15], _names),
        size_bytes=_column(row, "size_bytes", row[16], _count),
        new_bytes=_column(row, "new_bytes", row[17], _count),
    )


class SnapshotRow:
    """A snapshot's metadata plus its stored columns as text; :meth:`verify` before trusting the content."""

    __slots__ = ("snapshot", "state_text", "items_text", "metadata_text", "names_text", "stored", "_state_data",
                 "_items")

    def __init__(self, snapshot: StateSnapshot, state_text: str, items_text: str,
                 metadata_text: str | None = None, names_text: str | None = None, stored: str | None = None):
        self.snapshot = snapshot
        self.state_text = state_text
        self.items_text = items_text
        self.metadata_text = metadata_text if metadata_text is not None else dumps(snapshot.metadata)
        self.names_text = names_text if names_text is not None else dumps(list(snapshot.names))
        self.stored = stored if stored is not None else snapshot.checksum  # the checksum column as stored
        self._state_data: dict[str, Any] | None = None
        self._items: dict[str, Any] | None = None

    @classmethod
    def empty(cls, snapshot: StateSnapshot) -> SnapshotRow:
        return cls(snapshot, "{}", "{}")

    @property
    def state_data(self) -> dict[str, Any]:
        if self._state_data is None:
            self._state_data = _column(self._ids(), "state_data", self.state_text, _mapping)
        return self._state_data

    @property
    def items(self) -> dict[str, Any]:
        if self._items is None:
            self._items = _column(self._ids(), "items", self.items_text, _descriptors)
        return self._items

    def _ids(self) -> tuple[Any, ...]:
        s = self.snapshot
        return (s.snapshot_id, s.entity_id, s.version)

    @property
    def format(self) -> int:
        """2 for a content hash plus row hash, 1 for a content hash alone (schema 1), 0 for neither."""
        return 2 if _V2.fullmatch(self.stored) else 1 if _HEX.fullmatch(self.stored) else 0

    def row_intact(self) -> bool:
        """Whether a format-2 row hash matches the row's columns (the content is not read)."""
        return self.format == 2 and self.stored == stored_checksum(self.snapshot, self.metadata_text,
                                                                   self.names_text)

    def verify(self, *, deep: bool = False) -> None:
        """Raise SnapshotDamage unless the stored checksum matches and the values held match ``names``.

        A format-2 checksum covers ``names`` already, so only ``deep`` (verify()) parses the
        inline values to compare; a format-1 row is always compared.
        """
        fmt = self.format
        ok = fmt > 0 and self.snapshot.checksum == state_checksum(self.state_text, self.items_text)
        if not ok or (fmt == 2 and not self.row_intact()):
            raise damaged(self.snapshot, "its checksum does not match its content")
        if fmt == 2 and not deep:
            if not set(self.items) <= set(self.snapshot.names):
                raise damaged(self.snapshot, "its names do not list every value it holds", "unreadable")
            return
        held = [*self.state_data, *self.items]
        if len(set(held)) != len(held) or set(held) != set(self.snapshot.names):
            raise damaged(self.snapshot, "its names do not list exactly the values it holds", "unreadable")


def _descriptors(text: Any) -> dict[str, Any]:
    items = _mapping(text)
    for desc in items.values():
        if not isinstance(desc, dict):
            raise TypeError("an item descriptor is not a JSON object")
        chunks = desc.get("chunks", [])
        if not isinstance(chunks, list) or not all(isinstance(d, str) for d in chunks):
            raise TypeError("an item's chunk list is not a list of digests")
    return items


def full_from_row(row: tuple[Any, ...]) -> SnapshotRow:
    """A SnapshotRow from a row of FULL_COLUMNS."""
    snap = snapshot_from_row(row)
    texts = (row[18], row[19], row[14], row[15])
    if all(type(t) is str for t in texts):  # as stored (SQLite, or ::text on PostgreSQL)
        return SnapshotRow(snap, *texts, row[7])
    return SnapshotRow(snap, _column(row, "state_data", row[18], _text), _column(row, "items", row[19], _text),
                       _column(row, "metadata", row[14], _text), _column(row, "names", row[15], _text), row[7])


TRANSITION_COLUMNS = (
    "transition_id, entity_id, branch, transition_type, from_version, to_version, actor, reason, "
    "timestamp, from_snapshot_id, to_snapshot_id, metadata"
)


def transition_from_row(row: tuple[Any, ...]) -> StateTransition:
    """A StateTransition from a row of TRANSITION_COLUMNS; an unreadable column is an IntegrityError naming it."""

    def col(name: str, value: Any, check: Any) -> Any:
        try:
            return check(value)
        except (ValueError, TypeError, OverflowError, KeyError, AttributeError, RecursionError) as exc:
            raise IntegrityError(
                f"Transition {row[0]} of {row[1]!r} is damaged: its {name} column cannot be read "
                f"({type(exc).__name__}: {str(exc)[:120]}). The snapshots are not affected; run verify()."
            ) from None

    return StateTransition(
        transition_id=col("transition_id", row[0], _str), entity_id=col("entity_id", row[1], _str),
        branch=col("branch", row[2], _opt_str), transition_type=col("transition_type", row[3], TransitionType),
        from_version=col("from_version", row[4], _opt_count), to_version=col("to_version", row[5], _opt_count),
        actor=col("actor", row[6], _opt_str), reason=col("reason", row[7], _opt_str),
        timestamp=col("timestamp", row[8], parse_time), from_snapshot_id=col("from_snapshot_id", row[9], _opt_str),
        to_snapshot_id=col("to_snapshot_id", row[10], _opt_str), metadata=col("metadata", row[11], _mapping),
    )


_KINDS = {str(k) for k in TransitionType}
_TYPES = {str(t) for t in StateType}
_STATUSES = {str(t) for t in SnapshotStatus}


def check_meta_rows(rows: list[tuple[Any, ...]]) -> None:
    """Raise SnapshotDamage for the first row of SNAPSHOT_COLUMNS that cannot be read (history() shows the rest).

    Column by column first (history lists thousands of rows); a row is parsed whole only when a column fails.
    """
    if not rows or _columns_ok(rows):
        return
    for row in rows:
        snapshot_from_row(row)


def _columns_ok(rows: list[tuple[Any, ...]]) -> bool:
    cols = list(zip(*rows, strict=True))
    text_ok = all(isinstance(v, str) and v for i in (0, 1, 3, 7) for v in cols[i])
    ints_ok = all(type(v) is int and v >= 1 for v in cols[2]) and all(
        v is None or (type(v) is int and v >= 1) for v in cols[6]) and all(
        type(v) is int and v >= 0 for i in (16, 17) for v in cols[i])
    enums_ok = set(cols[4]) <= _TYPES and set(cols[10]) <= _STATUSES and set(cols[11]) <= _KINDS
    opt_ok = all(v is None or isinstance(v, str) for i in (5, 12, 13) for v in cols[i])
    if not (text_ok and ints_ok and enums_ok and opt_ok):
        return False
    try:
        for v in set(cols[8]) | (set(cols[9]) - {None}):
            parse_time(v)
        for text in set(cols[14]):
            _mapping(text)
        for text in set(cols[15]):
            _names(text)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return False
    return True


def check_transition_rows(rows: list[tuple[Any, ...]]) -> None:
    """Raise IntegrityError for the first row of TRANSITION_COLUMNS that cannot be read."""
    for row in rows:
        transition_from_row(row)


def branch_head(entity_id: str, branch: Any, sid: Any, version: Any) -> tuple[str | None, int | None]:
    """A branch row's head (snapshot id, version); a damaged one is an IntegrityError naming the branch."""
    if (sid is None) != (version is None) or not (sid is None or (isinstance(sid, str) and sid)) or not (
            version is None or (type(version) is int and version >= 1)):
        raise IntegrityError(
            f"Branch {branch!r} of {entity_id!r} is damaged: its head ({sid!r}, v{version!r}) cannot be read. "
            "Run verify(); recover() or a rollback on another branch gets the state back.", entity_id=entity_id)
    return sid, version


def entity_type(entity_id: str, value: Any) -> StateType:
    """An entity row's state type; a damaged one is an IntegrityError naming the entity."""
    found = _TYPE_OF.get(value) if isinstance(value, str) else None
    if found is None:
        raise IntegrityError(f"The entity row of {entity_id!r} is damaged: its state type {value!r} is not one "
                             "statekit knows. Run verify(); nothing was saved.", entity_id=entity_id)
    return found


def check_branch_rows(rows: list[tuple[Any, ...]], entity_id: str) -> None:
    """Raise IntegrityError for the first (name, head_version, base_version, head_snapshot_id, ...) row unreadable."""
    for row in rows:
        branch_head(entity_id, row[0], row[3], row[1])
        if not isinstance(row[0], str) or not (row[2] is None or (type(row[2]) is int and row[2] >= 1)):
            raise IntegrityError(f"Branch {row[0]!r} of {entity_id!r} is damaged: its row cannot be read. "
                                 "Run verify().", entity_id=entity_id)
