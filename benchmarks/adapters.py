"""StatekitSaver beside LangGraph's SqliteSaver, in one run, on SQLite files.

    python -m benchmarks.adapters [--puts 300] [--gets 300] [--list 2000] [--list-reps 5]

Three figures, each as the median ratio statekit / SqliteSaver of calls interleaved
round-robin (the machine is shared): ``put`` of a ~1 KB checkpoint, ``get_tuple`` of a
random earlier checkpoint by id, and ``list`` of a thread of ``--list`` checkpoints.
Targets (issue 18): put <= 1.5x, get_tuple <= 2x, list <= 1x. Both savers fsync every
commit (statekit: durability "full"; SqliteSaver: WAL with SQLite's default FULL sync).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

from statekit import StateManager

from .small_state import LangGraphThread, open_sqlite_saver, open_statekit_saver, small_state
from .timing import interleave, scratch

TARGETS = {"put": 1.5, "get_tuple": 2.0, "list": 1.0}


def measure(puts: int, gets: int, listed: int, list_reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with scratch("adapters") as tmp:
        theirs = open_sqlite_saver(tmp / "langgraph.db")
        store = StateManager(f"sqlite:///{tmp / 'statekit.db'}")
        ours, why = open_statekit_saver(store)
        if ours is None:
            raise SystemExit(f"StatekitSaver is unavailable: {why}")
        lg, sk = LangGraphThread(theirs, "bench"), LangGraphThread(ours, "bench")
        states = [small_state(i) for i in range(puts)]
        saved = interleave({"statekit": lambda i: sk.put(i, states[i]),
                            "sqlite": lambda i: lg.put(i, states[i])}, puts)
        picks = [random.Random(7).randrange(puts) for _ in range(gets)]
        got = interleave({"statekit": lambda i: sk.get(picks[i]), "sqlite": lambda i: lg.get(picks[i])}, gets,
                         warmup=2)
        out["put"] = saved
        out["get_tuple"] = got
        # a long thread, built without fsync cost (only the listing is measured)
        theirs_l = open_sqlite_saver(tmp / "langgraph-list.db")
        theirs_l.conn.execute("PRAGMA synchronous=OFF")
        store_l = StateManager(f"sqlite:///{tmp / 'statekit-list.db'}", durability="normal")
        ours_l, _ = open_statekit_saver(store_l)
        lg_l, sk_l = LangGraphThread(theirs_l, "long"), LangGraphThread(ours_l, "long")
        for i in range(listed):
            st = small_state(i)
            lg_l.put(i, st)
            sk_l.put(i, st)
        config = {"configurable": {"thread_id": "long"}}
        assert len(list(ours_l.list(config))) == len(list(theirs_l.list(config))) == listed
        out["list"] = interleave({"statekit": lambda i: list(ours_l.list(config)),
                                  "sqlite": lambda i: list(theirs_l.list(config))}, list_reps, warmup=1)
        for s in (store, store_l):
            s.close()
        theirs.conn.close()
        theirs_l.conn.close()
    report: dict[str, Any] = {}
    for op, samples in out.items():
        ours_ms, theirs_ms = samples["statekit"].median * 1e3, samples["sqlite"].median * 1e3
        ratio = ours_ms / theirs_ms
        report[op] = {"statekit_ms": round(ours_ms, 3), "sqlitesaver_ms": round(theirs_ms, 3),
                      "ratio": round(ratio, 2), "target": TARGETS[op], "met": ratio <= TARGETS[op]}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--gets", type=int, default=300)
    parser.add_argument("--list", type=int, default=2000, dest="listed")
    parser.add_argument("--list-reps", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    ns = parser.parse_args(argv)
    report = measure(ns.puts, ns.gets, ns.listed, ns.list_reps)
    if ns.json:
        print(json.dumps(report, indent=2))
        return 0
    for op, r in report.items():
        print(f"{op:10s} StatekitSaver {r['statekit_ms']:9.3f} ms   SqliteSaver {r['sqlitesaver_ms']:9.3f} ms   "
              f"{r['ratio']:5.2f}x (target <= {r['target']}x: {'met' if r['met'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
