"""A pytest plugin that swaps statekit's adapters into the frameworks' own test suites.

Loaded with ``-p statekit_peers_plugin`` by :mod:`statekit_peers` (never collected by statekit's own
suite). It changes no test and no assertion: it only

- LangGraph: gives the ``sync_checkpointer`` and ``async_checkpointer`` fixtures of LangGraph's
  ``tests/conftest.py`` one parameter, ``statekit``, whose value is a fresh ``StatekitSaver``
  (with entities of its own) on a store of the backend named by ``$STATEKIT_PEERS_BACKEND``
  (``file``, ``memory`` or ``postgres``); deselects the tests that use neither fixture, and
  the excluded ones (:data:`EXCLUDED`);
- Agents SDK: makes the name ``SQLiteSession`` in the session test modules build a
  ``StatekitSession`` on such a store, and deselects the tests that read SQLiteSession's
  private attributes.

The deselected tests are printed with their reasons in the terminal summary.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

BACKEND = os.environ.get("STATEKIT_PEERS_BACKEND", "file")
PG_URL = os.environ.get("STATEKIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHECKPOINTER_FIXTURES = ("sync_checkpointer", "async_checkpointer")

EXCLUDED: dict[str, str] = json.loads(os.environ.get("STATEKIT_PEERS_EXCLUDED") or "{}")
"""Test name (without parameters) -> why it is not run against statekit (set by :mod:`statekit_peers`)."""

_deselected: list[tuple[str, str]] = []
_swapped = [0]  # how many statekit savers or sessions the suite's fixtures handed out


def pytest_configure(config: pytest.Config) -> None:
    """Import statekit before any test patches the standard library (LangGraph's tests mock uuid.uuid4)."""
    import statekit  # noqa: F401
    import statekit.store  # noqa: F401


# ----------------------------------------------------------------------------- stores


class _Store:
    """One fresh, empty statekit store on the chosen backend; ``drop()`` removes it."""

    def __init__(self) -> None:
        self._schema: str | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if BACKEND == "memory":
            self.url = "sqlite:///:memory:"
        elif BACKEND == "file":
            self._dir = tempfile.TemporaryDirectory(prefix="statekit-peer-")
            self.url = f"sqlite:///{self._dir.name}/store.db"
        elif BACKEND == "postgres":
            import sqlalchemy as sa

            self._schema = f"sk_peer_{secrets.token_hex(6)}"  # not uuid4: LangGraph's tests mock it
            engine = sa.create_engine(PG_URL)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{self._schema}"')
            engine.dispose()
            self.url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{self._schema}"
        else:
            raise ValueError(f"STATEKIT_PEERS_BACKEND must be file, memory or postgres, not {BACKEND!r}")

    def drop(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
        if self._schema is not None:
            import sqlalchemy as sa

            engine = sa.create_engine(PG_URL)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE')
            engine.dispose()


# ----------------------------------------------------------------------------- LangGraph


_shared: dict[str, Any] = {}


def _shared_store() -> Any:
    """One store for the whole run (a schema of its own on PostgreSQL); each test gets its own prefix in it."""
    if "sm" not in _shared:
        from statekit import StateManager

        _shared["store"] = _Store()
        _shared["sm"] = StateManager(_shared["store"].url)
    return _shared["sm"]


def _statekit_checkpointer(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Stands in for the body of LangGraph's checkpointer fixtures when the parameter is ``statekit``.

    Every test gets a fresh saver whose entities carry a prefix of their own (``peer{n}:…``),
    so tests never see each other's threads, as with LangGraph's fresh database per test,
    without building a schema per test.
    """
    from statekit.integrations.langgraph import StatekitSaver

    _swapped[0] += 1
    saver = StatekitSaver(_shared_store(), prefix=f"peer{_swapped[0]}")
    try:
        yield saver
    finally:
        saver.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    if "sm" in _shared:
        _shared.pop("sm").close()
        _shared.pop("store").drop()


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give LangGraph's checkpointer fixtures the single parameter ``statekit``, served by our body."""
    for name in CHECKPOINTER_FIXTURES:
        for fixturedef in metafunc._arg2fixturedefs.get(name, ()):  # noqa: SLF001 - no public way
            if fixturedef.params != ["statekit"]:
                fixturedef.params = ["statekit"]
                fixturedef.ids = None
                fixturedef.func = _statekit_checkpointer  # the same parameter name: request


# ----------------------------------------------------------------------------- Agents SDK


def _statekit_session_factory(store: _Store) -> Any:
    from statekit import StateManager
    from statekit.integrations.openai_agents import StatekitSession

    managers: dict[str, StateManager] = {}

    def make(session_id: str, db_path: Any = ":memory:", **kwargs: Any) -> StatekitSession:
        # Sessions given the same database path share one statekit store (the SDK's tests open a
        # file twice and expect the same rows). On the file backend each path gets its own statekit
        # file beside it; in-memory sessions and the other backends use the test's fresh store.
        key = str(db_path)
        if key not in managers:
            url = store.url
            if key != ":memory:" and BACKEND == "file":
                url = f"sqlite:///{key}.statekit.db"
            managers[key] = StateManager(url)
        _swapped[0] += 1
        return StatekitSession(session_id, managers[key], **kwargs)

    make.managers = managers  # type: ignore[attr-defined]
    return make


@pytest.fixture(autouse=True)
def _statekit_sessions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In the Agents SDK's session test modules, ``SQLiteSession(...)`` builds a ``StatekitSession``."""
    module = request.module
    if os.environ.get("STATEKIT_PEERS_SUITE") != "openai-agents" or getattr(module, "SQLiteSession", None) is None:
        yield
        return
    store = _Store()
    make = _statekit_session_factory(store)
    monkeypatch.setattr(module, "SQLiteSession", make)
    try:
        yield
    finally:
        for sm in make.managers.values():
            sm.close()
        store.drop()


# ----------------------------------------------------------------------------- selection and report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    suite = os.environ.get("STATEKIT_PEERS_SUITE", "langgraph")
    for item in items:
        base = item.name.split("[", 1)[0]
        reason = EXCLUDED.get(base) or EXCLUDED.get(item.nodeid.split("[", 1)[0])
        if reason is not None:
            _deselected.append((item.nodeid, reason))
            dropped.append(item)
        elif suite == "langgraph" and not any(f in getattr(item, "fixturenames", ()) for f in CHECKPOINTER_FIXTURES):
            dropped.append(item)  # not a checkpointer test: nothing of statekit's runs in it
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


_outcomes: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each test once: failed if any phase failed, skipped if skipped, else passed at its call."""
    if report.failed:
        if report.nodeid not in _outcomes["failed"]:
            _outcomes["failed"].append(report.nodeid)
    elif report.skipped:
        _outcomes["skipped"].append(report.nodeid)
    elif report.when == "call":
        _outcomes["passed"].append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("STATEKIT_PEERS_REPORT")
    if not path:
        return
    failed = set(_outcomes["failed"])
    passed = [n for n in _outcomes["passed"] if n not in failed]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"passed": len(passed), "failed": len(failed), "skipped": len(_outcomes["skipped"]),
                   "failures": sorted(failed), "skips": _outcomes["skipped"], "excluded": _deselected,
                   "swapped": _swapped[0], "exitstatus": int(exitstatus)}, fh)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _deselected:
        return
    terminalreporter.section("excluded by statekit's peer runner")
    for nodeid, reason in _deselected:
        terminalreporter.write_line(f"EXCLUDED {nodeid}: {reason}")
