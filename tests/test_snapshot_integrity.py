"""The checksum covers every column of a snapshot, and a row that cannot be read is damage, not a crash.

Two versions are saved, then one column of the head (v2) is changed with plain
SQL, as a disk fault, a careless script or a bad restore would: a name removed
from ``names``, other ``metadata``, an unknown ``kind``, a ``created_at`` that is
not a time, and so on. With a fresh StateManager (no cache) every reader of v2
(load, get, diff, rollback, a merge save) raises IntegrityError naming v2,
verify() reports v2 and nothing else, history() and transitions() give a frame
or that IntegrityError (never a parser's exception), and v1 stays readable.

Stores written by statekit 0.x (schema 1, whose checksum covered only the
values) still open, load and verify; opening one upgrades the checksum of every
row that verifies. ``tests/data/schema1_store.db`` and ``.skb`` were written by
statekit 0.x (commit cd39dc2): a store and its backup.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import IntegrityError, StateManager, models

E = "crafted"
DATA = Path(__file__).parent / "data"


def sql(url: str, text: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(text), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def make(url: str) -> tuple[str, str]:
    with StateManager(url) as sm:
        s1 = sm.save(E, {"keep": 1, "df": pd.DataFrame({"x": [1.5, 2.5]}), "arr": np.arange(3)},
                     metadata={"run": 1}, message="one", actor="ana")
        s2 = sm.save(E, {"note": "two"}, merge=True, metadata={"run": 2}, message="two", actor="ana")
    return s1.snapshot_id, s2.snapshot_id


def names_without_keep(url: str, sid: str) -> str:
    names = sql(url, "SELECT CAST(names AS TEXT) FROM state_snapshots WHERE snapshot_id = :s", s=sid)[0][0]
    return json.dumps([n for n in json.loads(names) if n != "keep"])


# column, new value (a SQL expression; :t is the text given), and whether PostgreSQL can hold it
CRAFTS: dict[str, tuple[str, str, Any, bool]] = {
    "names_missing_one": ("names", "json", names_without_keep, True),
    "names_not_a_list": ("names", "json", "5", True),
    "names_an_object": ("names", "json", '{"keep": 1}', True),
    "names_garbage": ("names", "json", "garbage", False),
    "metadata_changed": ("metadata", "json", '{"run": 99}', True),
    "metadata_a_list": ("metadata", "json", "[1]", True),
    "metadata_garbage": ("metadata", "json", "garbage", False),
    "kind_unknown": ("kind", "text", "zzz", True),
    "kind_other": ("kind", "text", "rollback", True),
    "state_type_unknown": ("state_type", "text", "zzz", True),
    "status_unknown": ("status", "text", "zzz", True),
    "actor_changed": ("actor", "text", "mallory", True),
    "message_changed": ("message", "text", "rewritten", True),
    "branch_changed": ("branch", "text", "other", True),
    "parent_version_changed": ("parent_version", "int", 7, True),
    "size_changed": ("size_bytes", "int", 1, True),
    "size_text": ("size_bytes", "text", "x", False),
    "created_at_garbage": ("created_at", "text", "x", False),
    "created_at_moved": ("created_at", "shift", None, True),
    "expires_at_garbage": ("expires_at", "text", "garbage", False),
    "expires_at_set": ("expires_at", "future", None, True),
}


def craft(url: str, kind: str, sid: str) -> None:
    column, how, value, _ = CRAFTS[kind]
    pg = url.startswith("postgresql")
    if callable(value):
        value = value(url, sid)
    if how == "shift":
        expr = "created_at + interval '1 second'" if pg else "datetime(created_at, '+1 second')"
        sql(url, f"UPDATE state_snapshots SET {column} = {expr} WHERE snapshot_id = :s", s=sid)
        return
    if how == "future":
        expr = "now() + interval '30 days'" if pg else "datetime('now', '+30 days')"
        sql(url, f"UPDATE state_snapshots SET {column} = {expr} WHERE snapshot_id = :s", s=sid)
        return
    expr = "CAST(:t AS JSON)" if how == "json" and pg else ":t"
    sql(url, f"UPDATE state_snapshots SET {column} = {expr} WHERE snapshot_id = :s", t=value, s=sid)


def assert_names(fn: Any, sid: str, what: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        fn()
    assert caught.value.snapshot_id == sid and sid in str(caught.value), f"{what}: {caught.value}"


def check_damaged_head(url: str, sid1: str, sid2: str) -> None:
    with StateManager(url, cache_size=0) as sm:
        head = sm.head_version(E)
        assert_names(lambda: sm.load(E), sid2, "load()")
        assert_names(lambda: sm.load(E, 2), sid2, "load(2)")
        assert_names(lambda: sm.load(E, 2, names=["note"]), sid2, "load(2, names)")
        assert_names(lambda: sm.get(E, 2), sid2, "get(2)")
        assert_names(lambda: sm.get(E), sid2, "get()")
        assert_names(lambda: sm.diff(E, 1, 2), sid2, "diff(1, 2)")
        assert_names(lambda: sm.load_many([E]), sid2, "load_many")
        assert_names(lambda: sm.save(E, {"x": 1}, merge=True), sid2, "merge save")
        assert sm.head_version(E) == head, "a refused merge save wrote a version"
        problems = sm.verify()
        errors = problems[problems["severity"] == "error"]
        assert set(errors["snapshot_id"]) == {sid2}, problems.to_string()
        assert set(errors["problem"]) & {"checksum_mismatch", "unreadable"}, problems.to_string()
        assert sm.verify(E)["snapshot_id"].tolist() == errors["snapshot_id"].tolist()
        try:
            history = sm.history(E)
            assert history["version"].tolist() == [1, 2]
        except IntegrityError as exc:
            assert exc.snapshot_id == sid2, exc
        assert len(sm.transitions(E)) == 2
        assert sm.load(E, 1)["keep"] == 1
        good = sm.last_intact(E)
        assert good.snapshot_id == sid1
        assert_names(lambda: sm.rollback(E, 2), sid2, "rollback(2)")
        fixed = sm.rollback(E, 1, reason="v2 damaged")
        assert sm.load(E)["keep"] == 1 and fixed.checksum == good.checksum


@pytest.mark.parametrize("kind", sorted(k for k in CRAFTS if CRAFTS[k][3]))
def test_a_crafted_column_is_an_integrity_error_everywhere_and_verify_reports_it(store_url: str, kind: str) -> None:
    sid1, sid2 = make(store_url)
    craft(store_url, kind, sid2)
    check_damaged_head(store_url, sid1, sid2)


@pytest.mark.parametrize("kind", sorted(k for k in CRAFTS if not CRAFTS[k][3]))
def test_a_crafted_column_sqlite_alone_can_hold_is_an_integrity_error(sqlite_url: str, kind: str) -> None:
    """Values PostgreSQL's column types refuse to store (so that damage cannot exist there)."""
    sid1, sid2 = make(sqlite_url)
    craft(sqlite_url, kind, sid2)
    check_damaged_head(sqlite_url, sid1, sid2)


