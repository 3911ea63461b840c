"""StatekitSaver gives a graph its own state types back (pydantic models, dataclasses, enums,
langchain messages), as SqliteSaver does by default, and still constructs nothing that a
writer without your signing key chose.

Every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

try:
    import langgraph.checkpoint.sqlite  # noqa: F401
except ImportError:  # CI installs the extra: there, a missing framework is a failure, not a skip
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip('needs pip install "statekit[langgraph]"', allow_module_level=True)

from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402

from statekit import StateManager  # noqa: E402
from statekit.integrations.langgraph import StatekitSaver  # noqa: E402

GRAPH = textwrap.dedent('''
    """A graph whose state holds a pydantic model, a dataclass, an enum and messages."""
    import dataclasses, enum, json, sys
    from typing import Annotated, TypedDict

    from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages
    from pydantic import BaseModel

    BUILT = []


    class Mood(enum.Enum):
        CALM = "calm"
        BUSY = "busy"


    class Profile(BaseModel):
        name: str
        tags: list[str] = []


    @dataclasses.dataclass
    class Point:
        x: int
        y: int

        def __post_init__(self):
            BUILT.append(self.x)


    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]
        profile: Profile
        where: Point
        mood: Mood


    def first(state):
        return {"messages": [AIMessage("noted", id="m2")], "profile": Profile(name="ana", tags=["x"]),
                "where": Point(1, 2), "mood": Mood.BUSY}


    def second(state):  # attribute access: a dict here raises AttributeError
        return {"messages": [AIMessage(f"{state['profile'].name} at {state['where'].x}", id="m3")],
                "where": Point(state["where"].x + 10, state["where"].y), "mood": Mood.CALM}


    def build(saver):
        builder = StateGraph(State)
        builder.add_node("first", first)
        builder.add_node("second", second)
        builder.add_edge(START, "first")
        builder.add_edge("first", "second")
        builder.add_edge("second", END)
        return builder.compile(checkpointer=saver, interrupt_before=["second"])


    def describe(values):
        return {k: [type(v).__name__, repr(v)] for k, v in sorted(values.items())}


    if __name__ == "__main__":
        from statekit.integrations.langgraph import StatekitSaver

        url, step = sys.argv[1], sys.argv[2]
        graph = build(StatekitSaver(url))
        config = {"configurable": {"thread_id": "t"}}
        if step == "start":
            graph.invoke({"messages": [HumanMessage("hi", id="m1")]}, config)
        elif step == "resume":
            graph.invoke(None, config)
        state = graph.get_state(config).values
        print(json.dumps({"values": describe(state), "built": BUILT,
                          "messages": [type(m).__name__ for m in state["messages"]]}))
''')


def _run(tmp_path: Path, url: str, step: str, key: str | None = None) -> dict[str, Any]:
    script = tmp_path / "typed_graph.py"
    script.write_text(GRAPH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if key is not None:
        env["STATEKIT_KEY"] = key
    done = subprocess.run([sys.executable, str(script), url, step], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _module(tmp_path: Path) -> Any:
    import importlib.util

    path = tmp_path / "typed_graph_mod.py"
    path.write_text(GRAPH)
    spec = importlib.util.spec_from_file_location("typed_graph_mod", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["typed_graph_mod"] = module
    spec.loader.exec_module(module)
    return module


def test_state_types_come_back_as_sqlitesaver_gives_them(sm: StateManager, tmp_path: Path) -> None:
    mod = _module(tmp_path)
    found = {}
    for name, saver in (("ours", StatekitSaver(sm)),
                        ("theirs", SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False)))):
        graph = mod.build(saver)
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke({"messages": [mod.HumanMessage("hi", id="m1")]}, config)
        graph.invoke(None, config)
        history = [mod.describe(s.values) for s in graph.get_state_history(config)]
        found[name] = (mod.describe(graph.get_state(config).values), history)
    assert found["ours"] == found["theirs"]
    assert found["ours"][0]["profile"][0] == "Profile" and found["ours"][0]["where"] == ["Point", "Point(x=11, y=2)"]


def test_a_fresh_process_resumes_with_the_graphs_own_types(store_url: str, tmp_path: Path) -> None:
    started = _run(tmp_path, store_url, "start")
    assert started["values"]["profile"][0] == "Profile"
    resumed = _run(tmp_path, store_url, "resume")  # a new process: the saver has written nothing yet
    assert resumed["values"]["where"] == ["Point", "Point(x=11, y=2)"]
    assert resumed["values"]["mood"] == ["Mood", "<Mood.CALM: 'calm'>"]
    assert resumed["values"]["profile"] == ["Profile", "Profile(name='ana', tags=['x'])"]
    assert resumed["messages"] == ["HumanMessage", "AIMessage", "AIMessage"]


def test_values_written_with_another_key_are_never_constructed(store_url: str, tmp_path: Path) -> None:
    _run(tmp_path, store_url, "start", key="a" * 40)  # someone else's process, someone else's key
    read = _run(tmp_path, store_url, "state", key="b" * 40)
    assert read["built"] == []  # Point.__post_init__ never ran
    assert read["values"]["where"][0] == "dict" and read["values"]["profile"][0] == "dict"
    assert read["messages"] == ["HumanMessage", "AIMessage"]  # LangGraph's safe types are rebuilt still


@dataclasses.dataclass
class _Tracked:
    value: int

    def __post_init__(self) -> None:
        _BUILT.append(self.value)


_BUILT: list[int] = []


def test_an_altered_class_list_or_payload_is_not_trusted(sm: StateManager) -> None:
    writer = StatekitSaver(sm)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"obj": _Tracked(7)}
    checkpoint["channel_versions"] = {"obj": 1}
    stored = writer.put(config, checkpoint, {"source": "input", "step": -1, "parents": {}}, {"obj": 1})
    assert isinstance(StatekitSaver(sm).get_tuple(stored).checkpoint["channel_values"]["obj"], _Tracked)

    entity = writer.entity_id("t")
    snap = sm.get(entity)
    state = sm.load(entity)
    for forged in ({**state["obj"], "types": [*state["obj"]["types"], ["os", "system"]]},
                   {**state["obj"], "data": state["obj"]["data"].replace(b"\x07", b"\x08")}):
        sm.save(entity, {**state, "obj": forged}, snap.state_type, metadata=snap.metadata)
        _BUILT.clear()
        got = StatekitSaver(sm).get_tuple(stored).checkpoint["channel_values"]["obj"]
        assert _BUILT == [] and not isinstance(got, _Tracked)
