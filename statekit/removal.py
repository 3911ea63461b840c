"""Removing versions from an entity's history: the one path ``retain``, ``purge_expired`` and the LangGraph
saver's deletes (``delete_thread``, ``prune``, ``delete_for_runs``) take, so each leaves the same audit trail.

:func:`remove` runs in the caller's write transaction (which holds the entity rows and the purge lock on
PostgreSQL). A surviving child of a removed version is re-pointed to its nearest surviving ancestor (its
row hash rewritten, its ``changed`` recomputed against the new parent); a branch whose head goes moves back
to the head's nearest surviving ancestor, and if none is left ``main`` keeps its row with an empty head and
another branch is removed. Link rows and chunks no remaining version uses are deleted, and one transition
per removed version records why, what was re-pointed and which branches moved. The entity row and its
earlier transitions stay, so version numbers are never reused and the history says what happened.

:func:`guarded` is the protection rule: a tagged version, the second parent of a merge that stays, and the
merge base of any two heads left (the ancestor a future merge needs) are never removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import changes
from .db import utcnow
from .integrity import placeholders
from .merge import ancestors, second_parent
from .models import MAIN_BRANCH, TransitionType
from .rows import SnapshotDamage, parse_time, stored_checksum
from .snapshot import StateTransition
from .tags import protected as tagged

if TYPE_CHECKING:
    from .store import StateManager

Snaps = dict[str, tuple[Any, ...]]
"""snapshot id -> (version, branch, parent id, expires_at, size_bytes)."""


def read_rows(sm: StateManager, cur: Any, entity_id: str) -> tuple[Snaps, set[str]]:
    """The entity's rows that can be judged, and the ids of every row (damaged ones included)."""
    cur.execute(sm.db.sql("SELECT snapshot_id, version, branch, parent_snapshot_id, expires_at, size_bytes "
                          "FROM state_snapshots WHERE entity_id = :e"), {"e": entity_id})
    raw = cur.fetchall()
    return dict(filter(None, map(_row, raw))), {r[0] for r in raw if isinstance(r[0], str)}


def _row(r: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]] | None:
    """None for a row too damaged to judge (it is never re-pointed, and kept unless removed by id)."""
    try:
        expires = None if r[4] is None else parse_time(r[4])
        if type(r[1]) is not int or not isinstance(r[0], str):
            raise TypeError("not a version")
        return r[0], (r[1], r[2], r[3], expires, int(r[5] or 0))
    except (ValueError, TypeError, OverflowError, AttributeError):
        return None


def survivor(sid: str | None, gone: set[str], snaps: Snaps) -> str | None:
    """The nearest ancestor of ``sid`` (itself included) that is not being removed."""
    seen: set[str] = set()
    while sid is not None and sid in gone and sid not in seen:
        seen.add(sid)
        sid = snaps[sid][2] if sid in snaps else None
    return sid if sid in snaps and sid not in gone else None


def heads(sm: StateManager, cur: Any, entity_id: str) -> dict[str, str | None]:
    cur.execute(sm.db.sql("SELECT name, head_snapshot_id FROM state_branches WHERE entity_id = :e"), {"e": entity_id})
    return {name: head for name, head in cur.fetchall()}


def _graph(sm: StateManager, cur: Any, entity_id: str, snaps: Snaps) -> dict[str, tuple[int, tuple[str, ...]]]:
    """snapshot id -> (version, parents) for the rows that can be judged; a merge's second parent included."""
    meta = "metadata" if sm.db.is_sqlite else "metadata::text"
    cur.execute(sm.db.sql(f"SELECT snapshot_id, {meta} FROM state_snapshots WHERE entity_id = :e AND kind = :k"),
                {"e": entity_id, "k": TransitionType.MERGE.value})
    second = {sid: p for sid, m in cur.fetchall() if (p := second_parent(m))}
    return {sid: (s[0], tuple(p for p in (s[2], second.get(sid)) if isinstance(p, str))) for sid, s in snaps.items()}


def guarded(sm: StateManager, cur: Any, entity_id: str, wanted: set[str], snaps: Snaps) -> set[str]:
    """Which of ``wanted`` must stay: tagged, a kept merge's second parent, a merge base of the heads left."""
    g = _graph(sm, cur, entity_id, snaps)
    tips = [h for h in heads(sm, cur, entity_id).values() if h]
    keep = tagged(sm, cur, entity_id) & wanted
    while True:  # keep only grows, so this ends; at the end the heads left have their bases kept
        gone = wanted - keep
        need = {p for sid, (_v, parents) in g.items() if sid not in gone for p in parents[1:]}
        left = sorted({s for s in (survivor(h, gone, snaps) for h in tips) if s})
        if len(left) > 1:
            lines = {h: ancestors(g, h) for h in left}
            for i, a in enumerate(left):
                for b in left[i + 1 :]:
                    common = lines[a] & lines[b]
                    if common:
                        need.add(max(common, key=lambda s: g[s][0]))
        grown = keep | (need & wanted)
        if grown == keep:
            return keep
        keep = grown


def reparent(sm: StateManager, cur: Any, sid: str, parent: str | None, parent_version: int | None) -> None:
    """Point ``sid`` at a new parent; a format-2 row hash (which covers the parent) is rewritten if it verified,
    and ``changed`` is recomputed against the new parent."""
    checksum = changed = None
    try:
        row = sm._repo.read_snapshot_by_id(cur, sid)
        if row is not None:
            changed = changes.for_save(cur, sm.db, parent, row.state_data, row.items)
            if row.row_intact():  # the content hash is kept: it still checks the values
                snap = replace(row.snapshot, parent_snapshot_id=parent, parent_version=parent_version)
                checksum = stored_checksum(snap, row.metadata_text, row.names_text)
    except SnapshotDamage:
        checksum = None  # damaged already: it stays damaged, and verify() keeps saying so
    sets = "parent_snapshot_id = :p, parent_version = :pv"
    params: dict[str, Any] = {"p": parent, "pv": parent_version, "s": sid}
    if checksum:
        sets, params["c"] = sets + ", checksum = :c", checksum
    if changed is not None:
        sets, params["ch"] = sets + ", changed = :ch", changed
    cur.execute(sm.db.sql(f"UPDATE state_snapshots SET {sets} WHERE snapshot_id = :s"), params)


