"""What a store does with the files and databases it is pointed at, and the read semantics users trip on.

- A file that is not a statekit store (text, truncated, a folder, a symlink to
  a system file, another application's database, a foreign ``state_snapshots``)
  is refused with one StatekitError and left byte for byte as it was; only
  ``create=True`` adds statekit's tables to another application's SQLite file.
  A newer schema is refused before anything (the journal mode included) changes.
- Garbled pages make verify() report the damage instead of crashing.
- A store its user may not write is read (as the unprivileged user ``nobody``,
  in a subprocess): loads and history work, a save is one StatekitError.
- A full disk (a real 1 MiB tmpfs) makes save, restore and backup fail with one
  StatekitError, and the earlier versions stay intact.
- load(names=...) refuses names the version lacks; load_many refuses a string
  and reads one moment of the store; a missing version's message tells the
  versions that exist; load(v, branch=b) needs v on b's line; a malformed URL is
  refused before any file is created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import (
    InvalidArgumentError,
    NotFoundError,
    SchemaVersionError,
    StatekitError,
    StateManager,
    models,
)
from tests.conftest import drop_pg_schema, fresh_pg_url

ROOT = Path(__file__).resolve().parent.parent


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` and the sha256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.iterdir())}


def one_line(exc: BaseException) -> None:
    assert isinstance(exc, StatekitError) and "\n" not in str(exc), repr(exc)


def make_store(path: Path, versions: int = 3) -> None:
    with StateManager(f"sqlite:///{path}") as sm:
        for v in range(versions):
            sm.save("e", {"n": v, "arr": np.arange(20_000) + v})


# ================================================================ files that are not a store


def bad_text(folder: Path) -> Path:
    (folder / "notes.db").write_text("these are my notes\n" * 50)
    return folder / "notes.db"


def bad_truncated(folder: Path) -> Path:
    make_store(folder / "full.db", versions=6)
    data = (folder / "full.db").read_bytes()
    for suffix in ("", "-wal", "-shm"):
        (folder / f"full.db{suffix}").unlink(missing_ok=True)
    (folder / "cut.db").write_bytes(data[: len(data) // 3])
    return folder / "cut.db"


def bad_folder(folder: Path) -> Path:
    (folder / "store.db").mkdir()
    return folder / "store.db"


def bad_foreign_snapshots(folder: Path) -> Path:
    with sqlite3.connect(folder / "other.db") as con:
        con.execute("CREATE TABLE state_snapshots (id INTEGER PRIMARY KEY, payload TEXT)")
        con.execute("INSERT INTO state_snapshots (payload) VALUES ('theirs')")
    con.close()
    return folder / "other.db"


def bad_foreign_snapshots_in_a_store(folder: Path) -> Path:
    """A file with statekit_meta whose state_snapshots is someone else's table."""
    make_store(folder / "s.db", versions=1)
    with sqlite3.connect(folder / "s.db") as con:
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("DROP TABLE state_snapshots")
        con.execute("CREATE TABLE state_snapshots (id INTEGER PRIMARY KEY, payload TEXT)")
    con.close()
    return folder / "s.db"


BAD = {"text": bad_text, "truncated": bad_truncated, "folder": bad_folder,
       "foreign_state_snapshots": bad_foreign_snapshots, "foreign_table_in_a_store": bad_foreign_snapshots_in_a_store}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_file_that_is_not_a_store_is_refused_with_one_error_and_left_unchanged(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    path = BAD[kind](folder)
    before = fingerprint(folder)
    for url in (str(path), f"sqlite:///{path}"):
        with pytest.raises(StatekitError) as caught:
            StateManager(url)
        one_line(caught.value)
    if kind != "foreign_table_in_a_store":
        with pytest.raises(StatekitError):
            StateManager(str(path), create=True)  # create=True never overwrites or reuses a conflicting table
    assert fingerprint(folder) == before


def test_a_symlink_to_a_system_file_is_refused_and_the_file_is_not_touched(tmp_path: Path) -> None:
    target = Path("/etc/passwd")
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    link = tmp_path / "state.db"
    link.symlink_to(target)
    with pytest.raises(StatekitError, match="not a SQLite database") as caught:
        StateManager(str(link))
    one_line(caught.value)
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert not Path("/etc/passwd-wal").exists() and not Path("/etc/passwd-shm").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "keys") == ["state.db"]


