"""StatekitSession, in the style of the Agents SDK's own SQLiteSession tests: add, get with a
limit, pop and clear, across process restarts, plus undo through statekit's rollback.

No model and no network: the SDK's session protocol is called directly.
Every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

try:
    import agents  # noqa: F401
except ImportError:  # CI installs the extra: there, a missing framework is a failure, not a skip
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip('needs pip install "statekit[openai-agents]"', allow_module_level=True)

from agents.memory import Session, SessionSettings  # noqa: E402

from statekit import StateManager  # noqa: E402
from statekit.integrations.openai_agents import StatekitSession  # noqa: E402

SIX = [
    {"role": "user", "content": "Message 1"},
    {"role": "assistant", "content": "Response 1"},
    {"role": "user", "content": "Message 2"},
    {"role": "assistant", "content": "Response 2"},
    {"role": "user", "content": "Message 3"},
    {"role": "assistant", "content": "Response 3"},
]

SESSION_SCRIPT = textwrap.dedent('''
    """Run session operations given as JSON on the command line, print their results as JSON."""
    import asyncio, json, sys
    from statekit.integrations.openai_agents import StatekitSession

    async def main(url, session_id, ops):
        session = StatekitSession(session_id, url)
        out = []
        for op, arg in ops:
            if op == "add":
                out.append(await session.add_items(arg))
            elif op == "get":
                out.append(await session.get_items(limit=arg))
            elif op == "pop":
                out.append(await session.pop_item())
            elif op == "clear":
                out.append(await session.clear_session())
        session.close()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
''')


def _in_fresh_process(tmp_path: Any, url: str, session_id: str, ops: list[Any]) -> list[Any]:
    script = tmp_path / "session_ops.py"
    script.write_text(SESSION_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script), url, session_id, json.dumps(ops)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_session_implements_the_sdk_protocol(sm: StateManager) -> None:
    assert isinstance(StatekitSession("s", sm), Session)


def test_add_get_pop_and_clear(sm: StateManager) -> None:
    async def scenario() -> None:
        session = StatekitSession("pop_test", sm)
        assert await session.pop_item() is None  # popping from an empty session
        assert await session.get_items() == []
        await session.add_items(SIX[:2])
        await session.add_items(SIX[2:3])
        assert [i["content"] for i in await session.get_items()] == ["Message 1", "Response 1", "Message 2"]
        popped = await session.pop_item()
        assert popped == {"role": "user", "content": "Message 2"}
        assert (await session.get_items())[-1]["content"] == "Response 1"
        assert (await session.pop_item())["content"] == "Response 1"
        assert (await session.pop_item())["content"] == "Message 1"
        assert await session.pop_item() is None
        assert await session.get_items() == []
        await session.add_items(SIX)
        await session.clear_session()
        assert await session.get_items() == []

    asyncio.run(scenario())


def test_get_items_with_limit(sm: StateManager) -> None:
    async def scenario() -> None:
        session = StatekitSession("count_test", sm)
        await session.add_items(SIX)
        assert len(await session.get_items()) == 6
        assert [i["content"] for i in await session.get_items(limit=2)] == ["Message 3", "Response 3"]
        assert [i["content"] for i in await session.get_items(limit=4)] == [
            "Message 2", "Response 2", "Message 3", "Response 3"]
        assert len(await session.get_items(limit=10)) == 6
        assert await session.get_items(limit=0) == []
        limited = StatekitSession("count_test", sm, session_settings=SessionSettings(limit=3))
        assert [i["content"] for i in await limited.get_items()] == ["Response 2", "Message 3", "Response 3"]

    asyncio.run(scenario())


def test_sessions_are_isolated(sm: StateManager) -> None:
    async def scenario() -> None:
        one, two = StatekitSession("session_1", sm), StatekitSession("session_2", sm)
        await one.add_items([{"role": "user", "content": "Session 1 message"}])
        await two.add_items([{"role": "user", "content": "Session 2 message 1"},
                             {"role": "user", "content": "Session 2 message 2"}])
        assert (await two.pop_item())["content"] == "Session 2 message 2"
        assert [i["content"] for i in await one.get_items()] == ["Session 1 message"]
        assert [i["content"] for i in await two.get_items()] == ["Session 2 message 1"]

    asyncio.run(scenario())


def test_every_change_is_a_version_and_rollback_undoes_pop_and_clear(sm: StateManager) -> None:
    async def scenario() -> None:
        session = StatekitSession("undo", sm)
        await session.add_items(SIX)
        await session.pop_item()
        sm.rollback(session.entity_id, reason="undo the pop")
        assert await session.get_items() == SIX
        await session.clear_session()
        assert await session.get_items() == []
        sm.rollback(session.entity_id, reason="undo the clear")
        assert await session.get_items() == SIX
        await session.add_items([{"role": "user", "content": "after the undo"}])  # the session follows the rollback
        assert len(await session.get_items()) == 7

    asyncio.run(scenario())
    history = sm.history("openai-agents:undo")
    assert list(history["kind"]) == ["create", "update", "rollback", "update", "rollback", "update"]
    assert history["message"].iloc[1] == "pop_item: removed 000006 (assistant)"
    assert history["message"].iloc[3] == "clear_session: removed 6 items"
    assert set(history["actor"][history["kind"] != "rollback"]) == {"openai-agents"}


def test_two_writers_on_one_session_lose_nothing(store_url: str) -> None:
    async def scenario() -> None:
        with StateManager(store_url) as sm_a, StateManager(store_url) as sm_b:
            a, b = StatekitSession("shared", sm_a), StatekitSession("shared", sm_b)
            await a.add_items([{"role": "user", "content": "a1"}])
            await b.add_items([{"role": "user", "content": "b1"}])  # b never saw a's head
            await a.add_items([{"role": "user", "content": "a2"}])  # a's cached head is stale now
            await asyncio.gather(*(w.add_items([{"role": "user", "content": f"{n}{i}"}])
                                   for i in range(3, 6) for w, n in ((a, "a"), (b, "b"))))
            contents = [i["content"] for i in await a.get_items()]
            assert contents[:3] == ["a1", "b1", "a2"] and sorted(contents) == sorted(
                ["a1", "b1", "a2", "a3", "b3", "a4", "b4", "a5", "b5"])
            assert (await b.pop_item())["content"] == contents[-1]

    asyncio.run(scenario())


@pytest.mark.slow  # a second Python process importing the Agents SDK
def test_add_get_pop_and_clear_across_process_restarts(store_url: str, tmp_path: Any) -> None:
    async def writer() -> Any:
        session = StatekitSession("restart", store_url)
        try:
            await session.add_items(SIX[:4])
            await session.add_items(SIX[4:])
            return await session.pop_item()
        finally:
            session.close()

    assert asyncio.run(writer()) == SIX[-1]
    new = {"role": "user", "content": "written by the second process"}
    results = _in_fresh_process(tmp_path, store_url, "restart", [
        ["get", None], ["get", 2], ["pop", None], ["add", [new]], ["get", 2], ["clear", None], ["get", None],
    ])
    assert results == [SIX[:5], SIX[3:5], SIX[4], None, [SIX[3], new], None, []]

    async def reader() -> list[Any]:
        session = StatekitSession("restart", store_url)
        try:
            return await session.get_items()
        finally:
            session.close()

    assert asyncio.run(reader()) == []
    with StateManager(store_url) as sm:
        history = sm.history("openai-agents:restart")
        assert [m.split(":")[0] for m in history["message"]] == [
            "add_items", "add_items", "pop_item", "pop_item", "add_items", "clear_session"]
        sm.rollback("openai-agents:restart", reason="the clear was a mistake")
    assert asyncio.run(reader()) == [*SIX[:4], new]


def test_importing_the_adapter_without_the_sdk_says_what_to_install() -> None:
    code = textwrap.dedent("""
        import sys
        for name in ("agents", "openai"):
            sys.modules[name] = None  # as if not installed
        import statekit, statekit.integrations
        try:
            import statekit.integrations.openai_agents
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without the Agents SDK")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "statekit[openai-agents]"' in done.stdout
