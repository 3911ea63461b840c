"""StatekitSaver: LangGraph's own conformance suite, a real graph that is interrupted and
resumed in another process, forks as statekit branches, and what the store keeps.

Every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

try:
    import langgraph.checkpoint.conformance  # noqa: F401
except ImportError:  # CI installs the extra: there, a missing framework is a failure, not a skip
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip('needs pip install "statekit[langgraph]" langgraph-checkpoint-conformance', allow_module_level=True)

from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer  # noqa: E402

from statekit import StateManager  # noqa: E402
from statekit.integrations.langgraph import StatekitSaver  # noqa: E402

GRAPH_SCRIPT = '''
"""A small LangGraph graph with a conditional edge, interrupted before its last node."""
import json
import sys
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from statekit.integrations.langgraph import StatekitSaver


class State(TypedDict):
    n: int
    path: list


def inc(state):
    return {"n": state["n"] + 1, "path": state["path"] + ["inc"]}


def big(state):
    return {"path": state["path"] + ["big"]}


def small(state):
    return {"path": state["path"] + ["small"]}


def route(state):
    return "big" if state["n"] > 2 else "small"


def build(url, interrupt=True):
    builder = StateGraph(State)
    builder.add_node("inc", inc)
    builder.add_node("big", big)
    builder.add_node("small", small)
    builder.add_edge(START, "inc")
    builder.add_conditional_edges("inc", route, ["big", "small"])
    builder.add_edge("big", END)
    builder.add_edge("small", END)
    saver = StatekitSaver(url)
    return builder.compile(checkpointer=saver, interrupt_before=["big", "small"] if interrupt else None), saver


if __name__ == "__main__":
    url, thread = sys.argv[1], sys.argv[2]
    graph, saver = build(url)
    config = {"configurable": {"thread_id": thread}}
    before = graph.get_state(config)
    result = graph.invoke(None, config)  # resume from the stored checkpoint
    print(json.dumps({"next_before": list(before.next), "result": result,
                      "next_after": list(graph.get_state(config).next)}))
'''


def _load_graph_module(tmp_path: Path) -> Any:
    path = tmp_path / "agent_graph.py"
    path.write_text(GRAPH_SCRIPT)
    spec = importlib.util.spec_from_file_location(f"agent_graph_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- the conformance suite


def test_langgraph_conformance_suite_passes(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    @checkpointer_test(name=f"StatekitSaver[{store_url.split(':', 1)[0]}]")
    async def factory():  # type: ignore[no-untyped-def]
        sm = StateManager(store_url)
        yield StatekitSaver(sm)
        sm.close()

    report = asyncio.run(validate(factory))
    report.print_report()
    with StateManager(store_url) as sm:
        assert sm.verify().empty  # deletes and copies left a consistent store
    results = report.to_dict()["results"]
    detected = {name for name, r in results.items() if r["detected"]}
    assert detected == {"put", "put_writes", "get_tuple", "list", "delete_thread", "copy_thread", "prune",
                        "delete_for_runs"}
    for name in detected:
        assert results[name]["passed"] is True, (name, results[name]["failures"])
        assert results[name]["tests_failed"] == 0 and results[name]["tests_passed"] > 0
    assert report.conformance_level() == "FULL"
    assert results["prune"]["tests_passed"] == 8 and results["delete_for_runs"]["tests_passed"] == 7
    with capsys.disabled():
        print(f"\nconformance on {store_url.split(':', 1)[0]}: "
              + ", ".join(f"{n} {results[n]['tests_passed']}/{results[n]['tests_passed'] + results[n]['tests_failed']}"
                          for n in sorted(detected)))


# ---------------------------------------------------------------------------- a real graph


@pytest.mark.slow  # a second Python process importing LangGraph
def test_graph_is_interrupted_and_resumes_in_a_fresh_process(store_url: str, tmp_path: Path) -> None:
    mod = _load_graph_module(tmp_path)
    graph, saver = mod.build(store_url)
    config = {"configurable": {"thread_id": "run-1"}}
    first = graph.invoke({"n": 2, "path": []}, config)
    assert first == {"n": 3, "path": ["inc"]}
    assert graph.get_state(config).next == ("big",)  # the conditional edge chose "big", then the interrupt
    entity = saver.entity_id("run-1")
    history = saver.sm.history(entity)
    assert list(history["actor"].unique()) == ["langgraph"]
    assert history["message"].iloc[-1] == "LangGraph step 1 (loop): n, path"
    assert saver.sm.load(entity)["n"] == 3  # plain JSON channels are readable as they are
    saver.close()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(tmp_path / "agent_graph.py"), store_url, "run-1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"next_before": ["big"], "result": {"n": 3, "path": ["inc", "big"]}, "next_after": []}

    with StateManager(store_url) as sm:
        after = sm.history(entity)
        assert len(after) == len(history) + 1 and set(after["branch"]) == {"main"}
        assert after["message"].iloc[-1] == "LangGraph step 2 (loop): path"
        assert sm.load(entity)["path"] == ["inc", "big"]
        writes = sm.history(saver.writes_entity_id("run-1"))
        assert writes["message"].iloc[-1].startswith("big wrote path")


def test_update_state_on_a_past_checkpoint_forks_a_branch(store_url: str, tmp_path: Path) -> None:
    mod = _load_graph_module(tmp_path)
    graph, saver = mod.build(store_url, interrupt=False)
    config = {"configurable": {"thread_id": "run-2"}}
    assert graph.invoke({"n": 2, "path": []}, config) == {"n": 3, "path": ["inc", "big"]}
    entity = saver.entity_id("run-2")
    sm = saver.sm
    main_head = sm.head_version(entity)
    past = [h for h in graph.get_state_history(config) if h.metadata["step"] == 0][0]
    fork_config = graph.update_state(past.config, {"n": 0})
    assert graph.invoke(None, fork_config) == {"n": 1, "path": ["inc", "small"]}

    branches = sm.branches(entity)
    assert len(branches) == 2
    fork = branches[branches["branch"] != "main"].iloc[0]
    assert fork["branch"] == f"fork-{fork_config['configurable']['checkpoint_id']}"
    rows = sm.history(entity)
    past_row = rows[[m.get("checkpoint_id") == past.config["configurable"]["checkpoint_id"] for m in rows["metadata"]]]
    assert int(fork["base_version"]) == int(past_row["version"].iloc[0])
    assert sm.head_version(entity) == main_head  # main is untouched
    assert sm.load(entity, branch=fork["branch"])["path"] == ["inc", "small"]
    # LangGraph sees the newest checkpoint (on the fork) and both lineages in its history
    assert graph.get_state(config).values == {"n": 1, "path": ["inc", "small"]}
    steps = [h.metadata["step"] for h in graph.get_state_history(config)]
    assert len(steps) == len(rows) and steps.count(2) == 2

    from statekit.panels import panel

    shown = panel(sm, entity)  # the notebook panel draws the fork as its own lane
    try:
        assert set(shown.timeline.lanes) == {"main", fork["branch"]}
        assert shown.timeline.heads == {"main": main_head, fork["branch"]: int(fork["head_version"])}
    finally:
        shown.close()

    # copying the thread keeps its branches and both lineages
    saver.copy_thread("run-2", "run-2-copy")
    copy_entity = saver.entity_id("run-2-copy")
    copied = sm.branches(copy_entity)
    assert list(copied["branch"]) == list(branches["branch"])
    assert list(copied["base_version"].fillna(0)) == list(branches["base_version"].fillna(0))
    copy_config = {"configurable": {"thread_id": "run-2-copy"}}
    assert graph.get_state(copy_config).values == {"n": 1, "path": ["inc", "small"]}
    assert [h.values for h in graph.get_state_history(copy_config)] == [
        h.values for h in graph.get_state_history(config)]
    assert sm.verify().empty
    saver.close()


# ---------------------------------------------------------------------------- storage


def _put(saver: StatekitSaver, thread: str, values: dict[str, Any], versions: dict[str, int],
         parent: dict[str, Any] | None = None, new_versions: dict[str, int] | None = None,
         step: int = 0) -> dict[str, Any]:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return saver.put(config, cp, {"source": "loop", "step": step, "parents": {}},
                     versions if new_versions is None else new_versions)


def test_unchanged_channels_are_carried_over_not_rewritten(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    doc = "lorem ipsum " * 40_000  # ~480 KB of plain JSON: stored as content-addressed chunks
    first = _put(saver, "t", {"doc": doc, "n": 1}, {"doc": 1, "n": 1})
    second = _put(saver, "t", {"doc": doc, "n": 2}, {"doc": 1, "n": 2}, parent=first, new_versions={"n": 2}, step=1)
    entity = saver.entity_id("t")
    h = sm.history(entity)
    assert h["new_bytes"].iloc[0] > 400_000
    assert h["new_bytes"].iloc[1] < 5_000  # one save, and the document is not written again
    assert list(h["names"].iloc[1]) == ["doc", "__checkpoint__", "n"]
    assert saver.get_tuple(second).checkpoint["channel_values"] == {"doc": doc, "n": 2}
    assert saver.get_tuple(first).checkpoint["channel_values"] == {"doc": doc, "n": 1}
    # a channel the next checkpoint no longer has is dropped, not carried over
    third = _put(saver, "t", {"n": 3}, {"n": 3}, parent=second, new_versions={"n": 3}, step=2)
    assert saver.get_tuple(third).checkpoint["channel_values"] == {"n": 3}


def test_listing_without_a_thread_covers_every_thread(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    a1 = _put(saver, "a", {"n": 1}, {"n": 1})
    b1 = _put(saver, "b", {"n": 1}, {"n": 1})
    saver.put_writes(b1, [("n", 5)], "task")
    a2 = _put(saver, "a", {"n": 2}, {"n": 2}, parent=a1, step=1)
    ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(None)]
    assert ids == sorted(c["configurable"]["checkpoint_id"] for c in (a1, b1, a2))[::-1]
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None, filter={"step": 1})] == ["a"]
    assert [t.pending_writes for t in saver.list(None, limit=3) if t.config["configurable"]["thread_id"] == "b"] == [
        [("task", "n", 5)]]


def test_a_put_is_one_save_and_nothing_else(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    first = _put(saver, "t", {"n": 1, "doc": "d"}, {"n": 1, "doc": 1})
    calls: list[str] = []
    for name in ("run_hot", "run_read", "run_write"):
        real = getattr(sm.db, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(sm.db, name, counted)
    _put(saver, "t", {"n": 2, "doc": "d"}, {"n": 2, "doc": 1}, parent=first, new_versions={"n": 2}, step=1)
    assert len(calls) == 1  # one transaction: the save (its parent was known from the first put)
    assert sm.metrics()["operations"]["save"]["count"] == 2


def test_values_that_are_not_json_come_back_as_langgraphs_own_saver_gives_them(sm: StateManager) -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    values = {
        "messages": [HumanMessage(content="hi", id="1"), AIMessage(content="hello", id="2")],
        "when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
        "raw": b"\x00\x01binary",
        "pair": (1, "a"),
        "tags": {"x", "y"},
    }
    ours = StatekitSaver(sm)
    got = ours.get_tuple(_put(ours, "t", values, {k: 1 for k in values})).checkpoint["channel_values"]
    theirs = InMemorySaver()
    expected = theirs.get_tuple(_put(theirs, "t", values, {k: 1 for k in values})).checkpoint["channel_values"]
    assert got == expected
    assert got["messages"] == values["messages"] and got["when"] == values["when"] and got["raw"] == values["raw"]
    assert type(got["tags"]) is set and got["pair"] == [1, "a"]  # msgpack has no tuple, in either saver


@dataclasses.dataclass
class _Tracked:
    """A type whose construction leaves a trace, to prove loading never builds it."""

    value: int

    def __post_init__(self) -> None:
        _BUILT.append(self.value)


_BUILT: list[int] = []


def test_loading_never_constructs_types_outside_the_allowlist(sm: StateManager) -> None:
    writer = StatekitSaver(sm, serde=JsonPlusSerializer())  # permissive: whoever wrote the checkpoint
    stored = _put(writer, "t", {"obj": _Tracked(7)}, {"obj": 1})
    _BUILT.clear()
    reader = StatekitSaver(sm)  # the default: strict msgpack
    got = reader.get_tuple(stored).checkpoint["channel_values"]["obj"]
    assert _BUILT == [] and not isinstance(got, _Tracked)
    # a graph lists its own state types; a saver told about them rebuilds them
    allowed = StatekitSaver(sm).with_allowlist([(_Tracked.__module__, _Tracked.__name__)])
    assert isinstance(allowed.get_tuple(stored).checkpoint["channel_values"]["obj"], _Tracked)


def test_pending_writes_follow_langgraphs_idempotence_rules(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    stored = _put(saver, "t", {"n": 1}, {"n": 1})
    saver.put_writes(stored, [("n", 1), ("n", 2)], "task-b", "~__pregel_pull, b")
    saver.put_writes(stored, [("n", 99)], "task-b", "~__pregel_pull, b")  # a retry: the first record stays
    saver.put_writes(stored, [("__error__", "boom")], "task-a", "~__pregel_pull, a")
    saver.put_writes(stored, [("__error__", "boom again")], "task-a", "~__pregel_pull, a")  # special: replaced
    assert saver.get_tuple(stored).pending_writes == [
        ("task-a", "__error__", "boom again"), ("task-b", "n", 1), ("task-b", "n", 2),
    ]
    assert len(sm.history(saver.writes_entity_id("t"))) == 4  # every call is a version


def test_delete_thread_removes_its_payloads_keeps_the_audit_trail_and_the_id_can_be_reused(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    keep = _put(saver, "keep", {"blob": b"k" * 300_000}, {"blob": 1})
    gone = _put(saver, "gone", {"blob": b"g" * 300_000}, {"blob": 1})
    sub = {"configurable": {"thread_id": "gone", "checkpoint_ns": "child:1"}}
    saver.put(sub, empty_checkpoint(), {"source": "loop", "step": 0}, {})
    saver.put_writes(gone, [("x", 1)], "task")
    assert saver.get_tuple(gone) is not None  # now cached in the StateManager too

    def payload_rows() -> int:
        with sm.db.read() as conn:
            return conn.execute(sa.text("SELECT COUNT(*) FROM state_payloads")).scalar_one()

    before = payload_rows()
    saver.delete_thread("gone")
    assert payload_rows() < before
    assert sm.verify().empty  # no dangling link, head or parent left behind
    left = sm.entities().set_index("entity_id")
    assert {e: int(left.loc[e, "snapshots"]) for e in left.index if "gone" in e} == {
        saver.entity_id("gone"): 0, saver.entity_id("gone", "child:1"): 0, saver.writes_entity_id("gone"): 0}
    removal = sm.transitions(saver.entity_id("gone"))
    removal = removal[removal["transition_type"] == "retain"]
    assert list(removal["from_version"]) == [1] and "delete_thread('gone')" in removal["reason"].iloc[0]
    assert saver.get_tuple({"configurable": {"thread_id": "gone", "checkpoint_ns": ""}}) is None
    assert list(saver.list({"configurable": {"thread_id": "gone"}})) == []
    assert saver.get_tuple(keep).checkpoint["channel_values"]["blob"] == b"k" * 300_000
    again = _put(saver, "gone", {"blob": b"new"}, {"blob": 1})  # numbering carries on: no stale cache
    assert saver.get_tuple(again).checkpoint["channel_values"]["blob"] == b"new"
    assert sm.load(saver.entity_id("gone"), 2)["blob"]["data"] == b"new"
    assert sm.verify().empty


def test_thread_ids_that_look_like_separators_stay_apart(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    a = _put(saver, "a/b", {"v": "slash"}, {"v": 1})
    b = _put(saver, "a", {"v": "plain"}, {"v": 1})
    c = _put(saver, "a#writes", {"v": "hash"}, {"v": 1})
    long_id = "x" * 400
    d = _put(saver, long_id, {"v": "long"}, {"v": 1})
    saver.delete_thread("a")
    assert saver.get_tuple(b) is None
    assert saver.get_tuple(a).checkpoint["channel_values"] == {"v": "slash"}
    assert saver.get_tuple(c).checkpoint["channel_values"] == {"v": "hash"}
    assert saver.get_tuple(d).config["configurable"]["thread_id"] == long_id


def test_importing_the_adapter_without_langgraph_says_what_to_install() -> None:
    code = textwrap.dedent("""
        import sys
        for name in ("langgraph", "langchain_core"):
            sys.modules[name] = None  # as if not installed
        import statekit, statekit.integrations
        try:
            import statekit.integrations.langgraph
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without langgraph")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "statekit[langgraph]"' in done.stdout
