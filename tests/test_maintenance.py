"""verify(), last_intact()/recover() and purge_expired(), on SQLite and PostgreSQL.

Damage is done behind the store's back with plain SQL (a flipped payload byte, a
deleted payload row, a wrong checksum), the way a disk fault or a stray script
would; ``damage`` is also used by the CLI tests.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import IntegrityError, NotFoundError, StateManager, maintenance
from statekit.db import utcnow

EXPECTED_PROBLEM = {"flip": "corrupt_chunk", "delete": "missing_chunk", "checksum": "checksum_mismatch"}


def damage(sm: StateManager, entity_id: str, version: int, how: str, *, shared: bool = False) -> str:
    """Corrupt one snapshot with SQL: ``flip`` a byte of its own chunk, ``delete`` that chunk, or a wrong ``checksum``."""
    with sm.db.engine.begin() as c:
        sid = c.execute(sa.text("SELECT snapshot_id FROM state_snapshots WHERE entity_id = :e AND version = :v"),
                        {"e": entity_id, "v": version}).scalar_one()
        if how == "checksum":
            c.execute(sa.text("UPDATE state_snapshots SET checksum = :c WHERE snapshot_id = :s"), {"c": "0" * 64, "s": sid})
            return sid
        only_here = "" if shared else (  # unless asked, a chunk no other snapshot uses: one version is damaged
            "AND digest NOT IN (SELECT digest FROM state_snapshot_payloads WHERE snapshot_id <> :s) ")
        digest = c.execute(sa.text(f"SELECT digest FROM state_snapshot_payloads WHERE snapshot_id = :s {only_here}"
                                   "ORDER BY digest LIMIT 1"), {"s": sid}).scalar_one()
        if how == "delete":
            c.execute(sa.text("DELETE FROM state_payloads WHERE digest = :d"), {"d": digest})
        else:
            data = bytes(c.execute(sa.text("SELECT data FROM state_payloads WHERE digest = :d"), {"d": digest}).scalar_one())
            k = len(data) // 2
            c.execute(sa.text("UPDATE state_payloads SET data = :b WHERE digest = :d"),
                      {"b": data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1 :], "d": digest})
    sm.cache.clear()
    return sid


def frame(seed: int, n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.random(n), "label": [f"r{seed}-{i}" for i in range(n)]})


def count(sm: StateManager, table: str) -> int:
    with sm.db.engine.connect() as c:
        return c.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


# ---------------------------------------------------------------- verify


def test_a_healthy_store_verifies_clean(sm: StateManager) -> None:
    sm.save("exp", {"df": frame(1), "params": {"lr": 0.1}, "arr": np.arange(50)})
    sm.save("exp", {"df": frame(2)}, merge=True)
    sm.create_branch("exp", "try", from_version=1)
    sm.save("exp", {"params": {"lr": 0.2}}, branch="try", merge=True)
    sm.rollback("exp", 1, reason="bad")
    sm.save("other", {"s": pd.Series([1.5, None]), "t": (1, 2)})
    result = sm.verify()
    assert result.empty, result
    assert list(result.columns) == ["entity_id", "version", "snapshot_id", "problem", "severity", "detail"]


@pytest.mark.parametrize("how", ["flip", "delete", "checksum"])
def test_verify_reports_each_kind_of_damage(sm: StateManager, how: str) -> None:
    sm.save("exp", {"df": frame(1)})
    sm.save("exp", {"df": frame(2)})
    sm.save("bystander", {"df": frame(3)})
    sid = damage(sm, "exp", 2, how)

    problems = sm.verify()
    errors = problems[problems["severity"] == "error"]
    assert set(errors["problem"]) == {EXPECTED_PROBLEM[how]}
    assert set(zip(errors["entity_id"], errors["version"], errors["snapshot_id"], strict=True)) == {("exp", 2, sid)}
    assert sm.verify("bystander").empty
    assert set(sm.verify("exp")["problem"]) == {EXPECTED_PROBLEM[how]}
    with pytest.raises(IntegrityError, match=sid):
        sm.load("exp")


def test_verify_reports_a_chunk_shared_by_several_versions_for_each(sm: StateManager) -> None:
    df = frame(1)
    sm.save("a", {"df": df})
    sm.save("b", {"df": df, "n": 1})  # the same chunks, stored once
    damage(sm, "a", 1, "flip", shared=True)
    problems = sm.verify()
    assert sorted(problems["entity_id"]) == ["a", "b"]
    assert set(problems["problem"]) == {"corrupt_chunk"}


def test_verify_reports_dangling_parents_and_heads(sm: StateManager) -> None:
    for i in range(3):
        sm.save("exp", {"i": i})
    with sm.db.engine.begin() as c:  # a stray script deletes v2 (a parent) and v3 (the head)
        c.execute(sa.text("DELETE FROM state_snapshots WHERE entity_id = 'exp' AND version IN (2, 3)"))
    problems = sm.verify()
    assert set(problems["problem"]) == {"missing_head"}  # v3 (whose parent was v2) is gone too
    sm.save("x", {"i": 1})
    sm.save("x", {"i": 2})
    with sm.db.engine.begin() as c:
        c.execute(sa.text("DELETE FROM state_snapshots WHERE entity_id = 'x' AND version = 1"))
    row = sm.verify("x").iloc[0]
    assert (row["problem"], row["version"]) == ("missing_parent", 2)


def test_orphan_chunks_are_a_warning_that_purge_clears(sm: StateManager) -> None:
    sm.save("exp", {"df": frame(1)})
    with sm.db.engine.begin() as c:
        c.execute(sa.text("DELETE FROM state_snapshot_payloads"))  # every chunk loses its link
    problems = sm.verify()
    assert "link_missing" in set(problems["problem"])
    assert problems[problems["problem"] == "orphan_chunks"]["severity"].tolist() == ["warning"]


# ---------------------------------------------------------------- last intact and recovery


@pytest.mark.parametrize("how", ["flip", "checksum"])
def test_last_intact_and_recover_after_the_head_is_damaged(sm: StateManager, how: str) -> None:
    sm.save("exp", {"df": frame(1), "step": 1})
    sm.save("exp", {"df": frame(2), "step": 2})
    sm.save("exp", {"df": frame(3), "step": 3})
    damaged = damage(sm, "exp", 3, how)
    with pytest.raises(IntegrityError):
        sm.load("exp")

    good = sm.last_intact("exp")
    assert good.version == 2
    new = maintenance.recover(sm, "exp", reason="disk fault")
    assert (new.version, new.kind.value, new.parent_version) == (4, "recover", 3)
    state = sm.load("exp")
    assert state["step"] == 2
    pd.testing.assert_frame_equal(state["df"], frame(2))
    t = sm.transitions("exp").iloc[-1]
    assert (t["transition_type"], t["reason"], t["to_version"]) == ("recover", "disk fault", 4)
    assert t["metadata"] == {"damaged_version": 3, "damaged_snapshot_id": damaged,
                             "recovered_from_version": 2, "recovered_from_snapshot_id": good.snapshot_id}
    assert set(sm.verify()["version"]) == {3}  # history is immutable: the damaged version is still reported
    assert maintenance.recover(sm, "exp") == new  # the head is intact now: nothing more is recorded
    assert len(sm.history("exp")) == 4


def test_last_intact_when_nothing_is_intact(sm: StateManager) -> None:
    sm.save("exp", {"df": frame(1)})
    damage(sm, "exp", 1, "delete")
    with pytest.raises(NotFoundError, match="no intact version"):
        sm.last_intact("exp")
    with pytest.raises(NotFoundError):
        sm.last_intact("nobody")


# ---------------------------------------------------------------- expiry


def test_purge_expired_leaves_a_consistent_store(sm: StateManager) -> None:
    shared = frame(7)
    sm.save("exp", {"df": frame(1)}, expires_in="never")                  # v1 stays
    sm.save("exp", {"df": frame(2)}, expires_in=60)                       # v2 expires
    sm.save("exp", {"df": frame(3)}, expires_in=60)                       # v3, the head of main, expires
    sm.create_branch("exp", "try", from_version=2)
    sm.save("exp", {"n": 1}, branch="try", merge=True, expires_in="never")  # v4 keeps v2's frame by reference
    sm.create_branch("exp", "late", from_version=3)                       # falls back to v1
    sm.save("gone", {"arr": np.arange(1000), "df": shared}, expires_in=60)
    sm.create_branch("gone", "side")                                      # nothing of it survives
    sm.save("keep", {"df": shared})
    chunks_before = count(sm, "state_payloads")
    later = utcnow() + timedelta(minutes=5)

    removed = sm.purge_expired(now=later)

    snaps = removed[removed["kind"] == "snapshot"]
    assert sorted(zip(snaps["entity_id"], snaps["version"], strict=True)) == [("exp", 2), ("exp", 3), ("gone", 1)]
    assert removed[removed["kind"] == "branch"][["entity_id", "branch"]].values.tolist() == [["gone", "side"]]
    chunks = removed[removed["kind"] == "chunk"]
    assert len(chunks) == chunks_before - count(sm, "state_payloads") > 0
    assert sm.verify().empty

    hist = sm.history("exp", include_expired=True)
    assert hist["version"].tolist() == [1, 4]
    assert hist.set_index("version").loc[4, "parent_version"] == 1  # re-pointed past the removed v2
    heads = sm.branches("exp").set_index("branch")["head_version"].to_dict()
    assert heads == {"main": 1, "try": 4, "late": 1}
    pd.testing.assert_frame_equal(sm.load("exp", 4)["df"], frame(2))
    pd.testing.assert_frame_equal(sm.load("keep")["df"], shared)  # a chunk another entity uses survives

    expire = sm.transitions()
    expire = expire[expire["transition_type"] == "expire"]
    assert sorted(zip(expire["entity_id"], expire["from_version"], strict=True)) == [("exp", 2), ("exp", 3), ("gone", 1)]
    by_version = {(r.entity_id, r.from_version): r.metadata for r in expire.itertuples()}
    assert by_version[("exp", 2)]["reparented"] == [{"version": 4, "parent_version": 1}]
    assert {"branch": "main", "head_version": 1, "removed": False} in by_version[("exp", 3)]["branches"]
    assert {"branch": "late", "head_version": 1, "removed": False} in by_version[("exp", 3)]["branches"]
    assert {"branch": "side", "head_version": None, "removed": True} in by_version[("gone", 1)]["branches"]

    # an entity whose every version expired keeps working: main is empty, numbering carries on
    gone = sm.branches("gone")
    assert gone["branch"].tolist() == ["main"] and gone["head_version"].isna().all()
    with pytest.raises(NotFoundError):
        sm.load("gone")
    again = sm.save("gone", {"n": 2})
    assert (again.version, again.parent_version) == (2, None)
    assert sm.purge_expired(now=later).empty
    assert sm.verify().empty


def test_expired_snapshots_are_hidden_before_the_purge(sm: StateManager) -> None:
    sm.save("s", {"n": 1}, expires_in="never")
    sm.save("s", {"n": 2}, expires_in=0.01)
    import time

    time.sleep(0.05)
    assert sm.history("s")["version"].tolist() == [1]
    with pytest.raises(NotFoundError, match="expired"):
        sm.load("s")
    assert sm.load("s", 2, include_expired=True) == {"n": 2}
    assert maintenance.purge_expired(sm, dry_run=True)["version"].tolist() == [2]
    assert sm.history("s", include_expired=True)["version"].tolist() == [1, 2]  # the dry run changed nothing
    assert sm.purge_expired()["version"].tolist() == [2]
    assert sm.load("s") == {"n": 1} and sm.verify().empty


def test_purge_while_another_writer_reuses_the_same_chunks(sm: StateManager) -> None:
    """Saves racing a purge never end up pointing at a deleted chunk or a deleted parent."""
    writer = StateManager(sm.url)
    stop = threading.Event()
    errors: list[BaseException] = []
    saved: list[int] = []

    def keep_saving() -> None:
        try:
            i = 0
            while not stop.is_set() or i < 5:
                df = frame(i, 300)
                writer.save("temp", {"df": df}, expires_in=0)  # expired at once: purge wants its chunks
                writer.save("keeper", {"df": df}, expires_in="never")  # ...which this save reuses
                writer.save("chain", {"i": i}, expires_in=0)  # purge removes this head...
                writer.save("chain", {"i": i}, expires_in="never")  # ...while this save takes it as parent
                saved.append(i)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=keep_saving)
    thread.start()
    try:
        while len(saved) < 40 and thread.is_alive():
            sm.purge_expired()
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert not errors, errors
    sm.purge_expired()
    assert sm.verify().empty
    for version, i in enumerate(saved, start=1):
        pd.testing.assert_frame_equal(sm.load("keeper", version)["df"], frame(i, 300))


def test_purge_rejects_a_bad_now(sm: StateManager) -> None:
    with pytest.raises(ValueError, match="datetime"):
        sm.purge_expired(now="tomorrow")  # type: ignore[arg-type]


def test_recover_through_the_manager_makes_the_last_intact_version_the_head(sm, store_url) -> None:  # noqa: ANN001
    import sqlalchemy as sa

    sm.save("e", {"a": 1})
    bad = sm.save("e", {"a": 2})
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_snapshots SET checksum = 'x' WHERE snapshot_id = :s"), {"s": bad.snapshot_id})
    engine.dispose()
    assert sm.last_intact("e").version == 1
    head = sm.recover("e", reason="damaged disk")
    assert head.version == 3 and head.kind.value == "recover" and sm.load("e") == {"a": 1}
    assert sm.transitions("e")["transition_type"].tolist()[-1] == "recover"
