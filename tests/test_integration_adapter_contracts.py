"""The adapters keep the frameworks' contracts where their own savers and sessions do:

- ``checkpoint_id=""`` means the newest checkpoint (get_tuple) and no checkpoint filter (list);
- a thread copied from another saver, whose channel versions are strings, can be resumed;
- ``async with saver`` works; a closed StatekitSession refuses every call with a RuntimeError;
  ``session_settings`` is a SessionSettings (a dict is converted, unknown keys are refused).

Each compares with the framework's own store in the same test where one exists.
"""

from __future__ import annotations

import asyncio
import operator
import os
import sqlite3
from typing import Annotated, Any, TypedDict

import pytest

try:
    import agents  # noqa: F401
    import langgraph.checkpoint.sqlite  # noqa: F401
except ImportError:  # CI installs the extras: there, a missing framework is a failure, not a skip
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip('needs pip install "statekit[langgraph,openai-agents]"', allow_module_level=True)

from agents import Agent, Runner  # noqa: E402
from agents.memory import SessionSettings  # noqa: E402
from agents.testing import ScriptedModel  # noqa: E402
from langgraph.checkpoint.base import BaseCheckpointSaver  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from statekit import StateManager  # noqa: E402
from statekit.errors import StatekitError  # noqa: E402
from statekit.integrations.langgraph import StatekitSaver  # noqa: E402
from statekit.integrations.openai_agents import StatekitSession  # noqa: E402


class Steps(TypedDict):
    n: int
    seen: Annotated[list[str], operator.add]


def _graph(saver: BaseCheckpointSaver) -> Any:
    builder = StateGraph(Steps)
    builder.add_node("a", lambda s: {"n": s["n"] + 1, "seen": ["a"]})
    builder.add_node("b", lambda s: {"n": s["n"] * 10, "seen": ["b"]})
    builder.add_node("c", lambda s: {"n": s["n"] - 3, "seen": ["c"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=saver, interrupt_before=["b", "c"])


def _sqlite_saver() -> SqliteSaver:
    return SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))


# ---------------------------------------------------------------------------- checkpoint_id=""


def test_an_empty_checkpoint_id_means_the_newest_as_in_langgraphs_savers(sm: StateManager) -> None:
    ours, theirs = StatekitSaver(sm), _sqlite_saver()
    found: dict[str, Any] = {}
    for name, saver in (("ours", ours), ("theirs", theirs)):
        graph = _graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke({"n": 1, "seen": []}, config)
        graph.invoke(None, config)
        empty = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": ""}}
        newest = saver.get_tuple(empty)
        assert newest is not None
        assert newest.config == saver.get_tuple(config).config  # type: ignore[union-attr]
        listed = list(saver.list(empty))
        assert [t.config for t in listed] == [t.config for t in saver.list(config)]
        found[name] = (newest.checkpoint["channel_values"], len(listed),
                       [t.metadata["step"] for t in listed])
    assert found["ours"] == found["theirs"]


# ---------------------------------------------------------------------------- string channel versions


def _copy_thread(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, thread_id: str) -> None:
    """Copy a thread checkpoint by checkpoint, oldest first, as a migration between savers does."""
    for tup in reversed(list(src.list({"configurable": {"thread_id": thread_id}}))):
        parent = tup.parent_config or {"configurable": {"thread_id": thread_id,
                                                        "checkpoint_ns": tup.config["configurable"]["checkpoint_ns"]}}
        stored = dst.put(parent, tup.checkpoint, tup.metadata, tup.checkpoint["channel_versions"])
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in tup.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            dst.put_writes(stored, writes, task_id)


@pytest.mark.parametrize("source", [_sqlite_saver, InMemorySaver])
def test_a_thread_copied_from_another_saver_resumes(sm: StateManager, source: Any) -> None:
    theirs = source()
    config = {"configurable": {"thread_id": "t"}}
    _graph(theirs).invoke({"n": 1, "seen": []}, config)  # stops before b
    versions = theirs.get_tuple(config).checkpoint["channel_versions"]
    assert all(isinstance(v, str) for v in versions.values())  # their savers count in strings

    ours = StatekitSaver(sm)
    _copy_thread(theirs, ours, "t")
    graph = _graph(ours)
    assert graph.get_state(config).next == ("b",)
    graph.invoke(None, config)  # b: was NotImplementedError in get_next_version
    assert graph.invoke(None, config) == {"n": 17, "seen": ["a", "b", "c"]}
    after = ours.get_tuple(config).checkpoint["channel_versions"]
    assert all(isinstance(v, str) for v in after.values())
    assert after["n"] > versions["n"]
    # the same resume on their own saver gives the same state and history
    _graph(theirs).invoke(None, config)
    _graph(theirs).invoke(None, config)
    assert graph.get_state(config).values == _graph(theirs).get_state(config).values
    assert len(list(ours.list(config))) == len(list(theirs.list(config)))


