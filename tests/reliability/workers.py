"""Worker processes for the concurrency and locking tests: ``python workers.py ROLE URL ENTITY GO STOP ARGS...``.

Each worker imports statekit, prints ``ready``, waits until the file GO
exists (so all workers start together), does its job, and prints one JSON
line of figures. Any exception is printed with its traceback and ends the
worker with status 1: the test then fails and shows it, since no error may
reach the caller.

Roles:
- ``saver WRITER N [medium]``: N saves of self-consistent states to ENTITY
  (``medium`` adds a 256 KB array so each save holds the write lock longer);
  reports the slowest save (an upper bound on the time it waited for the lock).
- ``counter N``: N read-modify-write increments of ``state["counter"]``, each
  a save with ``expected_version`` retried on ConflictError.
- ``reader [heavy]``: until STOP exists, reads the head and a random older
  version and checks each is whole; every 10th round checks that the
  visible versions have no gap. ``heavy`` also runs ``history()``,
  ``entities()`` and ``verify()`` (the locking test).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from typing import Any

import numpy as np

from statekit import ConflictError, StateManager

try:
    from . import states  # imported by the tests
except ImportError:
    import states  # run as a script


def writer_state(writer: str, i: int, medium: bool) -> dict[str, Any]:
    """Inline JSON (50 numbers and their total) plus the same numbers as an ndarray (a payload chunk)."""
    rng = random.Random(states.seed_of(writer, i))
    numbers = [rng.randrange(10**9) for _ in range(50)]
    state: dict[str, Any] = {"writer": writer, "i": i, "numbers": numbers, "total": sum(numbers),
                             "arr": np.array(numbers, dtype=np.int64)}
    if medium:
        state["blob"] = np.full(32_768, i, dtype=np.float64)  # 256 KB of new bytes every save
    return state


def check_whole(state: dict[str, Any]) -> None:
    """Raise unless ``state`` is exactly one that a saver or the counter meant to write."""
    if "counter" in state:
        assert type(state["counter"]) is int and state["counter"] >= 0, state
        return
    assert sum(state["numbers"]) == state["total"] and state["arr"].tolist() == state["numbers"], \
        f"torn state: {state!r:.300}"
    want = writer_state(state["writer"], state["i"], "blob" in state)
    states.assert_same(state, want, f"{state['writer']}#{state['i']}")


def saver(sm: StateManager, entity: str, writer: str, n: int, medium: bool = False) -> dict[str, Any]:
    slowest = 0.0
    latencies = []
    for i in range(n):
        state = writer_state(writer, i, medium)
        t = time.perf_counter()
        sm.save(entity, state)
        took = time.perf_counter() - t
        latencies.append(took)
        slowest = max(slowest, took)
    latencies.sort()
    return {"saves": n, "max_save_seconds": slowest, "p99_save_seconds": latencies[int(len(latencies) * 0.99) - 1],
            "median_save_seconds": latencies[len(latencies) // 2]}


def counter(sm: StateManager, entity: str, n: int) -> dict[str, Any]:
    conflicts = 0
    for _ in range(n):
        while True:
            head = sm.get(entity)
            value = head.state["counter"]
            try:
                sm.save(entity, {"counter": value + 1}, expected_version=head.version)
                break
            except ConflictError:
                conflicts += 1
    return {"increments": n, "conflicts_retried": conflicts}


def reader(sm: StateManager, entity: str, stop: str, heavy: bool = False) -> dict[str, Any]:
    rng = random.Random(os.getpid())
    reads = gap_checks = rounds = listings = 0
    slowest = 0.0
    while not os.path.exists(stop):
        rounds += 1
        t = time.perf_counter()
        head = sm.head_version(entity)
        if head is None:
            time.sleep(0.005)
            continue
        snap = sm.get(entity)
        check_whole(snap.state)
        check_whole(sm.load(entity, rng.randint(1, snap.version)))
        reads += 2
        if rounds % 10 == 0:
            versions = sm.history(entity)["version"].tolist()
            assert versions == list(range(1, len(versions) + 1)), f"a gap in the visible versions: {versions}"
            gap_checks += 1
        if heavy:
            sm.entities()
            if rounds % 5 == 0:
                problems = sm.verify(entity)
                assert problems.empty, problems.to_string()
            listings += 1
        slowest = max(slowest, time.perf_counter() - t)
        time.sleep(0.01)  # leave the CPU to the writers (2 cores): reading is the check, not the load
    return {"reads": reads, "gap_checks": gap_checks, "listings": listings, "max_round_seconds": slowest}


def main() -> None:
    role, url, entity, go, stop, *args = sys.argv[1:]
    sm = StateManager(url, cache_size=0)  # readers must read the database, not a cache
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.002)
    try:
        if role == "saver":
            out = saver(sm, entity, args[0], int(args[1]), medium="medium" in args[2:])
        elif role == "counter":
            out = counter(sm, entity, int(args[0]))
        elif role == "reader":
            out = reader(sm, entity, stop, heavy="heavy" in args)
        else:
            raise SystemExit(f"unknown role {role!r}")
    except BaseException:  # noqa: BLE001 - any error reaching the caller fails the test
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    finally:
        sm.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
