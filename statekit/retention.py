"""Retention: remove old versions by policy, with a plan first (``dry_run=True``, the default).

Rules, for each entity: ``keep_last=N`` keeps the N newest versions, ``keep_within`` (a timedelta,
seconds, or a text such as ``"7d"``, ``"12h"``) keeps those made that recently, ``keep_daily=N``
keeps the newest version of each of the last N days that have versions (UTC). Given any of them, a
version none of them keeps is removed. ``max_bytes`` then removes the oldest remaining versions until
what the entity occupies (its rows and the chunks only it uses, shared chunks counted once) fits.

Never removed: a branch head, a tagged version, the second parent of a merge, and the merge base of
any two branch heads (the ancestor a future merge needs). The removal is :func:`statekit.removal.remove`,
as for ``purge_expired``: a removed version's children are re-pointed to its nearest surviving ancestor
(their row hash rewritten and their ``changed`` recomputed), chunks no remaining version uses are deleted, and a ``retain``
transition records each removal (why, and the bytes freed).

The plan has one row per version removed: entity_id, version, branch, snapshot_id, created_at,
reason and bytes_freed: its row's inline JSON plus the chunks whose last user it is, so the column
sums to what the removal frees, each shared chunk counted once. The dry run is the removal itself,
rolled back, so it is exactly what ``dry_run=False`` would do at that moment.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import validate
from .db import as_utc, utcnow
from .errors import InvalidArgumentError, NotFoundError
from .integrity import placeholders
from .merge import graph, merge_base
from .models import TransitionType
from .removal import lock_entities, remove
from .tags import protected as tagged

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .store import StateManager

PLAN_COLUMNS = ["entity_id", "version", "branch", "snapshot_id", "created_at", "reason", "bytes_freed"]
GROUP = 50
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _span(value: Any) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        out = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out = timedelta(seconds=float(value))
    elif isinstance(value, str) and _SPAN.fullmatch(value):
        m = _SPAN.fullmatch(value)
        assert m is not None
        out = timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    else:
        raise InvalidArgumentError(f"keep_within must be a timedelta, seconds or a text like '7d', not {value!r}.")
    if out < timedelta(0):
        raise InvalidArgumentError("keep_within must not be negative.")
    return out


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{what} must be a whole number >= 0, not {value!r}.")
    return value


class _Policy:
    def __init__(self, keep_last: Any, keep_within: Any, keep_daily: Any, max_bytes: Any):
        self.keep_last = _count(keep_last, "keep_last")
        self.keep_within = _span(keep_within)
        self.keep_daily = _count(keep_daily, "keep_daily")
        self.max_bytes = _count(max_bytes, "max_bytes")
        self.rules = {k: v for k, v in (("keep_last", keep_last), ("keep_within", keep_within),
                                        ("keep_daily", keep_daily)) if v is not None}
        if not self.rules and self.max_bytes is None:
            raise InvalidArgumentError("retain() needs a rule: keep_last, keep_within, keep_daily or max_bytes.")

    def kept(self, snaps: dict[str, dict[str, Any]], now: datetime) -> set[str]:
        order = sorted(snaps, key=lambda s: snaps[s]["version"], reverse=True)
        keep: set[str] = set()
        if self.keep_last is not None:
            keep.update(order[: self.keep_last])
        if self.keep_within is not None:
            keep.update(s for s in order if snaps[s]["created_at"] >= now - self.keep_within)
        if self.keep_daily is not None:
            days: dict[Any, str] = {}
            for s in order:  # newest first: the first seen of a day is its newest
                days.setdefault(snaps[s]["created_at"].date(), s)
            keep.update(list(days.values())[: self.keep_daily])
        return keep

    def why(self) -> str:
        return "not kept by " + ", ".join(f"{k}={v!r}" for k, v in self.rules.items())


def _entity_rows(sm: StateManager, cur: Any, entity_id: str) -> dict[str, dict[str, Any]]:
    db = sm.db
    size = "length(CAST(state_data AS BLOB))" if db.is_sqlite else "octet_length(state_data::text)"
    cur.execute(db.sql(f"SELECT snapshot_id, version, branch, parent_snapshot_id, created_at, {size} "
                       "FROM state_snapshots WHERE entity_id = :e"), {"e": entity_id})
    return {sid: {"version": int(v), "branch": b, "parent": p, "created_at": as_utc(c), "row_bytes": int(n or 0)}
            for sid, v, b, p, c, n in cur.fetchall()}


def _protected(sm: StateManager, cur: Any, entity_id: str) -> set[str]:
    """Heads, tagged versions, second parents of merges, and merge bases of every two heads."""
    cur.execute(sm.db.sql("SELECT head_snapshot_id FROM state_branches WHERE entity_id = :e"), {"e": entity_id})
    heads = sorted({r[0] for r in cur.fetchall() if r[0]})
    keep = set(heads) | tagged(sm, cur, entity_id)
    g = graph(sm, cur, entity_id)
    for parents in g.values():
        keep.update(parents[1:])
    for i, a in enumerate(heads):
        for b in heads[i + 1 :]:
            base = merge_base(g, a, b)
            if base:
                keep.add(base)
    return keep


def _chunks(sm: StateManager, cur: Any, sids: list[str]) -> tuple[dict[str, set[str]], dict[str, int], dict[str, int]]:
    """Per snapshot its digests; per digest its size and how many snapshots (store-wide) use it."""
    db = sm.db
    uses: dict[str, set[str]] = {s: set() for s in sids}
    for start in range(0, len(sids), 500):
        marks, mp = placeholders(sids[start : start + 500])
        cur.execute(db.sql(f"SELECT snapshot_id, digest FROM state_snapshot_payloads WHERE snapshot_id IN ({marks})"),
                    mp)
        for sid, d in cur.fetchall():
            uses[sid].add(d)
    digests = sorted({d for ds in uses.values() for d in ds})
    size: dict[str, int] = {}
    refs: dict[str, int] = {}
    for start in range(0, len(digests), 500):
        marks, mp = placeholders(digests[start : start + 500])
        cur.execute(db.sql(f"SELECT digest, size FROM state_payloads WHERE digest IN ({marks})"), mp)
        size.update({d: int(n) for d, n in cur.fetchall()})
        cur.execute(db.sql(f"SELECT digest, COUNT(*) FROM state_snapshot_payloads WHERE digest IN ({marks}) "
                           "GROUP BY digest"), mp)
        refs.update({d: int(n) for d, n in cur.fetchall()})
    return uses, size, refs


def _plan_entity(sm: StateManager, cur: Any, entity_id: str, policy: _Policy, now: datetime) -> list[dict[str, Any]]:
    snaps = _entity_rows(sm, cur, entity_id)
    if not snaps:
        return []
    safe = _protected(sm, cur, entity_id)
    uses, size, refs = _chunks(sm, cur, sorted(snaps))
    refs = dict(refs)
    oldest_first = sorted(snaps, key=lambda s: snaps[s]["version"])
    plan: list[dict[str, Any]] = []

    def remove(sid: str, reason: str) -> None:
        freed = snaps[sid]["row_bytes"]
        for d in sorted(uses[sid]):
            refs[d] -= 1
            if refs[d] == 0:
                freed += size.get(d, 0)
        s = snaps[sid]
        plan.append({"entity_id": entity_id, "version": s["version"], "branch": s["branch"], "snapshot_id": sid,
                     "created_at": s["created_at"], "reason": reason, "bytes_freed": freed})

    if policy.rules:
        keep = policy.kept(snaps, now) | safe
        for sid in oldest_first:
            if sid not in keep:
                remove(sid, policy.why())
    if policy.max_bytes is not None:
        gone = {p["snapshot_id"] for p in plan}
        live = [s for s in oldest_first if s not in gone]
        held = sum(snaps[s]["row_bytes"] for s in live) + sum(
            size.get(d, 0) for d in {d for s in live for d in uses[s]})
        for sid in live:
            if held <= policy.max_bytes:
                break
            if sid in safe:
                continue
            remove(sid, f"over max_bytes={policy.max_bytes}")
            held -= plan[-1]["bytes_freed"]
    return plan


def _apply(sm: StateManager, cur: Any, entity_id: str, plan: list[dict[str, Any]], actor: str) -> None:
    if plan:
        remove(sm, cur, entity_id, {p["snapshot_id"]: (p["reason"], {"bytes_freed": p["bytes_freed"]}) for p in plan},
               TransitionType.RETAIN, actor)


def _group(sm: StateManager, conn: Connection, ids: list[str], policy: _Policy, now: datetime,
           actor: str) -> list[dict[str, Any]]:
    db = sm.db
    cur = db.cursor(conn)
    lock_entities(sm, conn, ids)
    out: list[dict[str, Any]] = []
    for e in ids:
        plan = _plan_entity(sm, cur, e, policy, now)
        _apply(sm, cur, e, plan, actor)
        out += plan
    return out


class _Rehearsal(Exception):
    def __init__(self, records: list[dict[str, Any]]):
        super().__init__("dry run")
        self.records = records


def retain(sm: StateManager, entity_id: str | None = None, *, keep_last: Any = None, keep_within: Any = None,
           keep_daily: Any = None, max_bytes: Any = None, dry_run: bool = True, actor: str | None = None
           ) -> pd.DataFrame:
    started = time.perf_counter()
    policy = _Policy(keep_last, keep_within, keep_daily, max_bytes)
    actor = validate.optional_text(actor, "actor") or sm.actor
    db = sm.db
    now = utcnow()
    if entity_id is not None:
        ids = [validate.identifier(entity_id, "entity_id")]

        def exists(conn: Connection, _a: int) -> bool:
            cur = db.cursor(conn)
            cur.execute(db.sql("SELECT 1 FROM state_entities WHERE entity_id = :e"), {"e": ids[0]})
            return cur.fetchone() is not None

        if not db.run_read(exists):
            raise NotFoundError(f"No entity {entity_id!r} in this store; see StateManager.entities().")
    else:
        def entities(conn: Connection, _a: int) -> list[str]:
            cur = db.cursor(conn)
            cur.execute("SELECT entity_id FROM state_entities ORDER BY entity_id")
            return [r[0] for r in cur.fetchall()]

        ids = db.run_read(entities)
    groups = [ids[i : i + GROUP] for i in range(0, len(ids), GROUP)]
    records: list[dict[str, Any]] = []
    if dry_run:
        def rehearse(conn: Connection, _a: int) -> None:
            raise _Rehearsal([r for g in groups for r in _group(sm, conn, g, policy, now, actor)])

        try:
            db.run_write(rehearse)
        except _Rehearsal as done:
            records = done.records
    else:
        for g in groups:
            records += db.run_write(lambda conn, _a, g=g: _group(sm, conn, g, policy, now, actor))
        sm.cache.discard({r["snapshot_id"] for r in records})
        sm._metrics.record("retain", time.perf_counter() - started)
    frame = pd.DataFrame(records, columns=PLAN_COLUMNS)
    frame["version"] = frame["version"].astype("int64")
    frame["bytes_freed"] = frame["bytes_freed"].astype("int64")
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame
