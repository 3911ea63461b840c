"""Schema versions: a store records its version, an older one is upgraded in place when opened, a newer
one is refused and left untouched (by the library, the command and restore).

The upgrade tests register a real migration to a pretend next schema
(``db.MIGRATIONS[SCHEMA_VERSION]``) and run it against real databases. The real
migration from schema 1 is tested against a store written by statekit 0.x in
tests/test_snapshot_integrity.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from statekit import SchemaVersionError, StateManager, db, models
from statekit.cli import cli


def dump(url: str) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, read with plain SQLAlchemy (not through statekit)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            names = sorted(sa.inspect(c).get_table_names())
            return {n: sorted(tuple(map(str, r)) for r in c.execute(sa.text(f"SELECT * FROM {n}"))) for n in names}
    finally:
        engine.dispose()


def columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {col["name"] for col in sa.inspect(c).get_columns(table)}
    finally:
        engine.dispose()


def set_schema_version(url: str, version: int) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("UPDATE statekit_meta SET value = :v WHERE key = 'schema_version'"), {"v": str(version)})
    finally:
        engine.dispose()


def make_store(url: str) -> None:
    with StateManager(url) as sm:
        sm.save("exp", {"n": 1, "params": {"lr": 0.1}})
        sm.save("exp", {"n": 2}, merge=True)


def test_a_store_records_its_schema_version(store_url: str) -> None:
    make_store(store_url)
    before = dump(store_url)
    assert dict(before["statekit_meta"])["schema_version"] == str(models.SCHEMA_VERSION)
    with StateManager(store_url) as sm:  # reopening the same version changes nothing
        assert sm.db.schema_version() == models.SCHEMA_VERSION
    assert dump(store_url) == before


def test_a_newer_store_is_refused_and_left_unchanged(store_url: str) -> None:
    make_store(store_url)
    newer = models.SCHEMA_VERSION + 1
    set_schema_version(store_url, newer)
    before = dump(store_url)
    with pytest.raises(SchemaVersionError, match=f"schema version {newer}, newer than this statekit") as err:
        StateManager(store_url)
    assert "pip install -U statekit" in str(err.value)
    assert dump(store_url) == before
    result = CliRunner().invoke(cli, ["--url", store_url, "entities"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "newer than this statekit" in result.stderr
    assert dump(store_url) == before


def test_an_older_store_is_upgraded_in_place(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_store(store_url)
    calls: list[int] = []

    def to_2(conn: Any) -> None:
        calls.append(1)
        conn.exec_driver_sql("ALTER TABLE state_entities ADD COLUMN note VARCHAR(64)")

    current = models.SCHEMA_VERSION
    monkeypatch.setattr(models, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(db.MIGRATIONS, current, to_2)
    with StateManager(store_url) as sm:
        assert sm.db.schema_version() == current + 1
        assert sm.load("exp") == {"n": 2, "params": {"lr": 0.1}}
        assert sm.save("exp", {"n": 3}).version == 3
        assert sm.verify().empty
    assert "note" in columns(store_url, "state_entities")
    with StateManager(store_url):
        pass
    assert calls == [1]  # once, not at every opening


def test_a_failed_upgrade_changes_nothing(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_store(store_url)
    before = dump(store_url)

    def broken(conn: Any) -> None:
        conn.exec_driver_sql("ALTER TABLE state_entities ADD COLUMN note VARCHAR(64)")
        raise RuntimeError("migration bug")

    monkeypatch.setitem(db.MIGRATIONS, models.SCHEMA_VERSION, broken)
    monkeypatch.setattr(models, "SCHEMA_VERSION", models.SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        StateManager(store_url)
    assert dump(store_url) == before  # one transaction: the half-done migration rolled back
    assert "note" not in columns(store_url, "state_entities")


def test_restore_refuses_a_backup_of_a_newer_schema(sm: StateManager, tmp_path: Path) -> None:
    with StateManager(f"sqlite:///{tmp_path / 'src.db'}") as src:
        src.save("exp", {"n": 1})
        src.backup(tmp_path / "b.skb")
    with sqlite3.connect(tmp_path / "b.skb") as con:
        con.execute("UPDATE statekit_meta SET value = ? WHERE key = 'schema_version'", (str(models.SCHEMA_VERSION + 1),))
    con.close()
    sm.save("mine", {"n": 1})
    before = sm.history("mine").to_json(date_format="iso"), sm.entities().to_json(date_format="iso")
    with pytest.raises(SchemaVersionError, match="newer than this statekit"):
        sm.restore(tmp_path / "b.skb", merge=True)
    assert (sm.history("mine").to_json(date_format="iso"), sm.entities().to_json(date_format="iso")) == before
