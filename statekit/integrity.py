"""The integrity checks behind ``verify()`` and ``restore()``, on any SQL source with statekit's tables.

Everything runs in one consistent read (PostgreSQL: REPEATABLE READ), so a
store that others keep writing to is checked as of one moment. One row per
problem: entity_id, version, snapshot_id, problem, severity, detail.

Severity ``error`` is damage that makes a version unreadable or the history
inconsistent: a checksum that does not match (``checksum_mismatch``), chunk
bytes that do not hash to their digest (``corrupt_chunk``), a chunk that is
gone (``missing_chunk``), a descriptor digest without a link row
(``link_missing``), stored JSON that cannot be parsed (``unreadable``), a
parent or branch head that points at a missing or different snapshot
(``missing_parent``, ``parent_mismatch``, ``missing_head``, ``head_mismatch``),
a version counter behind the versions it handed out (``version_counter``), an
audit record, entity or branch row that cannot be read (``unreadable_transition``,
``unreadable_entity``, ``unreadable_branch``), a lineage whose digest does not match (``lineage_mismatch``),
a ``changed`` column that is malformed (``changed_malformed``), a merge whose second parent is
gone (``missing_merge_parent``; see :mod:`statekit.integrity_history`), a SQLite file
whose pages or indexes are damaged (``store_damaged``, from ``PRAGMA quick_check``).
``unreadable`` also covers any snapshot column that cannot be read (a kind, a
time, names, metadata) and names that do not list exactly the values held.
Severity ``warning`` is waste, not damage: chunks no snapshot uses
(``orphan_chunks``, one summary row), link rows of missing snapshots
(``dangling_links``), a link no value names (``link_extra``), a damaged chunk
nothing uses; ``purge_expired()`` removes the first two.

Memory stays flat: snapshots are read in keyset pages; chunk bytes are hashed
by the server on PostgreSQL (``sha256(data)``, no bytes cross the wire) and
streamed row by row on SQLite.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from .db import DatabaseManager
from .errors import IntegrityError
from .integrity_history import history_problems
from .rows import (
    TRANSITION_COLUMNS,
    SnapshotDamage,
    full_columns,
    full_from_row,
    parse_time,
    transition_from_row,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

PROBLEM_COLUMNS = ["entity_id", "version", "snapshot_id", "problem", "severity", "detail"]
PAGE = 200


@contextmanager
def consistent_read(db: DatabaseManager) -> Iterator[Connection]:
    """One read transaction that sees a single snapshot of the store, however long it lasts.

    SQLite's WAL read transaction already does; PostgreSQL needs REPEATABLE READ.
    """
    try:
        with db.engine.connect() as conn:
            conn.info["statekit_write"] = False
            if not db.is_sqlite:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if not db.is_sqlite:
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield conn
    except db.driver_errors as exc:  # a damaged file, a lost server: one StatekitError line
        mapped = db.user_error(exc)
        if mapped is exc:
            raise
        raise mapped from None


def stream(db: DatabaseManager, conn: Connection, text: str, params: dict[str, Any] | None = None,
           batch: int = 500) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of a query in batches, never the whole result in memory (a server-side cursor on PostgreSQL)."""
    if db.is_sqlite:
        cur = db.cursor(conn)
    else:
        cur = conn.connection.driver_connection.cursor(name=f"statekit_{uuid.uuid4().hex[:12]}")  # type: ignore[union-attr]
    try:
        cur.execute(db.sql(text), params or ({} if db.is_sqlite else None))
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


