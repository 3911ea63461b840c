"""Shared fixtures: one behaviour suite runs on SQLite and on the real PostgreSQL.

PostgreSQL tests get a fresh schema each (the server keeps data between runs).
Without a reachable server they skip with the reason, except under CI=true,
where they fail: CI has the server and must never skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("STATEKIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_state: dict[str, object] = {}


def _pg_engine() -> sa.Engine | None:
    """The admin engine, or None (with the reason kept) when no server answers."""
    if "engine" not in _pg_state:
        try:
            engine = sa.create_engine(PG_ADMIN_URL, pool_pre_ping=True)
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            _pg_state["engine"] = engine
        except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
            _pg_state["engine"] = None
            _pg_state["reason"] = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"
    return _pg_state["engine"]  # type: ignore[return-value]


def require_pg() -> sa.Engine:
    engine = _pg_engine()
    if engine is None:
        if IN_CI:
            pytest.fail(f"{_pg_state['reason']} (CI must run the PostgreSQL tests)")
        pytest.skip(str(_pg_state["reason"]))
    return engine


def fresh_pg_url() -> tuple[str, str]:
    """A URL whose search_path is a new, empty schema; returns (url, schema)."""
    engine = require_pg()
    schema = f"sk_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    base = PG_ADMIN_URL + ("&" if "?" in PG_ADMIN_URL else "?")
    return f"{base}options=-csearch_path%3D{schema}", schema


def drop_pg_schema(schema: str) -> None:
    engine = _pg_engine()
    if engine is not None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own signing key, working directory and no inherited store URL."""
    monkeypatch.setenv("STATEKIT_KEY_FILE", str(tmp_path / "keys" / "key"))
    monkeypatch.delenv("STATEKIT_KEY", raising=False)
    monkeypatch.delenv("STATEKIT_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, schema = fresh_pg_url()
    yield url
    drop_pg_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url, schema = fresh_pg_url()
    yield url
    drop_pg_schema(schema)


@pytest.fixture
def sm(store_url: str) -> Iterator[StateManager]:  # noqa: F821
    from statekit import StateManager

    manager = StateManager(store_url)
    yield manager
    manager.close()