@pytest.mark.parametrize("column, value", [("version", "abc"), ("version", -3), ("new_bytes", 2.5),
                                           ("snapshot_id", 5)])
def test_columns_of_the_wrong_type_never_crash_a_reader_on_sqlite(sqlite_url: str, column: str, value: Any) -> None:
    _sid1, sid2 = make(sqlite_url)
    sql(sqlite_url, "UPDATE state_branches SET head_version = head_version")  # the head stays a pointer by id
    sql(sqlite_url, f"UPDATE state_snapshots SET {column} = :t WHERE snapshot_id = :s", t=value, s=sid2)
    with StateManager(sqlite_url, cache_size=0) as sm:
        with pytest.raises(IntegrityError):
            sm.load(E)
        errors = sm.verify().query("severity == 'error'")
        assert len(errors) >= 1 and errors["problem"].isin(
            ["unreadable", "checksum_mismatch", "missing_head", "head_mismatch", "parent_mismatch"]).all()
        with contextlib.suppress(IntegrityError):
            sm.history(E)
        assert sm.load(E, 1)["keep"] == 1


TRANSITION_CRAFTS = [  # (column, value, whether PostgreSQL's column types can hold it at all)
    ("metadata", "garbage", False), ("metadata", "[1, 2]", True), ("transition_type", "zzz", True),
    ("timestamp", "not a time", False), ("to_version", "x", False),
]