def test_next_version_keeps_the_kind_and_grows(sm: StateManager) -> None:
    saver = StatekitSaver(sm)
    assert saver.get_next_version(None, None) == 1
    assert saver.get_next_version(7, None) == 8
    assert saver.get_next_version(1.5, None) == 2.5
    theirs = InMemorySaver()
    current = theirs.get_next_version(None, None)
    for _ in range(12):  # across a change in the number of digits
        following = saver.get_next_version(current, None)
        assert isinstance(following, str) and following > current
        assert int(following.split(".")[0]) == int(current.split(".")[0]) + 1
        current = theirs.get_next_version(following, None)  # and back: their saver reads ours
    for odd in ("v9", "9", "abc.def"):  # strings of other shapes still grow
        assert saver.get_next_version(odd, None) > odd
    with pytest.raises(StatekitError):
        saver.get_next_version(object(), None)


# ---------------------------------------------------------------------------- async with, close, settings


def test_async_with_saver_runs_a_graph_and_closes_the_store(sqlite_url: str) -> None:
    async def scenario() -> tuple[Any, StatekitSaver]:
        async with StatekitSaver(sqlite_url) as saver:
            graph = _graph(saver)
            config = {"configurable": {"thread_id": "t"}}
            await graph.ainvoke({"n": 1, "seen": []}, config)
            await graph.ainvoke(None, config)
            return await graph.ainvoke(None, config), saver

    result, saver = asyncio.run(scenario())
    assert result == {"n": 17, "seen": ["a", "b", "c"]}
    assert saver.sm.db.engine.pool.checkedout() == 0
    with StatekitSaver(sqlite_url) as again:  # what it saved is there
        assert again.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["channel_values"]["n"] == 17


def test_a_closed_session_refuses_every_call_like_the_sdks_sessions(sm: StateManager) -> None:
    session = StatekitSession("s", sm)
    asyncio.run(session.add_items([{"role": "user", "content": "hi"}]))
    session.close()
    calls = [session.get_items(), session.add_items([]), session.add_items([{"role": "user", "content": "x"}]),
             session.pop_item(), session.clear_session()]
    for call in calls:
        with pytest.raises(RuntimeError, match="is closed") as caught:
            asyncio.run(call)
        assert isinstance(caught.value, StatekitError)
    session.close()  # closing twice is fine
    assert [i["content"] for i in asyncio.run(StatekitSession("s", sm).get_items())] == ["hi"]  # nothing changed


def test_session_settings_are_a_sessionsettings_object(sm: StateManager) -> None:
    assert StatekitSession("a", sm).session_settings == SessionSettings()
    assert StatekitSession("b", sm, session_settings=SessionSettings(limit=3)).session_settings.limit == 3
    converted = StatekitSession("c", sm, session_settings={"limit": 2}).session_settings
    assert isinstance(converted, SessionSettings) and converted.limit == 2
    for bad, words in (({"limitt": 1}, "Unknown session settings: limitt"), ({"limit": "many"}, "limit"),
                       (5, "SessionSettings or a dict")):
        with pytest.raises(TypeError, match=words) as caught:
            StatekitSession("d", sm, session_settings=bad)  # type: ignore[arg-type]
        assert isinstance(caught.value, StatekitError)


def test_runner_uses_a_session_built_with_a_settings_dict(sm: StateManager) -> None:
    from openai.types.responses import ResponseOutputMessage, ResponseOutputText

    reply = ResponseOutputMessage(id="1", type="message", role="assistant", status="completed",
                                  content=[ResponseOutputText(text="ok", type="output_text", annotations=[])])
    session = StatekitSession("run", sm, session_settings={"limit": 2})
    asyncio.run(session.add_items([{"role": "user", "content": f"turn {i}"} for i in range(5)]))
    model = ScriptedModel()
    model.enqueue([reply])
    result = asyncio.run(Runner.run(Agent(name="a", model=model), "next", session=session))
    assert result.final_output == "ok"
    history = [i.get("content") for i in model.calls[-1].input if i.get("content") != "next"]
    assert history == ["turn 3", "turn 4"]  # the limit of 2 from the dict