def remove(sm: StateManager, cur: Any, entity_id: str, why: Mapping[str, tuple[str, dict[str, Any]]],
           kind: TransitionType, actor: str, snaps: Snaps | None = None) -> list[dict[str, Any]]:
    """Remove the versions ``why`` names (snapshot id -> (reason, transition metadata)) from ``entity_id``.

    Returns one record per removed snapshot, branch and chunk (as ``purge_expired`` reports them).
    """
    db, repo = sm.db, sm._repo
    every: set[str] | None = None
    if snaps is None:
        snaps, every = read_rows(sm, cur, entity_id)
    gone = {sid for sid in why if sid in snaps or (every is not None and sid in every)}
    if not gone:
        return []
    notes: dict[str, dict[str, list[Any]]] = {sid: {"reparented": [], "branches": []} for sid in gone}
    records: list[dict[str, Any]] = []
    for sid, (v, _b, parent, _x, _s) in sorted(snaps.items(), key=lambda kv: kv[1][0]):
        if sid not in gone and parent in gone:
            new = survivor(parent, gone, snaps)
            reparent(sm, cur, sid, new, snaps[new][0] if new else None)
            notes[parent]["reparented"].append({"version": v, "parent_version": snaps[new][0] if new else None})
    for name, head in heads(sm, cur, entity_id).items():
        if head not in gone:
            continue
        new = survivor(head, gone, snaps)
        note = {"branch": name, "head_version": snaps[new][0] if new else None, "removed": False}
        if new is not None or name == MAIN_BRANCH:
            cur.execute(db.sql("UPDATE state_branches SET head_snapshot_id = :s, head_version = :v "
                               "WHERE entity_id = :e AND name = :b"),
                        {"s": new, "v": note["head_version"], "e": entity_id, "b": name})
        else:
            cur.execute(db.sql("DELETE FROM state_branches WHERE entity_id = :e AND name = :b"),
                        {"e": entity_id, "b": name})
            note["removed"] = True
            records.append(record("branch", entity_id, None, name, None, None, None, None))
        notes[head]["branches"].append(note)
    ordered = sorted(gone, key=lambda s: (snaps[s][0] if s in snaps else 0, s))
    digests: set[str] = set()
    for start in range(0, len(ordered), 500):
        marks, mp = placeholders(ordered[start : start + 500])
        cur.execute(db.sql(f"SELECT DISTINCT digest FROM state_snapshot_payloads WHERE snapshot_id IN ({marks})"), mp)
        digests.update(r[0] for r in cur.fetchall())
        cur.execute(db.sql(f"DELETE FROM state_snapshot_payloads WHERE snapshot_id IN ({marks})"), mp)
        cur.execute(db.sql(f"DELETE FROM state_snapshots WHERE snapshot_id IN ({marks})"), mp)
    stamp = utcnow()
    for sid in ordered:
        v, b, _p, exp, size = snaps.get(sid, (None, None, None, None, None))
        reason, meta = why[sid]
        repo.insert_transition(cur, StateTransition(
            transition_id=uuid.uuid4().hex, entity_id=entity_id, branch=b if isinstance(b, str) else None,
            transition_type=kind, from_snapshot_id=sid, to_snapshot_id=None, from_version=v, to_version=None,
            actor=actor, reason=reason, timestamp=stamp,
            metadata={**meta, **{k: val for k, val in notes[sid].items() if val}},
        ))
        records.append(record("snapshot", entity_id, v, b, sid, None, size, exp))
    return records + delete_unused_chunks(sm, cur, sorted(digests))


def delete_unused_chunks(sm: StateManager, cur: Any, digests: list[str]) -> list[dict[str, Any]]:
    out = []
    for start in range(0, len(digests), 500):
        marks, mp = placeholders(digests[start : start + 500])
        cur.execute(sm.db.sql(f"SELECT digest, size FROM state_payloads c WHERE digest IN ({marks}) AND NOT EXISTS "
                              "(SELECT 1 FROM state_snapshot_payloads l WHERE l.digest = c.digest)"), mp)
        unused = cur.fetchall()
        if unused:
            marks, mp = placeholders([d for d, _n in unused])
            cur.execute(sm.db.sql(f"DELETE FROM state_payloads WHERE digest IN ({marks})"), mp)
            out += [record("chunk", None, None, None, None, d, int(n), None) for d, n in unused]
    return out


def record(kind: str, e: str | None, v: int | None, b: str | None, sid: str | None, digest: str | None,
           size: int | None, exp: datetime | None) -> dict[str, Any]:
    return {"kind": kind, "entity_id": e, "version": v, "branch": b, "snapshot_id": sid, "digest": digest,
            "size_bytes": size, "expires_at": exp}


def lock_entities(sm: StateManager, conn: Any, entity_ids: list[str]) -> None:
    """PostgreSQL: the entity rows, then the purge lock, in the order saves take them."""
    if sm.db.is_sqlite:
        return
    cur = sm.db.cursor(conn)
    cur.execute("SELECT entity_id FROM state_entities WHERE entity_id = ANY(%(ids)s) ORDER BY entity_id FOR UPDATE",
                {"ids": sorted(entity_ids)})
    sm.db.lock_for_purge(conn)