@pytest.mark.parametrize("column, value", [(c, v) for c, v, pg in TRANSITION_CRAFTS if not pg])
def test_a_crafted_transition_row_sqlite_alone_can_hold_is_an_integrity_error(sqlite_url: str, column: str,
                                                                               value: str) -> None:
    """Values PostgreSQL's column types refuse to store (so that damage cannot exist there)."""
    test_a_crafted_transition_row_is_an_integrity_error_not_a_crash(sqlite_url, column, value)


@pytest.mark.parametrize("column, value", [(c, v) for c, v, pg in TRANSITION_CRAFTS if pg])
def test_a_crafted_transition_row_is_an_integrity_error_not_a_crash(store_url: str, column: str, value: str) -> None:
    make(store_url)
    expr = "CAST(:t AS JSON)" if column == "metadata" and store_url.startswith("postgresql") else ":t"
    sql(store_url, f"UPDATE state_transitions SET {column} = {expr} WHERE to_version = 2", t=value)
    with StateManager(store_url, cache_size=0) as sm:
        with pytest.raises(IntegrityError, match="Transition .* is damaged"):
            sm.transitions(E)
        with pytest.raises(IntegrityError):
            sm.transitions()
        assert sm.load(E)["note"] == "two" and sm.history(E)["version"].tolist() == [1, 2]
        problems = sm.verify()
        assert problems["problem"].tolist() == ["unreadable_transition"] and problems["entity_id"].tolist() == [E]


def test_a_rollback_keeps_the_checksum_of_its_content_and_each_row_its_own(sm: StateManager) -> None:
    s1 = sm.save(E, {"a": 1}, metadata={"m": 1})
    sm.save(E, {"a": 2})
    back = sm.rollback(E, 1)
    stored = dict(sql(sm.url, "SELECT snapshot_id, checksum FROM state_snapshots"))
    assert back.checksum == s1.checksum  # the same values
    assert stored[back.snapshot_id] != stored[s1.snapshot_id]  # but another row
    assert all(len(c) == 129 for c in stored.values())


def test_purge_rewrites_the_row_checksum_of_a_snapshot_it_reparents(sm: StateManager) -> None:
    from datetime import timedelta

    sm.save(E, {"a": 1}, expires_in=1)
    sm.save(E, {"a": 2}, merge=True, expires_in="never")
    removed = sm.purge_expired(now=pd.Timestamp.now(tz="UTC").to_pydatetime() + timedelta(seconds=5))
    assert removed["kind"].tolist().count("snapshot") == 1
    assert sm.verify().empty
    snap = sm.get(E, 2)
    assert snap.parent_version is None and sm.load(E) == {"a": 2}


# ================================================================ stores written by statekit 0.x (schema 1)

V1_HEAD = {"n": 4, "params": {"lr": 0.1, "pair": (1, "x")}}


def check_v1_values(sm: StateManager) -> None:
    head = sm.load("exp")
    assert {k: head[k] for k in V1_HEAD} == V1_HEAD
    pd.testing.assert_frame_equal(head["df"], pd.DataFrame({"x": [1.5, 2.5, 3.5], "s": ["a", "b", "c"]}))
    np.testing.assert_array_equal(head["arr"], np.arange(5))
    assert sm.load("exp", 3, branch="try")["n"] == 3
    assert sm.load("other") == {"k": "v"}
    assert sm.history("exp")["version"].tolist() == [1, 2, 3, 4]


def test_a_schema_1_store_opens_upgrades_its_checksums_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(DATA / "schema1_store.db", path)
    with sqlite3.connect(path) as con:
        old = dict(con.execute("SELECT snapshot_id, checksum FROM state_snapshots"))
    con.close()
    assert all(len(c) == 64 for c in old.values())
    with StateManager(f"sqlite:///{path}") as sm:
        assert sm.db.schema_version() == models.SCHEMA_VERSION
        check_v1_values(sm)
        assert sm.verify().empty
        assert sm.save("exp", {"n": 5}, merge=True).version == 5
    with sqlite3.connect(path) as con:
        new = dict(con.execute("SELECT snapshot_id, checksum FROM state_snapshots"))
    con.close()
    for sid, checksum in old.items():  # the content hash is kept; the row hash is added
        assert new[sid].startswith(checksum + ":") and len(new[sid]) == 129