def test_garbled_pages_are_reported_by_verify_and_never_crash_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    make_store(path, versions=8)
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(7)
    for p in range(pages // 3, pages - 1, 5):  # leave page 1 (the schema) whole
        data[p * page : (p + 1) * page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with StateManager(str(path), cache_size=0) as sm:
        problems = sm.verify()
        assert (problems["severity"] == "error").any(), problems
        assert "store_damaged" in set(problems["problem"]), problems.to_string()
        for read in (lambda: sm.load("e"), lambda: sm.load("e", 1), lambda: sm.history("e"), sm.entities,
                     lambda: sm.transitions("e"), lambda: sm.last_intact("e")):
            try:
                read()
            except StatekitError as exc:
                one_line(exc)


# ================================================================ a store must not harm what it opens


def test_another_applications_database_is_refused_untouched_unless_create_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO users (name) VALUES ('ana')")
    con.close()
    before = fingerprint(tmp_path)
    with pytest.raises(StatekitError, match="not a statekit store.*create=True") as caught:
        StateManager(str(path))
    one_line(caught.value)
    assert fingerprint(tmp_path) == before
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]
    con.close()
    with StateManager(str(path), create=True) as sm:  # asked for: the store goes in beside the users table
        sm.save("e", {"a": 1})
    with StateManager(str(path)) as sm:  # now it is a store, and opens without create
        assert sm.load("e") == {"a": 1}
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT name FROM users").fetchall() == [("ana",)]
    con.close()


def test_an_empty_file_and_a_new_path_become_stores(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    for name in ("empty.db", "new.db", "sub/dir/new.db"):
        with StateManager(str(tmp_path / name)) as sm:
            sm.save("e", {"a": 1})
            assert sm.load("e") == {"a": 1}


def test_a_newer_schema_is_refused_without_switching_the_journal_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    make_store(path, versions=1)
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("UPDATE statekit_meta SET value = ? WHERE key = 'schema_version'", (str(models.SCHEMA_VERSION + 1),))
    con.close()
    before = fingerprint(tmp_path)
    with pytest.raises(SchemaVersionError):
        StateManager(str(path))
    assert fingerprint(tmp_path) == before
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()


@pytest.mark.postgres
def test_postgres_refuses_a_schema_with_a_foreign_state_table_but_shares_one_with_unrelated_tables() -> None:
    url, schema = fresh_pg_url()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE state_snapshots (id SERIAL PRIMARY KEY, payload TEXT)")
            conn.exec_driver_sql("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT)")
        with pytest.raises(StatekitError, match="not a statekit store.*state_snapshots") as caught:
            StateManager(url)
        one_line(caught.value)
        with pytest.raises(StatekitError):
            StateManager(url, create=True)
        with engine.connect() as conn:
            assert sorted(sa.inspect(conn).get_table_names()) == ["state_snapshots", "users"]
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE state_snapshots")
        with StateManager(url) as sm:  # unrelated tables are common in a PostgreSQL schema: the store goes beside
            sm.save("e", {"a": 1})
            assert sm.load("e") == {"a": 1}
    finally:
        engine.dispose()
        drop_pg_schema(schema)


# ================================================================ a read-only store


def _nobody_python() -> list[str] | None:
    """A command that runs this Python's packages as ``nobody`` (the venv's base interpreter may sit in /root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/python{version}", shutil.which(f"python{version}") or ""):
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", exe, "-s"]
        if exe and subprocess.run([*cmd, "-c", f"import sys; assert sys.version_info[:2] == {sys.version_info[:2]}"],
                                  capture_output=True, timeout=60).returncode == 0:
            return cmd
    return None


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder under /tmp that ``nobody`` may enter (pytest's tmp_path sits under a 0700 folder)."""
    folder = Path("/tmp") / f"statekit-ro-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


READER = textwrap.dedent("""
    import json, sys
    from statekit import StateManager, StatekitError
    out = {}
    sm = StateManager(sys.argv[1])
    state = sm.load("e")
    out["n"] = state["n"]
    out["arr_sum"] = int(state["arr"].sum())
    out["history"] = sm.history("e")["version"].tolist()
    out["v1"] = sm.load("e", 1)["n"]
    out["verify_empty"] = bool(sm.verify().empty)
    try:
        sm.save("e", {"n": 99})
        out["save"] = "saved"
    except StatekitError as exc:
        out["save"] = type(exc).__name__ + ": " + str(exc)
    sm.close()
    print(json.dumps(out))
""")


def test_a_store_its_user_may_not_write_is_read_and_a_save_fails_cleanly(shared_tmp: Path) -> None:
    cmd = _nobody_python()
    if cmd is None:
        pytest.skip("needs root, setpriv and a Python the user nobody may run")
    store = shared_tmp / "store"
    store.mkdir()
    make_store(store / "s.db", versions=3)
    (store / "s.db").chmod(0o444)
    store.chmod(0o555)
    before = fingerprint(store)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(shared_tmp), "STATEKIT_KEY": "k" * 40,
           "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])}
    done = subprocess.run([*cmd, "-c", READER, str(store / "s.db")], capture_output=True, text=True, env=env,
                          timeout=120, cwd=shared_tmp)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["n"] == 2 and out["arr_sum"] == int((np.arange(20_000) + 2).sum())
    assert out["history"] == [1, 2, 3] and out["v1"] == 0 and out["verify_empty"]
    assert out["save"].endswith("nothing was changed.") and "read-only" in out["save"] and "\n" not in out["save"]
    assert fingerprint(store) == before


# ================================================================ a full disk


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a 1 MiB tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_fails_save_restore_and_backup_with_one_error_and_keeps_earlier_versions(
        tiny_disk: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with StateManager(f"sqlite:///{tmp_path / 'src.db'}") as src:
        src.save("big", {"x": rng.random(200_000)})
        src.backup(tmp_path / "big.skb")
    sm = StateManager(str(tiny_disk / "s.db"))
    try:
        sm.save("e", {"a": 1, "arr": np.arange(1000)})
        with pytest.raises(StatekitError, match="disk is full") as caught:
            sm.save("e", {"big": rng.random(200_000)}, merge=True)
        one_line(caught.value)
        with pytest.raises(StatekitError, match="disk is full") as caught:
            sm.restore(tmp_path / "big.skb", merge=True)
        one_line(caught.value)
        with pytest.raises(StatekitError) as caught:
            sm.backup(tiny_disk / "b.skb")
        one_line(caught.value)
        assert not [p.name for p in tiny_disk.iterdir() if "skb" in p.name]
        state = sm.load("e")
        assert state["a"] == 1 and np.array_equal(state["arr"], np.arange(1000))
        assert sm.history("e")["version"].tolist() == [1] and sm.entities()["entity_id"].tolist() == ["e"]
        assert sm.verify().empty
    finally:
        sm.close()
    with StateManager(str(tiny_disk / "s.db")) as again:  # and after a restart
        assert again.load("e")["a"] == 1


# ================================================================ read semantics


def test_load_refuses_names_the_version_does_not_hold(sm: StateManager) -> None:
    sm.save("e", {"a": 1, "df": pd.DataFrame({"x": [1]})})
    for _ in range(2):  # the second time from the cache
        with pytest.raises(NotFoundError, match="'nope'"):
            sm.load("e", names=["nope"])
        with pytest.raises(NotFoundError, match="'nope'"):
            sm.load("e", 1, names=["a", "nope"])
        assert sm.load("e", 1, names=["a"]) == {"a": 1}


def test_load_many_refuses_a_string(sm: StateManager) -> None:
    for e in "abc":
        sm.save(e, {"v": e})
    for bad in ("abc", b"ab", 5):
        with pytest.raises(InvalidArgumentError, match="list of entity ids"):
            sm.load_many(bad)  # type: ignore[arg-type]
    assert sm.load_many(["a", "c"]) == {"a": {"v": "a"}, "c": {"v": "c"}}


class SavesWhileLoaded:
    """Unpickling it saves a new version of entity "b" through another StateManager and commits.

    So the save lands exactly between load_many's reads of "a" and "b": a real
    second connection, no mock and no timing.
    """

    url = ""

    def __init__(self, n: int):
        self.n = n

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        url, SavesWhileLoaded.url = SavesWhileLoaded.url, ""  # once: loading copies the value again
        if url:
            with StateManager(url) as other:
                other.save("b", {"v": "new"})


def test_load_many_reads_one_moment_even_when_another_writer_commits_between_entities(store_url: str) -> None:
    with StateManager(store_url, allow_pickle=True) as sm:
        sm.save("a", {"obj": SavesWhileLoaded(1)})
        sm.save("b", {"v": "old"})
    SavesWhileLoaded.url = store_url
    try:
        with StateManager(store_url, cache_size=0) as reader:
            got = reader.load_many(["a", "b"])
            assert got["a"]["obj"].n == 1
            assert got["b"] == {"v": "old"}, "load_many saw a save committed after its first read"
            assert reader.load("b") == {"v": "new"} and reader.head_version("b") == 2  # the save did commit
    finally:
        SavesWhileLoaded.url = ""


def test_a_missing_versions_message_tells_the_versions_that_exist(sm: StateManager) -> None:
    for v in range(1, 11):
        sm.save("e", {"v": v}, expires_in=1 if v == 5 else "never")
    sm.purge_expired(now=pd.Timestamp.now(tz="UTC").to_pydatetime() + timedelta(seconds=5))
    for call in (lambda: sm.rollback("e", 5), lambda: sm.load("e", 5), lambda: sm.get("e", 5)):
        with pytest.raises(NotFoundError) as caught:
            call()
        message = str(caught.value)
        assert "9 versions: 1 to 4, 6 to 10" in message and "run 1 to 10" not in message, message
    with pytest.raises(NotFoundError, match="1 to 4, 6 to 10"):
        sm.load("e", 11)


def test_a_version_with_a_branch_must_be_on_that_branchs_line(sm: StateManager) -> None:
    sm.save("e", {"v": 1})
    sm.save("e", {"v": 2})
    sm.create_branch("e", "try", from_version=1)
    sm.save("e", {"v": 3}, branch="try")  # v3 on try, parent v1
    sm.save("e", {"v": 4})  # v4 on main, parent v2
    assert sm.load("e", 3) == {"v": 3}  # without a branch: any version
    assert sm.load("e", 1, branch="try") == {"v": 1}  # try's line: v3, v1
    assert sm.get("e", 3, branch="try").version == 3
    for version, branch in ((3, "main"), (2, "try"), (4, "try")):
        with pytest.raises(NotFoundError, match=f"not on branch '{branch}'"):
            sm.load("e", version, branch=branch)
        with pytest.raises(NotFoundError, match=f"not on branch '{branch}'"):
            sm.get("e", version, branch=branch)
    sm.load("e", 3)  # cached now: the branch is still checked
    with pytest.raises(NotFoundError):
        sm.load("e", 3, branch="main")


@pytest.mark.parametrize("url", ["::::", "sqlite:x.db", "postgres:/db", "sqlite:////", "bad\x00name.db", "folder/"])
def test_a_malformed_url_is_refused_before_any_file_is_created(tmp_path: Path, url: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StatekitError) as caught:
        StateManager(url)
    one_line(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_plain_path_with_spaces_is_still_a_store(tmp_path: Path) -> None:
    with StateManager("my store.db") as sm:
        sm.save("e", {"a": 1})
    assert (tmp_path / "my store.db").is_file()


@contextlib.contextmanager
def pg_store_and_reader() -> Iterator[tuple[str, Any]]:
    """A fresh PostgreSQL store's URL, and a function giving the URL of a role that may only read it."""
    url, schema = fresh_pg_url()
    role = f"sk_ro_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url)

    def reader() -> str:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
            conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
        return url.replace("://postgres@", f"://{role}@", 1)

    try:
        yield url, reader
    finally:
        drop_pg_schema(schema)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


@pytest.mark.postgres
def test_a_postgres_role_that_may_only_read_reads_and_a_save_fails_cleanly() -> None:
    with pg_store_and_reader() as (url, reader):
        with StateManager(url) as sm:
            sm.save("e", {"a": 1, "arr": np.arange(10)})
        with StateManager(reader()) as ro:
            assert ro.load("e")["a"] == 1 and ro.history("e")["version"].tolist() == [1]
            assert ro.verify().empty
            with pytest.raises(StatekitError, match="read-only for you") as caught:
                ro.save("e", {"a": 2})
            one_line(caught.value)
        with StateManager(url) as sm:
            assert sm.head_version("e") == 1


@pytest.mark.postgres
def test_a_postgres_role_that_may_only_read_reads_an_older_store_without_upgrading_it() -> None:
    with pg_store_and_reader() as (url, reader):
        with StateManager(url) as sm:
            sm.restore(Path(__file__).parent / "data" / "schema1_store.skb")  # rows of statekit 0.x
        engine = sa.create_engine(url)
        with engine.begin() as conn:  # as statekit 0.x left a PostgreSQL store
            conn.exec_driver_sql("ALTER TABLE state_snapshots ALTER COLUMN checksum TYPE VARCHAR(64)")
            conn.exec_driver_sql("UPDATE statekit_meta SET value = '1' WHERE key = 'schema_version'")
        engine.dispose()
        with StateManager(reader()) as ro:
            assert ro.db.schema_version() == 1
            assert ro.load("exp")["n"] == 4 and ro.verify().empty
            with pytest.raises(StatekitError, match="read-only for you"):
                ro.save("exp", {"n": 5})
