"""The frameworks' own test suites pass against statekit's adapters (see :mod:`statekit_peers`).

LangGraph's checkpointer-parametrized tests run in full on a SQLite file and on PostgreSQL,
and on ``sqlite:///:memory:`` only the graph-execution files (``test_pregel*.py``,
``test_large_cases*.py``: 279 tests, about 1 minute instead of 4; the runner prints why);
the Agents SDK's session tests on a SQLite file. The first run downloads
the source archives of the installed versions into ``~/.cache/statekit-peers``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import statekit_peers as peers  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if IN_CI:
            raise
        pytest.skip(f"needs {module}")


def _check(result: peers.Result, at_least: int, swapped: int) -> None:
    if result.subset:
        print(f"\n  on {result.backend} only some files ran: {result.subset}")
    print("\n" + result.line())
    for nodeid, reason in result.excluded:
        print(f"  excluded {nodeid}: {reason}")
    for nodeid in result.flaky:
        print(f"  flaky (failed, then passed on its own): {nodeid}")
    assert result.failures == [], result.output[-6000:]
    assert result.failed == 0 and result.passed >= at_least, result.line()
    assert result.swapped >= swapped  # the tests ran on statekit's saver or session, not the framework's


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "memory", "postgres"])
def test_langgraph_checkpointer_tests_pass(backend: str) -> None:
    _require("langgraph.checkpoint.sqlite")
    if backend == "postgres":
        from tests.conftest import require_pg

        require_pg()
    result = peers.run("langgraph", backend)
    _check(result, at_least=270 if result.subset else 640, swapped=result.passed)  # each test takes one checkpointer


@pytest.mark.slow
def test_agents_sdk_session_tests_pass() -> None:
    _require("agents")
    result = peers.run("openai-agents", "file")
    _check(result, at_least=50, swapped=40)