@dataclass
class SqlSource:
    """Read-only SQL over statekit's tables: a store's transaction, or a backup file (sqlite3)."""

    cursor: Callable[[], Any]
    sql: Callable[[str], str]
    postgres: bool  # json columns are read as ::text; chunks are hashed by the server, no bytes cross the wire

    @classmethod
    def of_store(cls, db: DatabaseManager, conn: Connection) -> SqlSource:
        return cls(lambda: db.cursor(conn), db.sql, not db.is_sqlite)

    def rows(self, text: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self.cursor()
        try:
            cur.execute(self.sql(text), params or {})
            return cur.fetchall()
        finally:
            cur.close()

    def each(self, text: str, params: dict[str, Any] | None = None, batch: int = 16) -> Iterator[tuple[Any, ...]]:
        """Rows one at a time, fetched lazily (used on SQLite, where the cursor steps as it goes)."""
        cur = self.cursor()
        try:
            cur.execute(self.sql(text), params or {})
            while rows := cur.fetchmany(batch):
                yield from rows
        finally:
            cur.close()

    def pages(self, columns: str, table: str, key: str, where: str = "", params: dict[str, Any] | None = None,
              size: int = PAGE) -> Iterator[list[tuple[Any, ...]]]:
        """Keyset pagination on ``key`` (the first column): bounded memory on any driver."""
        after = ""
        while True:
            cond = f"{key} > :after" + (f" AND {where}" if where else "")
            rows = self.rows(f"SELECT {columns} FROM {table} WHERE {cond} ORDER BY {key} LIMIT {size}",
                             {**(params or {}), "after": after})
            if not rows:
                return
            yield rows
            after = rows[-1][0]


def placeholders(values: list[Any], prefix: str = "p") -> tuple[str, dict[str, Any]]:
    return ", ".join(f":{prefix}{i}" for i in range(len(values))), {f"{prefix}{i}": v for i, v in enumerate(values)}


def digests_of(items: Any) -> set[str]:
    if not isinstance(items, dict) or not all(isinstance(desc, dict) for desc in items.values()):
        raise ValueError("items is not a JSON object of descriptors")
    return {d for desc in items.values() for d in (desc.get("chunks") or ()) if isinstance(d, str)}


def chunk_faults(src: SqlSource, digests: Iterable[str]) -> dict[str, str]:
    """Which of ``digests`` are missing or hold bytes that do not hash to the digest."""
    wanted = sorted(set(digests))
    faults: dict[str, str] = {}
    for start in range(0, len(wanted), 500 if src.postgres else 8):
        part = wanted[start : start + (500 if src.postgres else 8)]
        marks, params = placeholders(part)
        if src.postgres:
            found = {d: ok for d, ok in src.rows(
                f"SELECT digest, encode(sha256(data), 'hex') = digest FROM state_payloads WHERE digest IN ({marks})",
                params)}
        else:
            found = {d: hashlib.sha256(_bytes(data)).hexdigest() == d
                     for d, data in src.each(f"SELECT digest, data FROM state_payloads WHERE digest IN ({marks})", params)}
        for d in part:
            if d not in found:
                faults[d] = "missing"
            elif not found[d]:
                faults[d] = "corrupt"
    return faults


# ================================================================ the checks


def problems_frame(problems: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    frame["version"] = frame["version"].astype("Int64")
    frame["_rank"] = (frame["severity"] != "error").astype(int)
    frame = frame.sort_values(["_rank", "entity_id", "version", "problem"], na_position="last", kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)


def find_problems(src: SqlSource, entity_id: str | None = None) -> list[dict[str, Any]]:
    """All the checks, on any :class:`SqlSource` (a store, or a backup file before it is restored)."""
    out: list[dict[str, Any]] = []

    def add(e: Any, v: Any, sid: Any, problem: str, detail: str, severity: str = "error") -> None:
        if not (isinstance(v, int) and not isinstance(v, bool)) and v is not None:  # a damaged version column
            detail, v = f"{detail} (its version column holds {v!r})", None
        out.append({"entity_id": _label(e), "version": v, "snapshot_id": _label(sid), "problem": problem,
                    "severity": severity, "detail": detail})

    scope = "entity_id = :e" if entity_id is not None else ""
    s_scope = " AND s.entity_id = :e" if entity_id is not None else ""
    p = {"e": entity_id} if entity_id is not None else {}
    unlinked: dict[str, list[tuple[Any, Any, Any]]] = {}  # descriptor digests without a link row

    # 1. each snapshot's columns and checksum, and its descriptors against its link rows
    for page in src.pages(full_columns(src.postgres), "state_snapshots", "snapshot_id", scope, p):
        marks, mp = placeholders([r[0] for r in page])
        links: dict[str, set[str]] = {}
        for sid, d in src.rows(f"SELECT snapshot_id, digest FROM state_snapshot_payloads WHERE snapshot_id IN ({marks})", mp):
            links.setdefault(sid, set()).add(d)
        for raw in page:
            sid, e, v = raw[0], raw[1], raw[2]
            try:
                row = full_from_row(raw)
                row.verify(deep=True)
                wanted = digests_of(row.items)
            except SnapshotDamage as exc:
                add(e, v, sid, exc.problem, exc.what)
                if exc.problem != "unreadable":
                    continue
                try:
                    wanted = digests_of(json.loads(raw[19]) if isinstance(raw[19], str) else raw[19])
                except (ValueError, TypeError, AttributeError):
                    continue
            have = links.get(sid, set())
            for d in sorted(wanted - have):
                add(e, v, sid, "link_missing", f"chunk {d[:12]}… is named by a value but not linked")
                unlinked.setdefault(d, []).append((e, v, sid))
            for d in sorted(have - wanted):
                add(e, v, sid, "link_extra", f"chunk {d[:12]}… is linked but no value names it", "warning")

    # 2. chunks that are gone
    for sid, d, e, v in src.rows(
        "SELECT l.snapshot_id, l.digest, s.entity_id, s.version FROM state_snapshot_payloads l "
        "JOIN state_snapshots s ON s.snapshot_id = l.snapshot_id "
        f"WHERE NOT EXISTS (SELECT 1 FROM state_payloads c WHERE c.digest = l.digest){s_scope}", p):
        add(e, v, sid, "missing_chunk", f"chunk {d[:12]}… is not in the store")
    for d, fault in chunk_faults(src, unlinked).items():  # chunks named by a value but not linked
        for e, v, sid in unlinked[d]:
            if fault == "missing":
                add(e, v, sid, "missing_chunk", f"chunk {d[:12]}… is not in the store")
            else:
                add(e, v, sid, "corrupt_chunk", f"chunk {d[:12]}… does not match its digest")

    # 3. chunk bytes that do not hash to their digest
    bad = _corrupt_chunks(src, entity_id)
    seen: set[str] = set()
    ordered = sorted(bad)
    for start in range(0, len(ordered), 500):
        marks, mp = placeholders(ordered[start : start + 500])
        for sid, d, e, v in src.rows(
            "SELECT l.snapshot_id, l.digest, s.entity_id, s.version FROM state_snapshot_payloads l "
            f"JOIN state_snapshots s ON s.snapshot_id = l.snapshot_id WHERE l.digest IN ({marks}){s_scope}", {**mp, **p}):
            seen.add(d)
            add(e, v, sid, "corrupt_chunk", f"chunk {d[:12]}… {bad[d]}")
    for d in sorted(set(bad) - seen):
        add(None, None, None, "corrupt_chunk", f"unused chunk {d[:12]}… {bad[d]}", "warning")

    # 4. parents
    for sid, e, v, psid, pv, found, fe, fv in src.rows(
        "SELECT s.snapshot_id, s.entity_id, s.version, s.parent_snapshot_id, s.parent_version, "
        "p.snapshot_id, p.entity_id, p.version FROM state_snapshots s "
        "LEFT JOIN state_snapshots p ON p.snapshot_id = s.parent_snapshot_id "
        "WHERE ((s.parent_snapshot_id IS NOT NULL AND (p.snapshot_id IS NULL OR p.entity_id <> s.entity_id "
        "OR s.parent_version IS NULL OR p.version <> s.parent_version OR p.version >= s.version)) "
        f"OR (s.parent_snapshot_id IS NULL AND s.parent_version IS NOT NULL)){s_scope}", p):
        if psid is not None and found is None:
            add(e, v, sid, "missing_parent", f"its parent {psid} (v{pv}) is not in the store")
        else:
            add(e, v, sid, "parent_mismatch", f"it names parent v{pv} ({psid}) but that is {fe!r} v{fv}")

    # 5. branch heads
    b_scope = " AND b.entity_id = :e" if entity_id is not None else ""
    for e, name, hsid, hv, found, fe, fv in src.rows(
        "SELECT b.entity_id, b.name, b.head_snapshot_id, b.head_version, s.snapshot_id, s.entity_id, s.version "
        "FROM state_branches b LEFT JOIN state_snapshots s ON s.snapshot_id = b.head_snapshot_id "
        "WHERE ((b.head_snapshot_id IS NOT NULL AND (s.snapshot_id IS NULL OR s.entity_id <> b.entity_id "
        "OR b.head_version IS NULL OR s.version <> b.head_version)) "
        f"OR (b.head_snapshot_id IS NULL AND b.head_version IS NOT NULL)){b_scope}", p):
        if hsid is not None and found is None:
            add(e, hv, hsid, "missing_head", f"branch {name!r} points at v{hv} ({hsid}), which is not in the store")
        else:
            add(e, hv, hsid, "head_mismatch", f"branch {name!r} names v{hv} ({hsid}) but that is {fe!r} v{fv}")

    # 6. version counters (a counter behind its versions would make the next save collide)
    for e, top, last in src.rows(
        "SELECT s.entity_id, MAX(s.version), MAX(n.last_version) FROM state_snapshots s "
        f"LEFT JOIN state_entities n ON n.entity_id = s.entity_id WHERE 1 = 1{s_scope} GROUP BY s.entity_id", p):
        if not isinstance(top, int):
            continue  # a damaged version column: reported with its snapshot above
        if not isinstance(last, int) or last < top:
            add(e, None, None, "version_counter", f"the entity row says last_version={last} but v{top} exists")

    # 7. audit records that cannot be read (transitions() would refuse them)
    for page in src.pages(TRANSITION_COLUMNS.replace("metadata", "metadata::text" if src.postgres else "metadata"),
                          "state_transitions", "transition_id", scope, p):
        for raw in page:
            try:
                transition_from_row(raw)
            except IntegrityError as exc:
                add(raw[1], None, None, "unreadable_transition", str(exc).split(" is damaged: ", 1)[-1])

    # 8. entity and branch rows that cannot be read (entities() and branches() would refuse them)
    for table, cols in (("state_entities", "entity_id, entity_id, created_at, last_version"),
                        ("state_branches", "entity_id, name, created_at, head_version")):
        for e, name, created, number in src.rows(f"SELECT {cols} FROM {table}" + (f" WHERE {scope}" if scope else ""),
                                                 p):
            try:
                parse_time(created)
                if number is not None and not (isinstance(number, int) and number >= 0):
                    raise ValueError(f"{number!r} is not a version")
            except (ValueError, TypeError, OverflowError) as exc:
                what = "entity row" if table == "state_entities" else f"branch {name!r}"
                add(e, None, None, "unreadable_" + ("entity" if table == "state_entities" else "branch"),
                    f"its {what} cannot be read ({exc})")

    # 9. lineage, changed, and merges' second parents
    history_problems(src, entity_id, add)

    # 10. waste (store-wide only)
    if entity_id is None:
        n, size = src.rows("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM state_payloads c WHERE NOT EXISTS "
                           "(SELECT 1 FROM state_snapshot_payloads l WHERE l.digest = c.digest)")[0]
        if n:
            add(None, None, None, "orphan_chunks",
                f"{n} chunks ({int(size)} bytes) are used by no snapshot; purge_expired() removes them", "warning")
        for sid, n in src.rows("SELECT l.snapshot_id, COUNT(*) FROM state_snapshot_payloads l WHERE NOT EXISTS "
                               "(SELECT 1 FROM state_snapshots s WHERE s.snapshot_id = l.snapshot_id) "
                               "GROUP BY l.snapshot_id"):
            add(None, None, sid, "dangling_links", f"{n} link rows name this missing snapshot", "warning")
    return out


def _bytes(data: Any) -> bytes:
    """A chunk's stored bytes; a damaged row holding text or a number has none (and fails its digest)."""
    return bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"\x00not bytes"


def _label(value: Any) -> str | None:
    """An id column as text, whatever a damaged row holds."""
    return value if value is None or isinstance(value, str) else repr(value)


def _corrupt_chunks(src: SqlSource, entity_id: str | None) -> dict[str, str]:
    where = ("digest IN (SELECT l.digest FROM state_snapshot_payloads l JOIN state_snapshots s "
             "ON s.snapshot_id = l.snapshot_id WHERE s.entity_id = :e)") if entity_id is not None else "1 = 1"
    p = {"e": entity_id} if entity_id is not None else {}
    bad: dict[str, str] = {}
    if src.postgres:
        for d, size, length, ok in src.rows(
            "SELECT digest, size, length(data), encode(sha256(data), 'hex') = digest FROM state_payloads "
            f"WHERE {where} AND (size <> length(data) OR encode(sha256(data), 'hex') <> digest)", p):
            bad[d] = "does not match its digest" if not ok else f"is {length} bytes, not {size}"
        return bad
    for d, size, data in src.each(f"SELECT digest, size, data FROM state_payloads WHERE {where}", p):
        data = _bytes(data)
        if hashlib.sha256(data).hexdigest() != d:
            bad[d] = "does not match its digest"
        elif len(data) != size:
            bad[d] = f"is {len(data)} bytes, not {size}"
    return bad
