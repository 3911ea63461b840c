"""Concurrent writers never produce duplicate or lost versions, and readers never see half a state.

On SQLite and on PostgreSQL:
- 8 processes x 250 saves to one entity, with 2 reader processes checking
  every state they read (its own check figures, and exactly what its writer
  built) and, every 10th round, that the visible versions have no gap;
  afterwards 2,000 distinct contiguous versions in one parent chain, each
  writer's 250 states all there, in the order that writer saved them;
- a read-modify-write counter: 4 processes x 50 increments, each a save with
  ``expected_version`` retried on ConflictError, ends at exactly 200.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from statekit import StateManager

from .figures import record
from .procs import WorkerGroup
from .workers import check_whole

pytestmark = pytest.mark.reliability

WRITERS = int(os.environ.get("STATEKIT_RELIABILITY_WRITERS", "8"))
SAVES_EACH = int(os.environ.get("STATEKIT_RELIABILITY_SAVES", "250"))
READERS = 2
COUNTERS, INCREMENTS = 4, 50


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def test_eight_writers_one_entity_contiguous_versions_readers_never_see_a_partial_state(
        store_url: str, tmp_path: Path) -> None:
    StateManager(store_url).close()  # the schema exists before the race
    group = WorkerGroup(tmp_path)
    started = time.monotonic()
    try:
        writers = [group.spawn("saver", store_url, "shared", f"w{k}", SAVES_EACH) for k in range(WRITERS)]
        readers = [group.spawn("reader", store_url, "shared") for _ in range(READERS)]
        group.go_all()
        wrote = [group.result(p) for p in writers]
        seconds = time.monotonic() - started
        group.stop_all()
        read = [group.result(p) for p in readers]
    finally:
        group.kill_all()

    total = WRITERS * SAVES_EACH
    assert sum(w["saves"] for w in wrote) == total
    sm = StateManager(store_url, cache_size=0)
    try:
        h = sm.history("shared")
        assert h["version"].tolist() == list(range(1, total + 1))
        assert h["snapshot_id"].is_unique
        assert h["parent_version"].tolist()[1:] == list(range(1, total)), "the history forked"
        assert len(sm.transitions("shared")) == total
        order: dict[str, list[int]] = {}
        for v in range(1, total + 1):
            state = sm.load("shared", v)
            check_whole(state)
            order.setdefault(state["writer"], []).append(state["i"])
        assert order == {f"w{k}": list(range(SAVES_EACH)) for k in range(WRITERS)}, "a save was lost or reordered"
        assert sm.verify().empty
    finally:
        sm.close()
    reads = sum(r["reads"] for r in read)
    record(f"concurrency[{backend_of(store_url)}]", writers=WRITERS, saves_each=SAVES_EACH,
           writes_under_contention=total, distinct_contiguous_versions=total, versions_checked=total,
           reader_processes=READERS, reads_during_writes=reads, partial_states_seen=0,
           gap_checks=sum(r["gap_checks"] for r in read),
           max_save_seconds=round(max(w["max_save_seconds"] for w in wrote), 3),
           seconds_writing=round(seconds, 1))
    assert reads > 0, "the readers never saw a version while the writers ran"


def test_read_modify_write_counter_with_expected_version_loses_no_increment(store_url: str, tmp_path: Path) -> None:
    sm = StateManager(store_url)
    sm.save("counter", {"counter": 0})
    group = WorkerGroup(tmp_path)
    try:
        counters = [group.spawn("counter", store_url, "counter", INCREMENTS) for _ in range(COUNTERS)]
        group.go_all()
        results = [group.result(p) for p in counters]
    finally:
        group.kill_all()
    n = COUNTERS * INCREMENTS
    try:
        assert sm.load("counter")["counter"] == n
        h = sm.history("counter")
        assert h["version"].tolist() == list(range(1, n + 2))
        # every version is exactly one increment of its parent: no update was lost or applied twice
        assert [sm.load("counter", v)["counter"] for v in range(1, n + 2)] == list(range(n + 1))
        assert sm.verify().empty
    finally:
        sm.close()
    conflicts = sum(r["conflicts_retried"] for r in results)
    record(f"counter[{backend_of(store_url)}]", processes=COUNTERS, increments=n, final_value=n,
           conflicts_retried=conflicts)
