"""LangGraph's deletes on a statekit store: ``delete_thread``, ``prune`` and ``delete_for_runs``.

Each picks the checkpoint versions (and the pending-writes versions recorded for them) to remove, then
removes them through the core's :func:`statekit.removal.remove`, in one write transaction: surviving
checkpoints are re-pointed to their nearest surviving ancestor, branches move back or go, chunks no
remaining version uses are deleted, and a ``retain`` transition per removed version says which call
removed it. The entity rows and their transitions stay (version numbers are never reused), so the store's
history tells who deleted what; a deleted thread can be written again and carries on its numbering.

``prune(strategy="keep_latest")`` keeps, in each namespace, the newest checkpoint (by checkpoint id, as
``list`` orders them) and the writes recorded for it; ``"delete"`` removes the threads. LangGraph's
``DeltaChannel`` needs no ancestors here: every statekit version holds its channels whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ..models import TransitionType
from ..removal import lock_entities, remove
from .langgraph_rows import WRITES_SUFFIX, _like_prefix, writes_entity

if TYPE_CHECKING:
    from .langgraph import StatekitSaver

Plan = dict[str, dict[str, tuple[str, dict[str, Any]]]]
"""entity id -> snapshot id -> (reason, transition metadata)."""
STRATEGIES = ("keep_latest", "delete")


def _rows(saver: StatekitSaver, cur: Any, entities: Sequence[str]) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(snapshot_id, entity_id, version, metadata) of every version of these entities, damaged metadata as {}."""
    if not entities:
        return []
    db = saver.sm.db
    marks = ", ".join(f":e{i}" for i in range(len(entities)))
    meta = "metadata" if db.is_sqlite else "metadata::text"
    cur.execute(db.sql(f"SELECT snapshot_id, entity_id, version, {meta} FROM state_snapshots "
                       f"WHERE entity_id IN ({marks})"), {f"e{i}": e for i, e in enumerate(entities)})
    return [(sid, eid, v, _meta(m)) for sid, eid, v, m in cur.fetchall()]