def test_a_schema_1_row_whose_names_were_edited_is_not_upgraded_and_stays_damaged(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(DATA / "schema1_store.db", path)
    with sqlite3.connect(path) as con:
        sid, names = con.execute("SELECT snapshot_id, names FROM state_snapshots WHERE entity_id = 'exp' "
                                 "AND version = 4").fetchone()
        con.execute("UPDATE state_snapshots SET names = ? WHERE snapshot_id = ?",
                    (json.dumps([n for n in json.loads(names) if n != "df"]), sid))
    con.close()
    with StateManager(f"sqlite:///{path}", cache_size=0) as sm:
        assert_names(lambda: sm.load("exp"), sid, "load() of an edited schema-1 row")
        assert_names(lambda: sm.save("exp", {"n": 5}, merge=True), sid, "merge save over it")
        errors = sm.verify()
        assert errors["snapshot_id"].tolist() == [sid] and errors["problem"].tolist() == ["unreadable"]
        assert sm.load("exp", 2)["df"]["s"].tolist() == ["a", "b", "c"]
        assert sm.last_intact("exp").version == 2


def test_a_schema_1_backup_restores_and_a_schema_1_postgres_store_is_upgraded(store_url: str) -> None:
    with StateManager(store_url) as sm:
        sm.restore(DATA / "schema1_store.skb")
        check_v1_values(sm)
        assert sm.verify().empty
    if store_url.startswith("postgresql"):  # make it a schema-1 PostgreSQL store, as statekit 0.x left it
        sql(store_url, "DROP VIEW IF EXISTS statekit_history, statekit_names")  # what schema 3 added
        sql(store_url, "ALTER TABLE state_snapshots DROP COLUMN changed, DROP COLUMN lineage")
        sql(store_url, "ALTER TABLE state_snapshots ALTER COLUMN checksum TYPE VARCHAR(64)")
        sql(store_url, "UPDATE statekit_meta SET value = '1' WHERE key = 'schema_version'")
        with StateManager(store_url) as sm:
            assert sm.db.schema_version() == models.SCHEMA_VERSION
            check_v1_values(sm)
            assert sm.verify().empty
            assert sm.save("exp", {"n": 5}, merge=True).version == 5
        lengths = {r[0] for r in sql(store_url, "SELECT length(checksum) FROM state_snapshots")}
        assert lengths == {129}


def test_unreadable_entity_and_branch_rows_are_integrity_errors_and_verify_reports_them(sqlite_url: str) -> None:
    make(sqlite_url)
    with StateManager(sqlite_url) as sm:
        sm.create_branch(E, "try")
    sql(sqlite_url, "UPDATE state_branches SET created_at = 'y' WHERE name = 'try'")
    sql(sqlite_url, "UPDATE state_entities SET created_at = 'z'")
    with StateManager(sqlite_url, cache_size=0) as sm:
        with pytest.raises(IntegrityError, match="not a time"):
            sm.entities()
        with pytest.raises(IntegrityError, match="not a time"):
            sm.branches(E)
        assert sorted(sm.verify()["problem"]) == ["unreadable_branch", "unreadable_entity"]
        assert sm.load(E)["note"] == "two"


def test_a_backup_of_a_row_that_cannot_be_read_is_refused_and_writes_no_file(sqlite_url: str, tmp_path: Path) -> None:
    _sid1, sid2 = make(sqlite_url)
    sql(sqlite_url, "UPDATE state_snapshots SET created_at = 'x' WHERE snapshot_id = :s", s=sid2)
    with StateManager(sqlite_url) as sm:
        with pytest.raises(IntegrityError, match=f"state_snapshots row '{sid2}'") as caught:
            sm.backup(tmp_path / "b.skb")
        assert "\n" not in str(caught.value)
    assert not [p for p in tmp_path.iterdir() if "skb" in p.name]


def test_history_shows_the_checksum_a_snapshot_has(sm: StateManager) -> None:
    snaps = [sm.save(E, {"a": i}) for i in range(3)]
    assert sm.history(E)["checksum"].tolist() == [s.checksum for s in snaps] == [sm.get(E, s.version).checksum
                                                                                 for s in snaps]


# ================================================================ any value in any column: a result or a StatekitError

COLUMNS = ["snapshot_id", "entity_id", "version", "branch", "state_type", "parent_snapshot_id", "parent_version",
           "checksum", "created_at", "expires_at", "status", "kind", "actor", "message", "metadata", "names",
           "size_bytes", "new_bytes", "state_data", "items"]


OTHER_TABLES = [models.transitions_table, models.branches_table, models.entities_table, models.links_table,
                models.payloads_table, models.meta_table]


def readers(sm: StateManager) -> list[Any]:
    return [lambda: sm.load(E), lambda: sm.load(E, 1), lambda: sm.load(E, 2), lambda: sm.get(E, 2),
            lambda: sm.load(E, 2, branch="main", names=["note"]), lambda: sm.load_many([E]), lambda: sm.history(E),
            lambda: sm.transitions(E), lambda: sm.diff(E, 1, 2), lambda: sm.diff(E), sm.verify, sm.entities,
            lambda: sm.branches(E), lambda: sm.last_intact(E), lambda: sm.save(E, {"x": 1}, merge=True),
            lambda: sm.rollback(E, 1), sm.purge_expired]


def test_any_value_in_any_column_of_any_table_gives_a_result_or_a_statekit_error_on_sqlite(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from statekit import StatekitError

    values = st.one_of(
        st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True),
        st.text(max_size=20), st.binary(max_size=20),
        st.sampled_from(['{}', '[]', '{"a": 1}', '["keep", "keep"]', '[1]', '"x"', 'null', '{"keep": {}}',
                         '{"df": {"codec": "npy", "chunks": [5]}}', "2026-13-45 99:99:99", "main", "v2:x",
                         "a" * 64 + ":" + "b" * 64]),
    )
    base = tmp_path / "base.db"
    sids = make(f"sqlite:///{base}")
    assert not Path(f"{base}-wal").exists() or Path(f"{base}-wal").stat().st_size == 0
    shutil.copy(base, tmp_path / "intact.db")
    with StateManager(f"sqlite:///{tmp_path / 'intact.db'}") as sm:  # the copy holds both versions
        assert sm.load(E)["keep"] == 1 and sm.verify().empty
    counter = iter(range(10**6))
    examples = int(os.environ.get("STATEKIT_FUZZ_EXAMPLES", "60"))

    columns = st.one_of(st.tuples(st.just("state_snapshots"), st.sampled_from(COLUMNS)),
                        st.sampled_from([(t.name, c.name) for t in OTHER_TABLES for c in t.columns]))

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(where=columns, value=values, which=st.sampled_from([0, 1]))
    def check(where: tuple[str, str], value: Any, which: int) -> None:
        table, column = where
        path = tmp_path / f"c{next(counter)}.db"
        shutil.copy(base, path)
        with sqlite3.connect(path) as con:
            try:
                if table == "state_snapshots":
                    con.execute(f"UPDATE {table} SET {column} = ? WHERE snapshot_id = ?", (value, sids[which]))
                else:
                    con.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = (SELECT rowid FROM {table} "
                                f"ORDER BY rowid LIMIT 1 OFFSET ?)", (value, which))
            except sqlite3.Error:
                return  # a NOT NULL or unique column refuses it: that damage cannot exist
        con.close()
        try:
            sm = StateManager(f"sqlite:///{path}", cache_size=0)
        except StatekitError as exc:  # statekit_meta damaged: refused on open
            assert "\n" not in str(exc).strip(), exc
            return
        with sm:
            for read in readers(sm):
                try:
                    read()
                except StatekitError as exc:
                    assert "\n" not in str(exc).strip(), exc

    check()
