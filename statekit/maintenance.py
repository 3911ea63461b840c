"""Operating a store: ``verify``, ``last_intact`` / ``recover`` and ``purge_expired``.

**verify** runs the checks of :mod:`statekit.integrity` over the store (or one
entity) in one consistent read and returns one row per problem; empty means
healthy. See that module for what each ``problem`` means.

**last_intact / recover.** ``last_intact(entity)`` walks the branch's parent
chain from its head (then, where a parent is missing, the older versions made
on the branch) and returns the newest unexpired snapshot whose checksum and
chunks all verify. ``recover(entity)`` makes that state the new head: a new
version of kind ``recover`` whose content is the intact version's (by
reference, no bytes copied), and a ``recover`` transition whose metadata names
the damaged head (``damaged_version``, ``damaged_snapshot_id``) and the source
(``recovered_from_version``, ``recovered_from_snapshot_id``). It refuses with
ConflictError if someone moved the head meanwhile. The damaged version stays in
the history (snapshots are immutable), so ``verify()`` keeps reporting it.
``sm.rollback(entity, sm.last_intact(entity).version, reason=...)`` does the
same with a ``rollback`` record.

**purge_expired** removes snapshots whose ``expires_at <= now`` (except those retain
protects too: a tagged version, the second parent of a merge that stays, and the merge
base of any two heads left; see :mod:`statekit.removal`), their link
rows, and chunks no remaining snapshot links to (plus orphan chunks and
dangling links left by earlier damage). Entities are purged in groups, one
transaction each; on PostgreSQL each transaction locks the entity rows (so no
save on them interleaves) and then takes the purge advisory lock (so no save
reuses a chunk being deleted), the order saves take them in. No dangling
reference is left:

- a surviving child of an expired snapshot is re-pointed to its nearest
  surviving ancestor (or to none), its ``changed`` recomputed against it, and
  the EXPIRE transition of the removed parent lists it under ``reparented``;
- a branch whose head expires moves back to the head's nearest surviving
  ancestor. If none survives, ``main`` keeps its row with an empty head (the
  next save starts a new line and carries on the entity's numbering) and any
  other branch is removed. The head's EXPIRE transition records it under
  ``branches``.

One EXPIRE transition is written per removed snapshot (from_version = the
removed version, to_version empty). The entity row is kept, so version numbers
are never reused. The result has one row per removed thing, ``kind`` being
``snapshot``, ``branch`` or ``chunk``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import validate
from .db import as_utc, utcnow
from .errors import IntegrityError, InvalidArgumentError, NotFoundError
from .integrity import SqlSource, chunk_faults, consistent_read, digests_of, find_problems, problems_frame
from .models import SnapshotStatus, TransitionType
from .removal import delete_unused_chunks, guarded, lock_entities, read_rows, remove
from .repository import _damaged
from .rows import SnapshotDamage, SnapshotRow
from .snapshot import StateSnapshot

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .store import StateManager

PURGE_COLUMNS = ["kind", "entity_id", "version", "branch", "snapshot_id", "digest", "size_bytes", "expires_at"]
PURGE_GROUP = 50


def verify(sm: StateManager, entity_id: str | None = None) -> pd.DataFrame:
    """Check every checksum, chunk, link, parent and branch head; one row per problem found."""
    eid = validate.identifier(entity_id, "entity_id") if entity_id is not None else None
    started = time.perf_counter()
    problems: list[dict[str, Any]] = []
    try:
        with consistent_read(sm.db) as conn:
            if sm.db.is_sqlite:  # damaged pages first: the checks below would stop at the first one
                problems += _page_problems(sm.db.cursor(conn))
            if not problems:
                problems = find_problems(SqlSource.of_store(sm.db, conn), eid)
    except (*sm.db.driver_errors, IntegrityError) as exc:  # consistent_read maps a damaged file to IntegrityError
        if not problems:
            problems.append(_store_problem(f"the store could not be read to the end ({_first_line(exc)})"))
    sm._metrics.record("verify", time.perf_counter() - started)
    return problems_frame(problems)


def _page_problems(cur: Any) -> list[dict[str, Any]]:
    """SQLite's own check of the file's pages and indexes (quick_check), one row per finding."""
    cur.execute("PRAGMA quick_check(20)")
    found = [r[0] for r in cur.fetchall()]
    return [] if found == ["ok"] else [_store_problem(f"SQLite finds the file damaged: {f}") for f in found]


def _store_problem(detail: str) -> dict[str, Any]:
    return {"entity_id": None, "version": None, "snapshot_id": None, "problem": "store_damaged",
            "severity": "error", "detail": detail + "; restore the store from a backup"}


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]


# ================================================================ last intact version and recovery


def last_intact(sm: StateManager, entity_id: str, branch: str | None = None, *,
                include_expired: bool = False) -> StateSnapshot:
    """The newest snapshot on ``branch``'s line (head, parent, ...) whose checksum and chunks verify."""
    entity_id = validate.identifier(entity_id, "entity_id")
    b = validate.branch(branch)
    now = utcnow()
    with consistent_read(sm.db) as conn:
        src = SqlSource.of_store(sm.db, conn)
        for row in _lineage(sm, conn, entity_id, b):
            snap = row.snapshot
            if not include_expired and snap.expires_at is not None and snap.expires_at <= now:
                continue
            try:
                row.verify()
            except SnapshotDamage:
                continue
            if not chunk_faults(src, digests_of(row.items)):
                return sm._attach(snap)
    raise NotFoundError(f"{entity_id!r} has no intact version on branch {b!r}; restore it from a backup.")