def _meta(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _threads(saver: StatekitSaver, cur: Any, thread_ids: Iterable[str]) -> dict[str, list[str]]:
    return {t: saver._rows.thread_entities(cur, saver.prefix, t) for t in dict.fromkeys(map(str, thread_ids))}


def _run(saver: StatekitSaver, choose: Callable[[Any], Plan]) -> None:
    """Choose, lock the entities, choose again (what others saved meanwhile counts), remove; one transaction."""
    sm = saver.sm

    def work(conn: Any, _attempt: int) -> tuple[list[str], set[str]]:
        cur = sm.db.cursor(conn)
        first = choose(cur)
        if not first:
            return [], set()
        lock_entities(sm, conn, sorted(first))
        plan = choose(cur)
        removed: set[str] = set()
        for entity in sorted(plan):
            records = remove(sm, cur, entity, plan[entity], TransitionType.RETAIN, saver.actor)
            removed.update(r["snapshot_id"] for r in records if r["kind"] == "snapshot")
        return sorted(set(first) | set(plan)), removed

    entities, removed = sm.db.run_write(work)
    sm.cache.discard(removed)
    saver._forget(entities)


def delete_threads(saver: StatekitSaver, thread_ids: Iterable[str], call: str = "delete_thread") -> None:
    """Remove every checkpoint and write of these threads, in every namespace."""
    ids = [str(t) for t in thread_ids]

    def choose(cur: Any) -> Plan:
        plan: Plan = {}
        for tid, entities in _threads(saver, cur, ids).items():
            why = (f"LangGraph {call}({tid!r})", {"langgraph": call, "thread_id": tid})
            for sid, eid, _v, _m in _rows(saver, cur, entities):
                plan.setdefault(eid, {})[sid] = why
        return plan

    _run(saver, choose)


def prune(saver: StatekitSaver, thread_ids: Sequence[str], strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"prune strategy must be one of {', '.join(map(repr, STRATEGIES))}, "
                                   f"not {strategy!r}.")
    if isinstance(thread_ids, (str, bytes)):
        raise InvalidArgumentError("prune takes a list of thread ids, not one string.")
    if strategy == "delete":
        delete_threads(saver, thread_ids, "prune")
        return
    ids = [str(t) for t in thread_ids]

    def choose(cur: Any) -> Plan:
        plan: Plan = {}
        for tid, entities in _threads(saver, cur, ids).items():
            why = (f"LangGraph prune({tid!r}, strategy='keep_latest')",
                   {"langgraph": "prune", "thread_id": tid, "strategy": strategy})
            rows = _rows(saver, cur, entities)
            latest: dict[str, tuple[str, int, str, Any]] = {}  # entity -> (checkpoint id, version, id, namespace)
            for sid, eid, v, m in rows:
                if eid.endswith(WRITES_SUFFIX) or "langgraph" not in m or not isinstance(m.get("checkpoint_id"), str):
                    continue
                if eid not in latest or (m["checkpoint_id"], v) > latest[eid][:2]:
                    latest[eid] = (m["checkpoint_id"], v, sid, m.get("checkpoint_ns", ""))
            kept_sids = {k[2] for k in latest.values()}
            kept = {(k[3], k[0]) for k in latest.values()}
            for sid, eid, _v, m in rows:
                if eid.endswith(WRITES_SUFFIX):
                    if (m.get("checkpoint_ns", ""), m.get("checkpoint_id")) in kept:
                        continue
                elif sid in kept_sids:
                    continue
                plan.setdefault(eid, {})[sid] = why
        return plan

    _run(saver, choose)


def delete_for_runs(saver: StatekitSaver, run_ids: Sequence[str]) -> None:
    """Remove the checkpoints whose metadata names one of ``run_ids``, and the writes recorded for them."""
    if isinstance(run_ids, (str, bytes)):
        raise InvalidArgumentError("delete_for_runs takes a list of run ids, not one string.")
    runs = sorted({str(r) for r in run_ids})
    if not runs:
        return
    db = saver.sm.db
    run_of = ("json_extract(metadata, '$.langgraph.run_id')" if db.is_sqlite
              else "(metadata -> 'langgraph' ->> 'run_id')")
    meta = "metadata" if db.is_sqlite else "metadata::text"

    def choose(cur: Any) -> Plan:
        plan: Plan = {}
        doomed: dict[str, set[tuple[str, str]]] = {}  # thread id -> (namespace, checkpoint id)
        for start in range(0, len(runs), 200):
            part = runs[start : start + 200]
            marks = ", ".join(f":r{i}" for i in range(len(part)))
            cur.execute(db.sql(f"SELECT snapshot_id, entity_id, {meta} FROM state_snapshots "
                               f"WHERE entity_id LIKE :p ESCAPE '\\' AND {run_of} IN ({marks})"),
                        {"p": _like_prefix(f"{saver.prefix}:"), **{f"r{i}": r for i, r in enumerate(part)}})
            for sid, eid, text in cur.fetchall():
                m = _meta(text)
                if eid.endswith(WRITES_SUFFIX) or "langgraph" not in m:
                    continue
                run = str(m["langgraph"].get("run_id"))
                plan.setdefault(eid, {})[sid] = (f"LangGraph delete_for_runs (run {run})",
                                                 {"langgraph": "delete_for_runs", "run_id": run})
                tid = str(m.get("thread_id"))
                doomed.setdefault(tid, set()).add((m.get("checkpoint_ns", ""), m.get("checkpoint_id")))
        for tid, pairs in doomed.items():
            for sid, eid, _v, m in _rows(saver, cur, [writes_entity(saver.prefix, tid)]):
                if (m.get("checkpoint_ns", ""), m.get("checkpoint_id")) in pairs:
                    plan.setdefault(eid, {})[sid] = ("LangGraph delete_for_runs: writes of a removed checkpoint",
                                                     {"langgraph": "delete_for_runs",
                                                      "checkpoint_id": m.get("checkpoint_id")})
        return plan

    _run(saver, choose)
