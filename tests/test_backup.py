"""backup() and restore(): consistent while others save, identical across backends, refusing bad input.

The round trips run SQLite -> SQLite, PostgreSQL -> SQLite, SQLite -> PostgreSQL
and PostgreSQL -> PostgreSQL (the ``sm`` fixture is the source, on each backend).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import (
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    StateManager,
    StateType,
)
from statekit.db import ALL_TABLES


def populate(sm: StateManager) -> None:
    """A store with every kind of value, branches, a rollback, and an expired (unpurged) version."""
    df = pd.DataFrame({"x": [1.5, np.nan, 3.0], "s": ["a", None, "c"],
                       "t": pd.to_datetime(["2024-01-01", "2024-02-01", None], utc=True)})
    sm.save("exp-α", {"df": df, "params": {"lr": 0.1, "layers": [1, 2]}, "arr": np.arange(12).reshape(3, 4)},
            StateType.WORKFLOW_STATE, message="first", actor="ana", metadata={"k": "v"})
    sm.save("exp-α", {"df": df.iloc[:2], "when": date(2024, 1, 2), "tags": {"a", "b"}, "d": Decimal("1.10")},
            merge=True, message="second")
    sm.create_branch("exp-α", "try", from_version=1, reason="experiment")
    sm.save("exp-α", {"series": pd.Series([1, 2], name="s")}, branch="try", merge=True)
    sm.rollback("exp-α", 1, reason="bad join", actor="bo")
    sm.save("sess", {"turns": ["hi"]}, StateType.SESSION_STATE)
    sm.save("sess", {"turns": ["hi", "yo"]}, expires_in=0)
    sm.save("pickled", {"obj": Fraction(1, 3)}, allow_pickle=True)


def same_value(a: Any, b: Any) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    else:
        assert a == b and type(a) is type(b)


def assert_same_history(src: StateManager, dst: StateManager, upto: dict[str, int] | None = None) -> None:
    """Entities, versions, parents, branches, transitions, checksums and values are equal (up to ``upto``)."""
    ents = src.entities()["entity_id"].tolist() if upto is None else sorted(upto)
    assert dst.entities()["entity_id"].tolist() == ents
    if upto is None:
        pd.testing.assert_frame_equal(src.entities(), dst.entities())
    for e in ents:
        h_src, h_dst = src.history(e, include_expired=True), dst.history(e, include_expired=True)
        t_src, t_dst = src.transitions(e), dst.transitions(e)
        if upto is not None:
            h_src = h_src[h_src["version"] <= upto[e]].reset_index(drop=True)
            t_src = t_src[t_src["to_version"] <= upto[e]].reset_index(drop=True)
        pd.testing.assert_frame_equal(h_src, h_dst)
        pd.testing.assert_frame_equal(t_src, t_dst)
        if upto is None:
            pd.testing.assert_frame_equal(src.branches(e), dst.branches(e))
        for v in h_src["version"]:
            a, b = src.load(e, v, include_expired=True), dst.load(e, v, include_expired=True)
            assert list(a) == list(b)
            for name in a:
                same_value(a[name], b[name])


def table_counts(sm: StateManager) -> dict[str, int]:
    with sm.db.engine.connect() as c:
        return {t.name: c.execute(sa.text(f"SELECT COUNT(*) FROM {t.name}")).scalar_one() for t in ALL_TABLES}


def snapshot_of(sm: StateManager) -> tuple[Any, ...]:
    """Everything a failed restore must leave as it was."""
    ents = sm.entities()
    return (table_counts(sm), ents.to_json(date_format="iso"), sm.transitions().to_json(date_format="iso"),
            *[sm.history(e, include_expired=True).to_json(date_format="iso") for e in ents["entity_id"]])


# ---------------------------------------------------------------- round trips


def test_round_trip_into_sqlite(sm: StateManager, tmp_path: Path) -> None:
    populate(sm)
    info = sm.backup(tmp_path / "b.skb")
    assert info["counts"]["state_snapshots"] == 7 and info["source_dialect"] == sm.db.dialect
    assert oct((tmp_path / "b.skb").stat().st_mode & 0o777) == "0o600"
    with StateManager(f"sqlite:///{tmp_path / 'copy.db'}") as dst:
        result = dst.restore(tmp_path / "b.skb")
        assert result["snapshots_added"] == 7
        assert dst.verify().empty
        assert_same_history(sm, dst)


def test_round_trip_into_postgres(sm: StateManager, pg_url: str, tmp_path: Path) -> None:
    populate(sm)
    sm.backup(tmp_path / "b.skb")
    with StateManager(pg_url) as dst:
        dst.restore(tmp_path / "b.skb")
        assert dst.verify().empty
        assert_same_history(sm, dst)
        assert dst.save("exp-α", {"n": 1}).version == 5  # numbering carries on after a restore


WRITER = r"""
import pathlib, sys
import numpy as np, pandas as pd
from statekit import StateManager
sm = StateManager(sys.argv[1])
stop = pathlib.Path(sys.argv[2])
i = 0
while not stop.exists():
    i += 1
    sm.save("live", {"df": pd.DataFrame({"x": np.arange(3000) * i, "s": [f"v{i}"] * 3000}), "i": i})
    if i % 3 == 0:
        sm.save(f"side-{i}", {"i": i})
    print(i, flush=True)