def _lineage(sm: StateManager, conn: Connection, entity_id: str, branch: str) -> Iterator[SnapshotRow]:
    """The branch's head, its parent, and so on; where a parent is missing, the older versions made on the branch."""
    cur = sm.db.cursor(conn)
    head = sm._repo.branch_head(cur, entity_id, branch)
    if head is None:
        raise sm._not_found(cur, entity_id, None, branch)
    sid, below = head[0], (head[1] or 0) + 1
    while sid is not None:
        try:
            row = sm._repo.read_snapshot_by_id(cur, sid)
        except SnapshotDamage:  # an unreadable row: its parent link cannot be trusted either
            row = None
        if row is None:
            break
        yield row
        sid, below = row.snapshot.parent_snapshot_id, row.snapshot.version
    cur.execute(sm.db.sql("SELECT snapshot_id FROM state_snapshots WHERE entity_id = :e AND branch = :b "
                          "AND version < :v ORDER BY version DESC"), {"e": entity_id, "b": branch, "v": below})
    for (older,) in cur.fetchall():
        try:
            row = sm._repo.read_snapshot_by_id(cur, older)
        except SnapshotDamage:
            continue
        if row is not None:
            yield row


def recover(sm: StateManager, entity_id: str, branch: str | None = None, *, actor: str | None = None,
            reason: str | None = None) -> StateSnapshot:
    """Make the last intact version the new head of ``branch`` (a ``recover`` version and transition).

    Returns the new head; if the head is intact already, returns it and records nothing.
    """
    from .writer import DEFAULT_LIFETIME, SavePlan

    started = time.perf_counter()
    entity_id = validate.identifier(entity_id, "entity_id")
    b = validate.branch(branch)
    reason = validate.optional_text(reason, "reason")
    good = last_intact(sm, entity_id, b)
    head = sm.db.run_hot(lambda cur, _a: sm._repo.branch_head(cur, entity_id, b), write=False)
    if head is None or head[0] == good.snapshot_id:
        return good
    plan = SavePlan(
        entity_id=entity_id, branch=b, state_type=None, encoded=[],
        message=f"recover: v{head[1]} is damaged; state of v{good.version}",
        actor=validate.actor(actor) or sm.actor, metadata={}, expected_version=head[1] or 0,
        expires_in=DEFAULT_LIFETIME, status=SnapshotStatus.ACTIVE, merge=False,
        snapshot_id=uuid.uuid4().hex, transition_id=uuid.uuid4().hex,
    )
    plan.kind = TransitionType.RECOVER
    plan.reason = reason or plan.message
    plan.transition_meta = {"damaged_version": head[1], "damaged_snapshot_id": head[0],
                            "recovered_from_version": good.version, "recovered_from_snapshot_id": good.snapshot_id}

    def source(cur: Any) -> SnapshotRow:
        row = sm._repo.read_snapshot_by_id(cur, good.snapshot_id)
        if row is None:
            raise NotFoundError(f"{entity_id!r} v{good.version} disappeared (purged?); run recover() again.")
        row.verify()
        digests = digests_of(row.items)
        if digests - sm._repo.existing_digests(cur, digests):
            raise _damaged(row.snapshot, "some of its payload chunks are missing")
        return row

    plan.copy_from = source
    snap, transition = sm.db.run_hot(lambda cur, attempt: sm._write(cur, attempt, plan), write=True)
    sm._after_save(plan, snap, transition, started, record=False)
    sm._metrics.record("recover", time.perf_counter() - started)
    return snap


