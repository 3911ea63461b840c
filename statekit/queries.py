"""Read-only listings as DataFrames (history, transitions, branches, entities); never read payloads."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from .db import DatabaseManager, utcnow
from .errors import IntegrityError
from .repository import META_COLUMNS
from .rows import check_branch_rows, check_meta_rows, check_transition_rows

HISTORY_COLUMNS = [
    "version", "branch", "parent_version", "kind", "created_at", "actor", "message", "names",
    "size_bytes", "new_bytes", "status", "state_type", "expires_at", "snapshot_id",
    "parent_snapshot_id", "checksum", "metadata",
]


def _j(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _times(frame: pd.DataFrame, *cols: str) -> pd.DataFrame:
    for c in cols:
        try:
            frame[c] = pd.to_datetime(frame[c], utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError) as exc:  # a damaged row: say so, never a parser's error
            raise IntegrityError(f"The store is damaged: a {c} value is not a time ({str(exc)[:120]}); "
                                 "run verify() to find the row.") from None
    return frame


def history(db: DatabaseManager, entity_id: str, *, branch: str | None, include_expired: bool,
            limit: int | None) -> pd.DataFrame:
    sql = f"SELECT {META_COLUMNS} FROM state_snapshots WHERE entity_id = :e"
    params: dict[str, Any] = {"e": entity_id}
    if branch is not None:
        sql += " AND branch = :b"
        params["b"] = branch
    if not include_expired:
        sql += " AND (expires_at IS NULL OR expires_at > :now)"
        params["now"] = db.ts(utcnow())
    sql += " ORDER BY version"
    if limit is not None:
        sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) AS recent ORDER BY version"
    if not db.is_sqlite:
        sql = sql.replace("metadata, names", "metadata::text, names::text", 1)

    def work(cur: Any, _a: int) -> list[tuple[Any, ...]]:
        cur.execute(db.sql(sql), params)
        return cur.fetchall()

    rows = db.run_hot(work, write=False)
    check_meta_rows(rows)  # a damaged row is an IntegrityError naming it, not a parser's exception
    cols = list(zip(*rows, strict=True)) if rows else [()] * 18
    (snapshot_id, _entity, version, branch_col, state_type, parent_id, parent_version, checksum, created_at,
     expires_at, status, kind, actor, message, metadata, names, size_bytes, new_bytes) = cols
    frame = pd.DataFrame({
        "version": pd.array(version, dtype="int64"),
        "branch": pd.array(branch_col, dtype=object),
        "parent_version": pd.array(parent_version, dtype="Int64"),
        "kind": pd.array(kind, dtype=object),
        "created_at": _utc(created_at),
        "actor": pd.array(actor, dtype=object),
        "message": pd.array(message, dtype=object),
        "names": _parsed(names, tuple),
        "size_bytes": pd.array(size_bytes, dtype="int64"),
        "new_bytes": pd.array(new_bytes, dtype="int64"),
        "status": pd.array(status, dtype=object),
        "state_type": pd.array(state_type, dtype=object),
        "expires_at": _utc(expires_at),
        "snapshot_id": pd.array(snapshot_id, dtype=object),
        "parent_snapshot_id": pd.array(parent_id, dtype=object),
        "checksum": pd.array([c.split(":", 1)[0] for c in checksum], dtype=object),  # as StateSnapshot.checksum
        "metadata": _parsed(metadata, dict),
    })
    return frame[HISTORY_COLUMNS]


def _parsed(texts: tuple[Any, ...], kind: type) -> list[Any]:
    """JSON cells parsed once per distinct text (versions mostly repeat their names and metadata)."""
    seen: dict[str, Any] = {}
    out: list[Any] = []
    for text in texts:
        if not isinstance(text, str):
            out.append(kind(text or ()))
            continue
        value = seen.get(text)
        if value is None:
            value = seen[text] = kind(json.loads(text))
        out.append(value if kind is tuple else dict(value))  # tuples are immutable; dicts are copied
    return out


def _utc(values: tuple[Any, ...]) -> pd.DatetimeIndex:
    """Timestamps from the driver (ISO text on SQLite, datetimes on PostgreSQL) as UTC."""
    return pd.DatetimeIndex(pd.to_datetime(list(values), utc=True, format="ISO8601"))


def transitions(db: DatabaseManager, entity_id: str | None) -> pd.DataFrame:
    sql = (
        "SELECT transition_id, entity_id, branch, transition_type, from_version, to_version, actor, reason, "
        "timestamp, from_snapshot_id, to_snapshot_id, metadata FROM state_transitions"
    )
    params: dict[str, Any] = {}
    if entity_id is not None:
        sql += " WHERE entity_id = :e"
        params["e"] = entity_id
    sql += " ORDER BY timestamp, to_version"

    def work(conn: Any, _a: int) -> list[tuple[Any, ...]]:
        cur = db.cursor(conn)
        cur.execute(db.sql(sql), params)
        return cur.fetchall()

    cols = ["transition_id", "entity_id", "branch", "transition_type", "from_version", "to_version", "actor",
            "reason", "timestamp", "from_snapshot_id", "to_snapshot_id", "metadata"]
    records = db.run_read(work)
    check_transition_rows(records)
    frame = pd.DataFrame.from_records(records, columns=cols)
    frame["metadata"] = [_j(v) for v in frame["metadata"]]
    for c in ("from_version", "to_version"):
        frame[c] = frame[c].astype("Int64")
    return _times(frame, "timestamp")


def branches(db: DatabaseManager, entity_id: str) -> pd.DataFrame:
    sql = ("SELECT name, head_version, base_version, head_snapshot_id, created_at FROM state_branches "
           "WHERE entity_id = :e ORDER BY created_at, name")

    def work(conn: Any, _a: int) -> list[tuple[Any, ...]]:
        cur = db.cursor(conn)
        cur.execute(db.sql(sql), {"e": entity_id})
        return cur.fetchall()

    records = db.run_read(work)
    check_branch_rows(records, entity_id)
    frame = pd.DataFrame.from_records(
        records, columns=["branch", "head_version", "base_version", "head_snapshot_id", "created_at"]
    )
    for c in ("head_version", "base_version"):
        frame[c] = frame[c].astype("Int64")
    return _times(frame, "created_at")


def entities(db: DatabaseManager) -> pd.DataFrame:
    sql = (
        "SELECT e.entity_id, e.state_type, e.last_version, COUNT(s.snapshot_id), MAX(s.created_at), e.created_at "
        "FROM state_entities e LEFT JOIN state_snapshots s ON s.entity_id = e.entity_id "
        "GROUP BY e.entity_id, e.state_type, e.last_version, e.created_at ORDER BY e.entity_id"
    )

    def work(conn: Any, _a: int) -> list[tuple[Any, ...]]:
        cur = db.cursor(conn)
        cur.execute(sql)
        return cur.fetchall()

    frame = pd.DataFrame.from_records(
        db.run_read(work),
        columns=["entity_id", "state_type", "last_version", "snapshots", "updated_at", "created_at"],
    )
    return _times(frame, "updated_at", "created_at")
