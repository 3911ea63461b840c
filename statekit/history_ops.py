"""Operations on the shape of history: branches, rollback and diff."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from uuid import uuid4  # bound once: code that patches uuid.uuid4 (tests) never shifts our ids

import pandas as pd

from . import codecs, validate
from .db import utcnow
from .diff import MISSING, diff_values, to_frame
from .errors import ConflictError, InvalidArgumentError, NotFoundError
from .integrity import SqlSource, chunk_faults
from .models import MAIN_BRANCH, SnapshotStatus, TransitionType
from .repository import SnapshotRow, _damaged
from .snapshot import StateEvent, StateSnapshot, StateTransition

if TYPE_CHECKING:
    from .store import StateManager


def create_branch(sm: StateManager, entity_id: str, name: str, from_version: int | None, *,
                  actor: str | None, reason: str | None) -> StateSnapshot:
    entity_id = validate.identifier(entity_id, "entity_id")
    name = validate.identifier(name, "branch name")
    from_version = validate.optional_version(from_version, "from_version")
    actor = validate.actor(actor) or sm.actor
    reason = validate.optional_text(reason, "reason")
    repo = sm._repo  # noqa: SLF001 - same package

    def work(cur: Any, _attempt: int) -> tuple[StateSnapshot, StateTransition]:
        if repo.branch_head(cur, entity_id, name) is not None:
            raise ConflictError(f"Entity {entity_id!r} already has a branch {name!r}.")
        _refuse_lookalike(sm, cur, entity_id, name)
        base = repo.read_snapshot(cur, entity_id, from_version, MAIN_BRANCH)
        if base is None:
            raise sm._not_found(cur, entity_id, from_version, MAIN_BRANCH)  # noqa: SLF001
        now = utcnow()
        snap = base.snapshot
        repo.set_head(cur, entity_id, name, snap.snapshot_id, snap.version, create=True, base=snap.version, now=now)
        t = StateTransition(
            transition_id=uuid4().hex, entity_id=entity_id, branch=name,
            transition_type=TransitionType.BRANCH, from_snapshot_id=snap.snapshot_id,
            to_snapshot_id=snap.snapshot_id, from_version=snap.version, to_version=snap.version,
            actor=actor, reason=reason or f"branch {name!r} from v{snap.version}", timestamp=now,
            metadata={"branch": name, "base_version": snap.version},
        )
        repo.insert_transition(cur, t)
        return sm._attach(snap), t  # noqa: SLF001

    snap, t = sm.db.run_hot(work, write=True)
    sm._notify(StateEvent(TransitionType.BRANCH, entity_id, snap.state_type, snap, t))  # noqa: SLF001
    return snap


def _refuse_lookalike(sm: StateManager, cur: Any, entity_id: str, name: str) -> None:
    """Refuse a branch whose name differs from an existing one only by case: people cannot tell them apart."""
    cur.execute(sm.db.sql("SELECT name FROM state_branches WHERE entity_id = :e"), {"e": entity_id})
    folded = name.casefold()
    for (existing,) in cur.fetchall():
        if existing != name and existing.casefold() == folded:
            raise InvalidArgumentError(
                f"Entity {entity_id!r} already has a branch {existing!r}, which differs from {name!r} only by case; "
                "choose a distinct name."
            )


def rollback(sm: StateManager, entity_id: str, version: int | None, *, reason: str | None,
             actor: str | None, branch: str | None, expected_version: int | None = None) -> StateSnapshot:
    from .writer import DEFAULT_LIFETIME, SavePlan

    started = time.perf_counter()
    entity_id = validate.identifier(entity_id, "entity_id")
    branch = validate.branch(branch)
    version = validate.optional_version(version, "version")
    reason = validate.optional_text(reason, "reason")
    plan = SavePlan(
        entity_id=entity_id, branch=branch, state_type=None, encoded=[], message=None,
        actor=validate.actor(actor) or sm.actor, metadata={},
        expected_version=validate.optional_version(expected_version, "expected_version", allow_zero=True),
        expires_in=DEFAULT_LIFETIME, status=SnapshotStatus.ACTIVE, merge=False,
        snapshot_id=uuid4().hex, transition_id=uuid4().hex,
    )
    plan.kind = TransitionType.ROLLBACK

    def source(cur: Any) -> SnapshotRow:
        target = version
        if target is None:
            head = sm._repo.read_snapshot(cur, entity_id, None, branch)  # noqa: SLF001
            target = head.snapshot.parent_version if head is not None else None
        if target is None:
            raise NotFoundError(
                f"{entity_id!r} on {branch!r} has no earlier version to roll back to; name one: rollback(..., version=N)."
            )
        row = sm._repo.read_snapshot(cur, entity_id, target, branch)  # noqa: SLF001
        if row is None:
            raise sm._not_found(cur, entity_id, target, branch)  # noqa: SLF001
        row.verify()
        # the new version shares the target's chunks: make sure every one is there and whole
        digests = {d for desc in row.items.values() for d in desc.get("chunks", ())}
        faults = chunk_faults(SqlSource(cur.connection.cursor, sm.db.sql, not sm.db.is_sqlite), digests)
        if faults:
            raise _damaged(row.snapshot, f"{len(faults)} of its payload chunks are missing or damaged")
        plan.message = f"rollback to v{target}" + (f": {reason}" if reason else "")
        plan.reason = reason or f"rollback to v{target}"
        plan.transition_meta = {"target_version": target, "target_snapshot_id": row.snapshot.snapshot_id}
        return row

    plan.copy_from = source
    snap, transition = sm.db.run_hot(lambda cur, attempt: sm._write(cur, attempt, plan), write=True)  # noqa: SLF001
    sm._after_save(plan, snap, transition, started, record=False)  # noqa: SLF001
    sm._metrics.record("rollback", time.perf_counter() - started)  # noqa: SLF001
    return snap


def diff(sm: StateManager, entity_id: str, a: int | None, b: int | None, *, branch: str | None,
         max_rows: int = 1000) -> pd.DataFrame:
    entity_id = validate.identifier(entity_id, "entity_id")
    a = validate.optional_version(a, "a")
    b = validate.optional_version(b, "b")
    br = validate.branch(branch)
    max_rows = validate.count(max_rows, "max_rows")  # type: ignore[assignment]
    repo = sm._repo  # noqa: SLF001

    def work(cur: Any, _attempt: int) -> pd.DataFrame:
        new = repo.read_snapshot(cur, entity_id, b, br)
        if new is None:
            raise sm._not_found(cur, entity_id, b, br)  # noqa: SLF001
        a_version = a if a is not None else new.snapshot.parent_version
        if a_version is None:
            old = SnapshotRow.empty(new.snapshot)  # the first version: everything is added
            old_names: tuple[str, ...] = ()
        else:
            found = repo.read_snapshot(cur, entity_id, a_version, br)
            if found is None:
                raise sm._not_found(cur, entity_id, a_version, br)  # noqa: SLF001
            found.verify()
            old, old_names = found, found.snapshot.names
        new.verify()
        rows: list[dict[str, Any]] = []
        for name in dict.fromkeys([*old_names, *new.snapshot.names]):
            in_old, in_new = name in old_names, name in new.snapshot.names
            if in_old and in_new and _stored_alike(old, new, name):
                continue
            ov = _value(sm, cur, old, name) if in_old else MISSING
            nv = _value(sm, cur, new, name) if in_new else MISSING
            rows.extend(diff_values(name, ov, nv, max_rows=max_rows))
        return to_frame(rows)

    return sm.db.run_hot(work, write=False)


def _stored_alike(old: SnapshotRow, new: SnapshotRow, name: str) -> bool:
    if name in old.state_data and name in new.state_data:
        return bool(codecs.dumps(old.state_data[name]) == codecs.dumps(new.state_data[name]))
    if name in old.items and name in new.items:
        strip = lambda d: {k: v for k, v in d.items() if k != "size"}  # noqa: E731
        return strip(old.items[name]) == strip(new.items[name])
    return False


def _value(sm: StateManager, cur: Any, row: SnapshotRow, name: str) -> Any:
    if name in row.state_data:
        return row.state_data[name]
    return codecs.decode_item(
        row.items[name],
        lambda digests: sm._repo.read_chunks(cur, digests, row.snapshot),  # noqa: SLF001
        sm._signing_key,  # noqa: SLF001
    )


def changed_names(sm: StateManager, entity_id: str, a: int, b: int, names: set[str] | None = None) -> set[str]:
    """The names (of ``names``, default all) whose stored value differs between versions ``a`` and ``b``:
    held by one only, or stored differently. Compares the stored forms only, nothing is decoded; the
    notebook uses it to tell its own changes from another writer's."""
    repo = sm._repo  # noqa: SLF001

    def work(cur: Any, _attempt: int) -> set[str]:
        rows = []
        for v in (a, b):
            row = repo.read_snapshot(cur, entity_id, v, MAIN_BRANCH)
            if row is None:
                raise sm._not_found(cur, entity_id, v, MAIN_BRANCH)  # noqa: SLF001
            row.verify()
            rows.append(row)
        old, new = rows
        wanted = set(old.snapshot.names) | set(new.snapshot.names) if names is None else set(names)
        return {n for n in wanted if (n in old.snapshot.names) != (n in new.snapshot.names)
                or (n in old.snapshot.names and not _stored_alike(old, new, n))}

    return sm.db.run_hot(work, write=False)