# ================================================================ expiry


def purge_expired(sm: StateManager, now: datetime | None = None, *, dry_run: bool = False) -> pd.DataFrame:
    """Remove snapshots expired at ``now`` (default: the current time) and what only they used.

    ``dry_run=True`` does all the work in one transaction and rolls it back:
    the result says what a purge would remove.
    """
    if now is not None and not isinstance(now, datetime):
        raise InvalidArgumentError(f"now must be a datetime, not {type(now).__name__}.")
    when = as_utc(now) or utcnow()
    started = time.perf_counter()
    db = sm.db

    def expired_entities(conn: Connection, _a: int) -> list[str]:
        cur = db.cursor(conn)
        cur.execute(db.sql("SELECT DISTINCT entity_id FROM state_snapshots WHERE expires_at IS NOT NULL "
                           "AND expires_at <= :now ORDER BY entity_id"), {"now": db.ts(when)})
        return [r[0] for r in cur.fetchall()]

    ids = db.run_read(expired_entities)
    groups = [ids[i : i + PURGE_GROUP] for i in range(0, len(ids), PURGE_GROUP)]
    records: list[dict[str, Any]] = []
    if dry_run:
        def rehearse(conn: Connection, _a: int) -> None:
            found = [r for g in groups for r in _purge_group(sm, conn, g, when)] + _sweep(sm, conn)
            raise _Rehearsal(found)

        try:
            db.run_write(rehearse)
        except _Rehearsal as done:
            records = done.records
    else:
        for g in groups:
            records += db.run_write(lambda conn, _a, g=g: _purge_group(sm, conn, g, when))
        records += db.run_write(lambda conn, _a: _sweep(sm, conn))
        sm.cache.discard({r["snapshot_id"] for r in records if r["kind"] == "snapshot"})
        sm._metrics.record("purge_expired", time.perf_counter() - started)
    frame = pd.DataFrame(records, columns=PURGE_COLUMNS)
    for c in ("version", "size_bytes"):
        frame[c] = frame[c].astype("Int64")
    frame["expires_at"] = pd.to_datetime(frame["expires_at"], utc=True)
    return frame


class _Rehearsal(Exception):
    def __init__(self, records: list[dict[str, Any]]):
        super().__init__("dry run")
        self.records = records


def _purge_group(sm: StateManager, conn: Connection, entity_ids: list[str], when: datetime) -> list[dict[str, Any]]:
    cur = sm.db.cursor(conn)
    lock_entities(sm, conn, entity_ids)
    records: list[dict[str, Any]] = []
    for e in entity_ids:
        snaps, _every = read_rows(sm, cur, e)
        expired = {sid for sid, s in snaps.items() if s[3] is not None and s[3] <= when}
        if not expired:
            continue
        gone = expired - guarded(sm, cur, e, expired, snaps)
        why = {sid: (f"expired at {snaps[sid][3]:%Y-%m-%d %H:%M:%S} UTC",
                     {"expires_at": snaps[sid][3].isoformat(), "size_bytes": snaps[sid][4]}) for sid in gone}
        records += remove(sm, cur, e, why, TransitionType.EXPIRE, sm.actor, snaps)
    return records


def _sweep(sm: StateManager, conn: Connection) -> list[dict[str, Any]]:
    """Remove link rows of missing snapshots and chunks no snapshot uses (left by damage or old bugs)."""
    db = sm.db
    cur = db.cursor(conn)
    db.lock_for_purge(conn)
    cur.execute("DELETE FROM state_snapshot_payloads WHERE NOT EXISTS "
                "(SELECT 1 FROM state_snapshots s WHERE s.snapshot_id = state_snapshot_payloads.snapshot_id)")
    cur.execute("SELECT digest FROM state_payloads c WHERE NOT EXISTS "
                "(SELECT 1 FROM state_snapshot_payloads l WHERE l.digest = c.digest)")
    return delete_unused_chunks(sm, cur, [r[0] for r in cur.fetchall()])


