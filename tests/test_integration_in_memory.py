"""An in-memory store (``sqlite:///:memory:``) has one connection that every thread shares.

LangGraph writes checkpoints from worker threads and the Agents SDK's sessions run their
saves in ``asyncio.to_thread``: without a lock around each transaction, concurrent saves
failed with "cannot start a transaction within a transaction", lost writes, or crashed the
interpreter. The thread test runs in a subprocess so that a crash fails it instead of pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

THREADS_SCRIPT = textwrap.dedent('''
    import json, threading
    from statekit import StateManager, StateType

    sm = StateManager("sqlite:///:memory:")
    errors = []

    def worker(i):
        for j in range(25):
            try:
                sm.save(f"e{i}", {"j": j, "rows": list(range(j * 10))}, StateType.WORKFLOW_STATE, merge=j % 2 == 1)
                sm.load(f"e{i}")
            except Exception as exc:
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"errors": errors[:3],
                      "versions": [sorted(int(v) for v in sm.history(f"e{i}")["version"]) for i in range(6)],
                      "last": [sm.load(f"e{i}")["j"] for i in range(6)]}))
''')


SESSION_SCRIPT = textwrap.dedent('''
    import asyncio, json
    from statekit.integrations.openai_agents import StatekitSession

    async def scenario():
        first = StatekitSession("s0", "sqlite:///:memory:")
        sessions = [first] + [StatekitSession(f"s{i}", first.sm) for i in range(1, 4)]

        async def fill(session):
            await asyncio.gather(*(session.add_items([{"role": "user", "content": f"{session.session_id}-{k}"}])
                                   for k in range(25)))

        await asyncio.gather(*(fill(s) for s in sessions))
        return [sorted(i["content"] for i in await s.get_items()) for s in sessions]

    print(json.dumps(asyncio.run(scenario())))
''')


def _run(script: str) -> object:
    """Run ``script`` in a fresh interpreter (a crash fails the test) and return its last line as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_threads_saving_to_one_in_memory_store_lose_nothing() -> None:
    out = _run(THREADS_SCRIPT)
    assert isinstance(out, dict)
    assert out["errors"] == []
    assert out["versions"] == [list(range(1, 26))] * 6
    assert out["last"] == [24] * 6


def test_openai_sessions_on_an_in_memory_store_keep_every_item_under_gather() -> None:
    pytest.importorskip("agents")
    assert _run(SESSION_SCRIPT) == [sorted(f"s{i}-{k}" for k in range(25)) for i in range(4)]
