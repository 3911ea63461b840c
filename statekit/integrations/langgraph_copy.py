"""LangGraph's ``copy_thread`` on a statekit store: replay a thread's versions into a new thread.

Each entity of the source thread (its namespaces' checkpoints and its writes)
is read in one transaction, then its versions are saved again, in order, under
the target thread's entity ids, with the same branches, messages and actors.
Values are saved in their stored form, so payload chunks are shared with the
source, not duplicated. The replay is one transaction per version: a copy cut
short leaves a partial target thread, which ``delete_thread`` removes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ..snapshot import StateSnapshot

if TYPE_CHECKING:
    from .langgraph import StatekitSaver


def copy_thread(saver: StatekitSaver, src: str, dst: str) -> None:
    """Copy every checkpoint, branch and pending write of thread ``src`` to the new thread ``dst``."""
    rows, db = saver._rows, saver.sm.db  # noqa: SLF001 - the saver's own helpers
    if db.run_read(lambda conn, _a: rows.thread_entities(conn, saver.prefix, dst)):
        raise InvalidArgumentError(f"Thread {dst!r} already has checkpoints; copy into a new thread.")
    for entity in db.run_read(lambda conn, _a: rows.thread_entities(conn, saver.prefix, src)):
        _copy_entity(saver, entity, src, dst)


def _copy_entity(saver: StatekitSaver, entity: str, src: str, dst: str) -> None:
    rows, sm = saver._rows, saver.sm  # noqa: SLF001

    def read(conn: Any, _attempt: int) -> tuple[list[tuple[StateSnapshot, dict[str, Any]]], dict[str, int]]:
        found = rows.all_versions(conn, entity)
        return [(r.snapshot, rows.decode(conn, r)) for r in found], rows.branch_bases(conn, entity)

    versions, bases = sm.db.run_read(read)
    if not versions:
        return
    first = versions[0][0].metadata
    target = (saver.writes_entity_id(dst) if entity == saver.writes_entity_id(src)
              else saver.entity_id(dst, first.get("checkpoint_ns", "")))
    mapped: dict[int, int] = {}
    made = {"main"}
    renamed: dict[str, str] = {}
    reason = f"copied from thread {src!r}"
    for snap, state in versions:
        if snap.branch not in made:
            start = mapped.get(bases.get(snap.branch, -1))
            if start is None:  # its base was removed (prune, delete_for_runs): the nearest older copied version
                older = [v for v in mapped if v < snap.version]
                start = mapped[max(older)] if older else None
            if start is None:  # nothing copied before it: the copy's line starts on main
                renamed[snap.branch] = "main"
            else:
                sm.create_branch(target, snap.branch, start, actor=saver.actor, reason=reason)
            made.add(snap.branch)
        meta = {**snap.metadata, "thread_id": dst} if "thread_id" in snap.metadata else snap.metadata
        new = sm.save(target, state, snap.state_type, message=snap.message, actor=snap.actor, metadata=meta,
                      branch=renamed.get(snap.branch, snap.branch))
        mapped[snap.version] = new.version
    for branch, base in bases.items():  # branches that never got a version of their own
        if branch not in made and base in mapped:
            sm.create_branch(target, branch, mapped[base], actor=saver.actor, reason=reason)
