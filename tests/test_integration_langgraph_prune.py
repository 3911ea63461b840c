"""StatekitSaver.prune and delete_for_runs beyond the conformance suite: forks, re-pointed children,
freed chunks, the audit trail they leave, and bad arguments. Both backends (``sm`` fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

pytest.importorskip("langgraph.checkpoint.base")

from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402

from statekit import StateManager  # noqa: E402
from statekit.errors import InvalidArgumentError  # noqa: E402
from statekit.integrations.langgraph import StatekitSaver  # noqa: E402


def _put(saver: StatekitSaver, thread: str, values: dict[str, Any], versions: dict[str, int],
         parent: dict[str, Any] | None = None, run: str | None = None, ns: str = "") -> dict[str, Any]:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    meta: dict[str, Any] = {"source": "loop", "step": 0, "parents": {}}
    if run is not None:
        meta["run_id"] = run
    return saver.put(config, cp, meta, versions)


def _ids(saver: StatekitSaver, thread: str, ns: str | None = None) -> list[str]:
    conf: dict[str, Any] = {"thread_id": thread}
    if ns is not None:
        conf["checkpoint_ns"] = ns
    return [t.config["configurable"]["checkpoint_id"] for t in saver.list({"configurable": conf})]


def _chunks(sm: StateManager) -> int:
    with sm.db.read() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM state_payloads")).scalar_one()


def test_keep_latest_on_a_forked_thread_keeps_the_newest_checkpoint_its_writes_and_records_the_rest(
        sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    c1 = _put(saver, "t", {"blob": b"a" * 200_000}, {"blob": 1})
    c2 = _put(saver, "t", {"blob": b"b" * 200_000}, {"blob": 2}, parent=c1)
    c3 = _put(saver, "t", {"blob": b"c" * 200_000}, {"blob": 3}, parent=c2)
    fork = _put(saver, "t", {"blob": b"f" * 200_000}, {"blob": 2}, parent=c1)  # a second child of c1: a fork
    entity = saver.entity_id("t")
    assert set(sm.branches(entity)["branch"]) == {"main", f"fork-{fork['configurable']['checkpoint_id']}"}
    saver.put_writes(c3, [("x", "old")], "task-1")
    saver.put_writes(fork, [("x", "kept")], "task-2")
    before = _chunks(sm)

    saver.prune(["t"], strategy="keep_latest")

    assert _ids(saver, "t") == [fork["configurable"]["checkpoint_id"]]
    kept = saver.get_tuple(fork)
    assert kept.checkpoint["channel_values"] == {"blob": b"f" * 200_000}
    assert kept.pending_writes == [("task-2", "x", "kept")]
    assert saver.get_tuple(c3) is None and saver.get_tuple(c1) is None
    assert _chunks(sm) <= before - 3  # the three removed blobs' chunks are gone
    assert sm.verify().empty
    retained = sm.transitions(entity)
    retained = retained[retained["transition_type"] == "retain"]
    assert sorted(retained["from_version"]) == [1, 2, 3]
    assert all("prune('t', strategy='keep_latest')" in r for r in retained["reason"])
    branches = sm.branches(entity).set_index("branch")
    assert pd.isna(branches.loc["main", "head_snapshot_id"])  # main had nothing left: an empty head
    saver.copy_thread("t", "copy")  # the fork's base is gone: the copy starts its line on main
    copied = saver.get_tuple({"configurable": {"thread_id": "copy", "checkpoint_ns": ""}})
    assert copied.checkpoint["channel_values"] == {"blob": b"f" * 200_000}
    assert copied.pending_writes == [("task-2", "x", "kept")]
    # the thread goes on from the kept checkpoint, on its branch
    nxt = _put(saver, "t", {"blob": b"g"}, {"blob": 3}, parent=fork)
    assert _ids(saver, "t") == [nxt["configurable"]["checkpoint_id"], fork["configurable"]["checkpoint_id"]]
    assert sm.verify().empty


def test_delete_for_runs_repoints_the_next_checkpoint_and_recomputes_what_it_changed(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    c1 = _put(saver, "t", {"x": 1, "y": 1}, {"x": 1, "y": 1}, run="r1")
    c2 = _put(saver, "t", {"x": 2, "y": 1}, {"x": 2, "y": 1}, parent=c1, run="r2")
    c3 = _put(saver, "t", {"x": 2, "y": 2}, {"x": 2, "y": 2}, parent=c2, run="r3")
    saver.put_writes(c2, [("x", "w")], "task")
    entity = saver.entity_id("t")
    assert list(sm.history(entity, changed="x")["version"]) == [1, 2]

    asyncio.run(saver.adelete_for_runs(["r2", "no-such-run"]))

    assert _ids(saver, "t") == [c3["configurable"]["checkpoint_id"], c1["configurable"]["checkpoint_id"]]
    h = sm.history(entity)
    assert list(h["version"]) == [1, 3] and int(h.set_index("version").loc[3, "parent_version"]) == 1
    assert list(sm.history(entity, changed="x")["version"]) == [1, 3]  # v3 now differs from v1 in x
    assert saver.get_tuple(c3).checkpoint["channel_values"] == {"x": 2, "y": 2}
    assert sm.history(saver.writes_entity_id("t")).empty  # the removed checkpoint's writes went with it
    assert sm.verify().empty
    t = sm.transitions(entity)
    removal = t[t["transition_type"] == "retain"].iloc[0]
    assert removal["from_version"] == 2 and removal["metadata"]["run_id"] == "r2"
    assert removal["metadata"]["reparented"] == [{"version": 3, "parent_version": 1}]


def test_prune_across_namespaces_and_delete_strategy(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    r1 = _put(saver, "t", {"v": 1}, {"v": 1})
    r2 = _put(saver, "t", {"v": 2}, {"v": 2}, parent=r1)
    s1 = _put(saver, "t", {"v": 1}, {"v": 1}, ns="child:1")
    s2 = _put(saver, "t", {"v": 2}, {"v": 2}, parent=s1, ns="child:1")
    other = _put(saver, "u", {"v": 1}, {"v": 1})
    saver.prune(["t", "missing-thread"])
    assert _ids(saver, "t", "") == [r2["configurable"]["checkpoint_id"]]
    assert _ids(saver, "t", "child:1") == [s2["configurable"]["checkpoint_id"]]
    asyncio.run(saver.aprune(["t"], strategy="delete"))
    assert _ids(saver, "t") == [] and _ids(saver, "u") == [other["configurable"]["checkpoint_id"]]
    assert sm.verify().empty


def test_bad_arguments_are_refused_and_change_nothing(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    c1 = _put(saver, "t", {"v": 1}, {"v": 1})
    _put(saver, "t", {"v": 2}, {"v": 2}, parent=c1)
    with pytest.raises(InvalidArgumentError, match="strategy"):
        saver.prune(["t"], strategy="keep_oldest")
    with pytest.raises(InvalidArgumentError, match="list"):
        saver.prune("t")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="list"):
        saver.delete_for_runs("r1")  # type: ignore[arg-type]
    assert len(_ids(saver, "t")) == 2
    saver.prune([])
    saver.delete_for_runs([])
    assert len(_ids(saver, "t")) == 2
