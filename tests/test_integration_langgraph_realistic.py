"""A realistic LangGraph run gives the same results on StatekitSaver as on SqliteSaver.

The graph plans, then runs a checkpointed research subgraph and an outline node in parallel,
writes a draft and stops at a human review (``interrupt()``). The scenario resumes it, forks a
past checkpoint with ``update_state``, replays another, and reads the history, the subgraph's
state and filtered listings; once with the sync API and once with the async API, every run with
``durability="sync"``. Checkpoint ids differ between savers, so they are compared by position.

StatekitSaver runs on SQLite and on PostgreSQL (the ``store_url`` fixture).
"""

from __future__ import annotations

import asyncio
import operator
import os
from typing import Annotated, Any, TypedDict

import pytest

try:
    import langgraph.checkpoint.sqlite  # noqa: F401
except ImportError:  # CI installs the extra: there, a missing framework is a failure, not a skip
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip('needs pip install "statekit[langgraph]"', allow_module_level=True)

from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

from statekit.integrations.langgraph import StatekitSaver  # noqa: E402


class Research(TypedDict):
    topic: str
    findings: Annotated[list[str], operator.add]


class Article(TypedDict):
    topic: str
    notes: Annotated[list[str], operator.add]
    findings: Annotated[list[str], operator.add]
    outline: list[str]
    draft: str
    verdict: str


def _research() -> Any:
    sub = StateGraph(Research)
    sub.add_node("search", lambda s: {"findings": [f"found {s['topic']}"]})
    sub.add_node("summarize", lambda s: {"findings": [f"summary of {len(s['findings'])} findings"]})
    sub.add_edge(START, "search")
    sub.add_edge("search", "summarize")
    sub.add_edge("summarize", END)
    return sub.compile()  # checkpointed in the parent's saver, under its own namespace


def _review(state: Article) -> dict[str, Any]:
    answer = interrupt({"draft": state["draft"]})
    return {"verdict": f"{answer} for {state['topic']}"}


def build(saver: Any) -> Any:
    builder = StateGraph(Article)
    builder.add_node("plan", lambda s: {"topic": s["topic"].strip().lower(), "notes": ["planned"]})
    builder.add_node("research", _research())
    builder.add_node("outline", lambda s: {"outline": [f"intro to {s['topic']}", "body", "end"]})
    builder.add_node("write", lambda s: {"draft": f"{s['topic']}: {len(s['findings'])} findings, "
                                                  f"{len(s['outline'])} parts"})
    builder.add_node("review", _review)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "research")
    builder.add_edge("plan", "outline")
    builder.add_edge(["research", "outline"], "write")
    builder.add_edge("write", "review")
    builder.add_edge("review", END)
    return builder.compile(checkpointer=saver)


START_INPUT = {"topic": "  Savers ", "notes": [], "findings": [], "outline": [], "draft": "", "verdict": ""}


