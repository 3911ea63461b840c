"""History as data at scale: ``as_of``, ``changed=`` and ``find`` on a big store against a one-entity store.

    python -m benchmarks.history_scale                      # 1,000,000 snapshots (1,000 x 1,000): minutes
    python -m benchmarks.history_scale --snapshots 20000    # a quick look

Entity 0's history (``versions`` saves of a small state whose ``params`` change now and then) is made
through the API, in a template store that is copied as the baseline. The big store then gets the other
``entities - 1`` entities in bulk SQL (``INSERT ... SELECT`` from entity 0's rows with new ids, their own
``owner`` and ``params.depth``): as many rows, indexes and find-index rows as real saves would leave,
in minutes rather than hours. Those copies are not loadable (their checksums name entity 0's ids); every
figure is measured on entity 0, whose rows are genuine, so both stores answer the same question. Each
figure is the median of ``--repeat`` runs with fresh store objects:

- ``load(as_of=)``: the head at a random moment of the entity's history (reads the audit trail);
- ``history(changed="params.lr")``: the versions that changed it;
- ``find(entities=[e], where=...)``: one entity's versions with a given value;
- ``find(where={"owner": ...})`` and ``find(name=, where=)`` over the whole store: one entity's worth of
  answers, found through ``state_find_index``;
- ``find(where={"params.lr": ...})`` over the whole store: a third of all versions match, so it grows with
  the answer (shown for honesty, not held to the 2x target).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from statekit import StateManager

BATCH = 20
"""Entities copied per statement (and per transaction)."""


def state(v: int, e: int) -> dict[str, Any]:
    return {"params": {"lr": [0.1, 0.01, 0.001][(v // 10) % 3], "depth": 4 + e % 3}, "step": v,
            "note": "x" * 200, "owner": f"user-{e}"}


def build_template(path: Path, versions: int) -> None:
    """Entity 0's history, saved through the API."""
    sm = StateManager(f"sqlite:///{path}", durability="normal", cache_size=0)
    try:
        for v in range(versions):
            sm.save("entity-00000", state(v, 0), expires_in="never")
    finally:
        sm.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def _new_id(col: str) -> str:
    """A copy's id: entity 0's id with its last 8 hex digits replaced by the entity number."""
    return f"CASE WHEN {col} IS NULL THEN NULL ELSE substr({col}, 1, 24) || printf('%08x', n.e) END"


def grow(path: Path, entities: int) -> None:
    """Add entities 1 .. entities-1 as copies of entity 0, in bulk SQL (the find-index triggers fire)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-400000")
    eid = "'entity-' || printf('%05d', n.e)"
    swap = {
        "state_snapshots": {"snapshot_id": _new_id("s.snapshot_id"), "entity_id": eid,
                            "parent_snapshot_id": _new_id("s.parent_snapshot_id"),
                            "state_data": "json_set(s.state_data, '$.owner', 'user-' || n.e, "
                                          "'$.params.depth', 4 + n.e % 3)"},
        "state_transitions": {"transition_id": _new_id("s.transition_id"), "entity_id": eid,
                              "from_snapshot_id": _new_id("s.from_snapshot_id"),
                              "to_snapshot_id": _new_id("s.to_snapshot_id")},
        "state_branches": {"entity_id": eid, "head_snapshot_id": _new_id("s.head_snapshot_id")},
        "state_entities": {"entity_id": eid},
    }
    sql = {}
    for table, changes in swap.items():
        cols = _columns(con, table)
        exprs = ", ".join(changes.get(c, f"s.{c}") for c in cols)
        sql[table] = (f"WITH RECURSIVE n(e) AS (SELECT ? UNION ALL SELECT e + 1 FROM n WHERE e + 1 < ?) "
                      f"INSERT INTO {table} ({', '.join(cols)}) SELECT {exprs} FROM {table} s, n "
                      "WHERE s.entity_id = 'entity-00000'")
    for lo in range(1, entities, BATCH):
        hi = min(lo + BATCH, entities)
        con.execute("BEGIN")
        for text in sql.values():
            con.execute(text, (lo, hi))
        con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(url: str, repeat: int) -> dict[str, float]:
    sm = StateManager(url, cache_size=0)
    try:
        e = "entity-00000"
        h = sm.history(e)
        first, last = h["created_at"].iloc[0].to_pydatetime(), h["created_at"].iloc[-1].to_pydatetime()
        span = (last - first).total_seconds()
        rng = random.Random(7)
        few = max(1, repeat // 10)
        return {
            "load(as_of=)": median_ms(lambda: sm.load(e, as_of=first + timedelta(seconds=rng.random() * span)),
                                      repeat),
            'history(changed="params.lr")': median_ms(lambda: sm.history(e, changed="params.lr"), repeat),
            "find(entities=[e], where=)": median_ms(lambda: sm.find([e], where={"params.lr": 0.01}), repeat),
            'find(where={"owner": ...})': median_ms(lambda: sm.find(where={"owner": "user-0"}), repeat),
            "find(name=, where=) whole store": median_ms(
                lambda: sm.find(name="owner", where={"owner": "user-0", "params.lr": 0.01}), repeat),
            "find(where=params.lr) 1/3 match": median_ms(lambda: sm.find(where={"params.lr": 0.01}), few),
        }
    finally:
        sm.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.history_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshots", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--tmp", default=None)
    p.add_argument("--keep", default=None, help="build the stores in this directory and keep them (reused if there)")
    args = p.parse_args(argv)
    versions = max(2, int(math.sqrt(args.snapshots)))
    entities = max(1, args.snapshots // versions)
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        where = Path(args.keep) if args.keep else Path(d)
        where.mkdir(parents=True, exist_ok=True)
        one, big = where / "one.db", where / "big.db"
        t = time.perf_counter()
        if not big.exists():  # --keep reuses the stores a previous run built there
            build_template(one, versions)
            shutil.copyfile(one, big)
            grow(big, entities)
        rows = sqlite3.connect(big).execute("SELECT count(*) FROM state_snapshots").fetchone()[0]
        print(f"{entities:,} x {versions:,} = {rows:,} snapshots (and a 1 x {versions:,} baseline), ready in "
              f"{time.perf_counter() - t:.0f} s; {big.stat().st_size / 2**30:.2f} GiB")
        small = measure(f"sqlite:///{one}", args.repeat)
        large = measure(f"sqlite:///{big}", args.repeat)
    print(f"{'operation':34} {'1 entity':>12} {'big store':>12} {'ratio':>7}")
    for op in small:
        print(f"{op:34} {small[op]:10.2f}ms {large[op]:10.2f}ms {large[op] / small[op]:6.2f}x")


if __name__ == "__main__":
    main()
