"""History as data at scale: ``as_of``, ``changed=`` and ``find`` on a big store against a one-entity store.

    python -m benchmarks.history_scale                      # 1,000,000 snapshots (1,000 x 1,000): long
    python -m benchmarks.history_scale --snapshots 20000    # a quick look

The big store holds ``entities x versions`` snapshots of a small state whose ``params`` change now and
then; the baseline holds one entity with as many versions as each entity of the big one. Each figure is
the median of ``--repeat`` runs on entity 0 (same history in both stores), with fresh store objects:

- ``load(as_of=)``: the head at a random moment of the entity's history (reads the audit trail);
- ``history(changed="params.lr")``: the versions that changed it;
- ``find(entities=[e], where=...)``: one entity's versions with a given value;
- ``find(where=...)`` over the whole store: a scan by design (no index on JSON values), so it grows
  with the store; shown for honesty, not held to the 2x target.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from statekit import StateManager

BATCH = 500


def state(v: int, e: int) -> dict[str, Any]:
    return {"params": {"lr": [0.1, 0.01, 0.001][(v // 10) % 3], "depth": 4 + e % 3}, "step": v,
            "note": "x" * 200}


def build(url: str, entities: int, versions: int) -> None:
    sm = StateManager(url, durability="normal", cache_size=0)
    try:
        for v in range(versions):
            for first in range(0, entities, BATCH):
                ids = range(first, min(first + BATCH, entities))
                sm.save_many({f"entity-{e:05d}": state(v, e) for e in ids}, expires_in="never")
    finally:
        sm.close()


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(url: str, repeat: int, whole_store: bool) -> dict[str, float]:
    sm = StateManager(url, cache_size=0)
    try:
        e = "entity-00000"
        h = sm.history(e)
        first, last = h["created_at"].iloc[0].to_pydatetime(), h["created_at"].iloc[-1].to_pydatetime()
        span = (last - first).total_seconds()
        rng = random.Random(7)
        out = {
            "load(as_of=)": median_ms(lambda: sm.load(e, as_of=first + timedelta(seconds=rng.random() * span)),
                                      repeat),
            'history(changed="params.lr")': median_ms(lambda: sm.history(e, changed="params.lr"), repeat),
            "find(entities=[e], where=)": median_ms(lambda: sm.find([e], where={"params.lr": 0.01}), repeat),
        }
        if whole_store:
            out["find(where=) whole store"] = median_ms(lambda: sm.find(where={"params.lr": 0.01}), max(1, repeat // 10))
        return out
    finally:
        sm.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.history_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshots", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--tmp", default=None)
    args = p.parse_args(argv)
    versions = max(2, int(math.sqrt(args.snapshots)))
    entities = max(1, args.snapshots // versions)
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        big, one = f"sqlite:///{Path(d) / 'big.db'}", f"sqlite:///{Path(d) / 'one.db'}"
        t = time.perf_counter()
        build(big, entities, versions)
        build(one, 1, versions)
        print(f"built {entities:,} x {versions:,} = {entities * versions:,} snapshots "
              f"(and a 1 x {versions:,} baseline) in {time.perf_counter() - t:.0f} s")
        small = measure(one, args.repeat, True)
        large = measure(big, args.repeat, True)
    print(f"{'operation':32} {'1 entity':>12} {'big store':>12} {'ratio':>7}")
    for op in small:
        print(f"{op:32} {small[op]:10.2f}ms {large[op]:10.2f}ms {large[op] / small[op]:6.2f}x")


if __name__ == "__main__":
    main()