class Ids:
    """Checkpoint ids renamed by order of first appearance, so two savers' runs compare."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, config: Any) -> str | None:
        if not config:
            return None
        cid = config["configurable"].get("checkpoint_id")
        return self.names.setdefault(cid, f"c{len(self.names)}") if cid else None


def _result(values: dict[str, Any]) -> dict[str, Any]:
    """An invoke result, with interrupts by value (their ids hash checkpoint ids, which differ between savers)."""
    return {k: [i.value for i in v] if k == "__interrupt__" else v for k, v in values.items()}


def _snapshot(ids: Ids, snap: Any) -> dict[str, Any]:
    return {"values": snap.values, "next": snap.next, "id": ids(snap.config), "parent": ids(snap.parent_config),
            "source": snap.metadata.get("source"), "step": snap.metadata.get("step"),
            "tasks": sorted((t.name, bool(t.interrupts)) for t in snap.tasks),
            "interrupts": [i.value for i in snap.interrupts]}


def _tuples(ids: Ids, tuples: Any) -> list[tuple[Any, ...]]:
    return [(ids(t.config), t.metadata.get("source"), t.metadata.get("step"), t.config["configurable"]["checkpoint_ns"])
            for t in tuples]


def scenario(saver: Any) -> dict[str, Any]:
    """Everything the sync API shows of one run, with checkpoint ids renamed by position."""
    graph = build(saver)
    ids = Ids()
    config = {"configurable": {"thread_id": "article"}}
    out: dict[str, Any] = {}
    out["first"] = _result(graph.invoke(START_INPUT, config, durability="sync"))
    out["paused"] = _snapshot(ids, graph.get_state(config))
    sub = graph.get_state(config, subgraphs=True)
    out["paused_tasks"] = [(t.name, t.state is not None) for t in sub.tasks]
    out["resumed"] = _result(graph.invoke(Command(resume="approved"), config, durability="sync"))
    history = list(graph.get_state_history(config))
    planned = next(s for s in history if s.next == ("research", "outline"))
    fork = graph.update_state(planned.config, {"topic": "forks"})
    out["forked_run"] = _result(graph.invoke(None, fork, durability="sync"))
    out["forked_done"] = _result(graph.invoke(Command(resume="rejected"), config, durability="sync"))
    written = next(s for s in history if s.next == ("review",))
    out["replayed"] = _result(graph.invoke(None, written.config, durability="sync"))
    out["history"] = [_snapshot(ids, s) for s in graph.get_state_history(config)]
    out["updates"] = _tuples(ids, saver.list(config, filter={"source": "update"}))
    out["limited"] = _tuples(ids, saver.list({"configurable": {"thread_id": "article", "checkpoint_ns": ""}},
                                             before=written.config, limit=3))
    out["all_namespaces"] = sorted(t[3].split(":")[0] for t in _tuples(ids, saver.list(config)))
    return out


async def ascenario(saver: Any) -> dict[str, Any]:
    """The same run through the async API."""
    graph = build(saver)
    ids = Ids()
    config = {"configurable": {"thread_id": "article"}}
    out: dict[str, Any] = {}
    out["first"] = _result(await graph.ainvoke(START_INPUT, config, durability="sync"))
    out["paused"] = _snapshot(ids, await graph.aget_state(config))
    out["resumed"] = _result(await graph.ainvoke(Command(resume="approved"), config, durability="sync"))
    history = [s async for s in graph.aget_state_history(config)]
    planned = next(s for s in history if s.next == ("research", "outline"))
    fork = await graph.aupdate_state(planned.config, {"topic": "forks"})
    out["forked_run"] = _result(await graph.ainvoke(None, fork, durability="sync"))
    out["forked_done"] = _result(await graph.ainvoke(Command(resume="rejected"), config, durability="sync"))
    out["history"] = [_snapshot(ids, s) async for s in graph.aget_state_history(config)]
    out["updates"] = _tuples(ids, [t async for t in saver.alist(config, filter={"source": "update"})])
    return out


def test_a_realistic_run_matches_sqlitesaver(store_url: str) -> None:
    with SqliteSaver.from_conn_string(":memory:") as theirs:
        expected = scenario(theirs)
    with StatekitSaver(store_url) as ours:
        got = scenario(ours)
    assert got == expected
    # the scenario did what it says
    assert expected["first"]["__interrupt__"][0] == {"draft": "savers: 2 findings, 3 parts"}
    assert expected["resumed"]["verdict"] == "approved for savers"
    assert expected["forked_done"]["verdict"] == "rejected for forks"
    assert expected["paused_tasks"] == [("review", False)] and expected["updates"]
    assert "research" in expected["all_namespaces"]


def test_the_async_api_matches_asyncsqlitesaver(store_url: str) -> None:
    async def theirs() -> dict[str, Any]:
        async with AsyncSqliteSaver.from_conn_string(":memory:") as saver:
            return await ascenario(saver)

    async def ours() -> dict[str, Any]:
        async with StatekitSaver(store_url) as saver:
            return await ascenario(saver)

    expected = asyncio.run(theirs())
    assert asyncio.run(ours()) == expected
    assert expected["forked_done"]["verdict"] == "rejected for forks"