sm.close()
"""


def test_backup_while_another_process_saves(sm: StateManager, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, sm.url, str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None

        def saved() -> int:
            line = proc.stdout.readline()
            assert line, "the writer died"
            return int(line)

        while saved() < 3:
            pass
        sm.backup(tmp_path / "live.skb")
        at_backup = saved()
        while saved() < at_backup + 3:  # the writer kept going while and after the backup ran
            pass
    finally:
        stop.touch()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    with StateManager(f"sqlite:///{tmp_path / 'copy.db'}") as dst:
        dst.restore(tmp_path / "live.skb")
        assert dst.verify().empty
        upto = {e: int(v) for e, v in dst.entities()[["entity_id", "last_version"]].values}
        k = upto["live"]
        assert 3 <= k < sm.head_version("live")
        assert dst.head_version("live") == k  # a consistent cut: the head and the counter agree
        assert_same_history(sm, dst, upto)
        assert sorted(upto) == sorted(e for e in sm.entities()["entity_id"] if e == "live" or int(e[5:]) <= k)


# ---------------------------------------------------------------- bad input


def _unwritable(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "no" / "such" / "b.skb"
    if kind == "parent is a file":
        (tmp_path / "plain").write_text("x")
        return tmp_path / "plain" / "b.skb"
    if os.geteuid() == 0:  # root writes through permission bits; /proc takes no new files from anyone
        return Path("/proc/statekit-test.skb")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "b.skb"


@pytest.mark.parametrize("kind", ["missing", "parent is a file", "read-only"])
def test_backup_to_a_folder_that_cannot_be_written(sm: StateManager, tmp_path: Path, kind: str) -> None:
    sm.save("e", {"n": 1})
    target = _unwritable(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidArgumentError, match="Cannot write the backup"):
        sm.backup(target)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not target.exists()
    with pytest.raises(InvalidArgumentError, match="is a folder"):
        sm.backup(tmp_path)


def _bad_file(tmp_path: Path, kind: str, good: Path) -> Path:
    path = tmp_path / f"bad-{kind}.skb"
    data = good.read_bytes()
    if kind == "text":
        path.write_text("entity,version\nexp,1\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(16384))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "a store, not a backup":
        with StateManager(f"sqlite:///{path}") as other:
            other.save("x", {"n": 1})
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "tampered":
        path.write_bytes(data)
        with sqlite3.connect(path) as con:
            con.execute("UPDATE state_payloads SET data = zeroblob(size) WHERE digest = "
                        "(SELECT MIN(digest) FROM state_payloads)")
    elif kind == "missing":
        pass
    return path


BAD_FILES = {"text": InvalidArgumentError, "random": InvalidArgumentError, "empty": InvalidArgumentError,
             "a store, not a backup": InvalidArgumentError, "missing": InvalidArgumentError,
             "truncated": IntegrityError, "tampered": IntegrityError}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_restore_refuses_a_foreign_or_damaged_file(sm: StateManager, tmp_path: Path, kind: str) -> None:
    with StateManager(f"sqlite:///{tmp_path / 'src.db'}") as src:
        populate(src)
        src.backup(tmp_path / "good.skb")
    bad = _bad_file(tmp_path, kind, tmp_path / "good.skb")
    empty = snapshot_of(sm)
    with pytest.raises(BAD_FILES[kind], match="bad-") as err:  # the message names the file
        sm.restore(bad)
    assert "\n" not in str(err.value)
    assert snapshot_of(sm) == empty and sm.entities().empty  # the empty target stays empty...
    sm.save("mine", {"n": 1})
    before = snapshot_of(sm)
    with pytest.raises(BAD_FILES[kind]):
        sm.restore(bad, merge=True)
    assert snapshot_of(sm) == before  # ...and a full one unchanged


def test_restore_into_a_store_that_is_not_empty(sm: StateManager, tmp_path: Path) -> None:
    with StateManager(f"sqlite:///{tmp_path / 'src.db'}") as src:
        populate(src)
        src.backup(tmp_path / "b.skb")
        sm.save("mine", {"n": 1})
        before = snapshot_of(sm)
        with pytest.raises(ConflictError, match="not empty"):
            sm.restore(tmp_path / "b.skb")
        assert snapshot_of(sm) == before

        result = sm.restore(tmp_path / "b.skb", merge=True)
        assert result["snapshots_added"] == 7 and result["entities_changed"] == 3
        assert sm.verify().empty
        assert sorted(sm.entities()["entity_id"]) == ["exp-α", "mine", "pickled", "sess"]
        restore = sm.transitions("exp-α").iloc[-1]
        assert restore["transition_type"] == "restore" and restore["metadata"]["snapshots_added"] == 4
        assert sm.load("mine") == {"n": 1}

        again = sm.restore(tmp_path / "b.skb", merge=True)  # merging the same backup again adds nothing
        assert (again["snapshots_added"], again["snapshots_skipped"], again["transitions_added"]) == (0, 7, 0)
        for e in ("exp-α", "sess", "pickled"):
            h = sm.history(e, include_expired=True)
            assert h["version"].is_unique
            pd.testing.assert_frame_equal(h, src.history(e, include_expired=True))
        assert len(sm.transitions()) == len(src.transitions()) + 1 + 3  # mine's create, the 3 restore records


def test_merge_refuses_a_version_that_would_be_duplicated(sm: StateManager, tmp_path: Path) -> None:
    with StateManager(f"sqlite:///{tmp_path / 'src.db'}") as src:
        src.save("exp", {"n": 1})
        src.save("exp", {"n": 2})
        src.backup(tmp_path / "b.skb")
    sm.save("exp", {"n": "mine"})  # v1 of the same entity, but another snapshot
    before = snapshot_of(sm)
    with pytest.raises(ConflictError, match="'exp' v1 is already a different snapshot"):
        sm.restore(tmp_path / "b.skb", merge=True)
    assert snapshot_of(sm) == before


def test_merge_of_a_newer_backup_moves_the_heads_forward(sm: StateManager, tmp_path: Path) -> None:
    with StateManager(f"sqlite:///{tmp_path / 'src.db'}") as src:
        src.save("exp", {"n": 1})
        src.save("exp", {"n": 2})
        src.backup(tmp_path / "old.skb")
        src.save("exp", {"n": 3})
        src.create_branch("exp", "side", from_version=2)
        src.backup(tmp_path / "new.skb")
        sm.restore(tmp_path / "old.skb")
        sm.restore(tmp_path / "new.skb", merge=True)
        assert sm.verify().empty
        pd.testing.assert_frame_equal(sm.history("exp"), src.history("exp"))
        assert sm.branches("exp")[["branch", "head_version"]].values.tolist() == [["main", 3], ["side", 2]]
        record = sm.transitions("exp").iloc[-1]
        assert record["transition_type"] == "restore"
        assert record["metadata"]["heads"] == {"main": [2, 3]}
        assert sm.save("exp", {"n": 4}).version == 4


def test_backup_is_timed_and_counted(sm: StateManager, tmp_path: Path) -> None:
    sm.save("e", {"n": 1})
    started = time.time()
    info = sm.backup(str(tmp_path / "b.skb"))
    assert set(info) >= {"path", "created_at", "counts", "bytes", "source_schema_version", "format_version"}
    assert info["bytes"] == (tmp_path / "b.skb").stat().st_size
    assert pd.Timestamp(info["created_at"]).timestamp() >= started - 1
    with sqlite3.connect(tmp_path / "b.skb") as con:  # inspectable with any SQLite tool
        assert con.execute("SELECT COUNT(*) FROM state_snapshots").fetchone() == (1,)
