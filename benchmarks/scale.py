"""Workload 7, scale: the small-state operations on a store holding 1,000,000 snapshots.

The big store holds ``entities x versions`` snapshots (1,000 x 1,000 by
default; ``--scale N`` picks a square-ish split of N), built through the public
API with ``save_many`` batches and ``durability="normal"`` (building is not
measured). The baseline store holds one entity with as many versions as each
entity of the big one, so the only difference is the other snapshots. Then,
with fresh store objects at the default durability, in turn on both stores:
a save of a ~1 KB dict to an existing entity, a load of a random version from
the database (cache off), a cached load, and the history of one entity.

Right after the build the big file is not in the OS cache on this machine
(written pages do not stay cached), so the first random loads read the disk.
That first touch is shown as its own row, without a target; then both store
files are read through once and the targeted operations run on a warm OS
cache, as they would in a store used every day.
"""

from __future__ import annotations

import random
import time
from typing import Any

from statekit import StateManager

from .config import Config
from .report import WorkloadResult
from .small_state import small_state
from .timing import interleave, scratch, sqlite_files_size

BIG = "statekit, big store"
EMPTY = "statekit, one-entity store"
BATCH = 500


def entity(e: int) -> str:
    return f"entity-{e:05d}"


def build(url: str, entities: int, versions: int, progress: bool = True) -> float:
    """Fill a store with ``entities x versions`` snapshots; returns the seconds it took."""
    sm = StateManager(url, durability="normal", cache_size=0)
    start = time.perf_counter()
    last = start
    try:
        for v in range(versions):
            for first in range(0, entities, BATCH):
                sm.save_many({entity(e): small_state(v * entities + e) for e in range(first, min(first + BATCH, entities))})
            if progress and time.perf_counter() - last > 30:
                last = time.perf_counter()
                done = (v + 1) * entities
                print(f"   ... building: {done:,} of {entities * versions:,} snapshots in {last - start:.0f} s",
                      flush=True)
    finally:
        sm.close()
    return time.perf_counter() - start


def run(cfg: Config) -> WorkloadResult:
    entities, versions = cfg.scale_shape
    total = entities * versions
    res = WorkloadResult("7", f"Scale: small-state operations with {total:,} snapshots in the store",
                         params={"entities": entities, "versions_each": versions, "snapshots": total,
                                 "ops": cfg.scale_ops})
    if total < 1_000_000:
        res.notes.append(f"ran with {total:,} snapshots (--scale {cfg.scale}), not the issue's 1,000,000")
    with scratch("scale", cfg.tmp_root) as tmp:
        big_url, small_url = f"sqlite:///{tmp / 'big.db'}", f"sqlite:///{tmp / 'small.db'}"
        res.params["build_seconds"] = round(build(big_url, entities, versions, progress=not cfg.smoke), 1)
        build(small_url, 1, versions, progress=False)
        res.params["big_store_bytes"] = sqlite_files_size(tmp / "big.db")
        _measure(res, cfg, {BIG: (big_url, entities), EMPTY: (small_url, 1)}, versions)
    for op in ("save", "load (database)", "load (cached)", "history (one entity)"):
        r = res.ratio(f"{op}: big vs one-entity store", (BIG, op), (EMPTY, op))
        res.target(f"{op} p50 within 1.5x of the one-entity store", r, 1.5)
    res.ratio("save p99: big vs one-entity store", (BIG, "save"), (EMPTY, "save"), "p99")
    res.ratio("load (database), cold OS cache: big vs one-entity", (BIG, "load (database), cold OS cache"),
              (EMPTY, "load (database), cold OS cache"))
    return res


def _measure(res: WorkloadResult, cfg: Config, stores: dict[str, tuple[str, int]], versions: int) -> None:
    n = cfg.scale_ops
    rng = random.Random(7)
    writers = {name: StateManager(url) for name, (url, _) in stores.items()}
    readers = {name: StateManager(url, cache_size=0) for name, (url, _) in stores.items()}
    saved: dict[str, list[tuple[str, int]]] = {name: [] for name in stores}
    picks = {name: [(entity(rng.randrange(k)), rng.randrange(1, versions + 1)) for _ in range(2 * n)]
             for name, (_, k) in stores.items()}
    targets = {name: [entity(rng.randrange(k)) for _ in range(n)] for name, (_, k) in stores.items()}
    try:
        def save_op(name: str) -> Any:
            def op(i: int) -> None:
                e = targets[name][i]
                snap = writers[name].save(e, small_state(10_000_000 + i))
                saved[name].append((e, snap.version))
            return op

        def load_op(name: str, offset: int = 0) -> Any:  # the cold pass and the timed one read other versions
            return lambda i: readers[name].load(*_pick(picks[name], i + offset))

        def cached_op(name: str) -> Any:
            return lambda i: writers[name].load(*saved[name][i % len(saved[name])])

        def history_op(name: str) -> Any:
            return lambda i: writers[name].history(targets[name][i])

        # first touch: right after the build, this machine's OS cache does not hold the big file
        cold = interleave({name: load_op(name) for name in stores}, n)
        for name in stores:
            res.add(name, "load (database), cold OS cache", cold[name], note="first touch, no target")
        for url, _ in stores.values():
            _read_through(url.removeprefix("sqlite:///"))
        for op_name, make, rounds in (("save", save_op, n), ("load (database)", lambda nm: load_op(nm, n), n),
                                      ("load (cached)", cached_op, n), ("history (one entity)", history_op,
                                                                        max(3, n // 20))):
            got = interleave({name: make(name) for name in stores}, rounds, warmup=2 if op_name != "save" else 0)
            for name in stores:
                res.add(name, op_name, got[name])
    finally:
        for sm in (*writers.values(), *readers.values()):
            sm.close()


def _read_through(path: str) -> None:
    """Read a store's files once, so the timed operations find them in the OS cache, as in daily use."""
    for suffix in ("", "-wal"):
        try:
            with open(path + suffix, "rb") as f:
                while f.read(16 << 20):
                    pass
        except FileNotFoundError:
            pass


def _pick(picks: list[tuple[str, int]], i: int) -> tuple[str, int]:
    return picks[i % len(picks)]
