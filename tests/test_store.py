"""The store's semantics, written once and run on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    SnapshotStatus,
    StateManager,
    StateSnapshot,
    StateType,
    TransitionType,
)


def test_versions_are_numbered_and_point_at_their_parent(sm: StateManager) -> None:
    s1 = sm.save("exp", {"a": 1}, message="one", actor="ana")
    s2 = sm.save("exp", {"a": 2}, message="two", actor="ana")
    s3 = sm.save("exp", {"a": 3})
    assert [s1.version, s2.version, s3.version] == [1, 2, 3]
    assert s1.parent_snapshot_id is None and s1.parent_version is None
    assert s2.parent_snapshot_id == s1.snapshot_id and s3.parent_snapshot_id == s2.snapshot_id
    assert len({s1.checksum, s2.checksum, s3.checksum}) == 3
    assert s1.kind == TransitionType.CREATE and s2.kind == TransitionType.UPDATE
    assert s1.branch == "main" and s1.actor == "ana" and s1.message == "one"


def test_snapshots_are_immutable(sm: StateManager) -> None:
    sm.save("exp", {"a": [1, 2], "b": "x"})
    sm.save("exp", {"a": [3]})
    assert sm.load("exp", 1) == {"a": [1, 2], "b": "x"}
    assert sm.load("exp") == {"a": [3]}
    assert sm.load("exp", 2) == {"a": [3]}


def test_loaded_values_are_copies(sm: StateManager) -> None:
    df = pd.DataFrame({"x": [1, 2]})
    sm.save("exp", {"d": {"k": [1]}, "df": df})
    first = sm.load("exp", 1)
    first["d"]["k"].append(99)
    first["df"].loc[0, "x"] = 100
    again = sm.load("exp", 1)
    assert again["d"] == {"k": [1]}
    assert again["df"]["x"].tolist() == [1, 2]


def test_get_gives_metadata_now_and_payload_lazily(sm: StateManager) -> None:
    sm.save("exp", {"a": 1}, metadata={"source": "csv"}, message="m")
    snap = sm.get("exp")
    assert isinstance(snap, StateSnapshot)
    assert snap.version == 1 and snap.metadata == {"source": "csv"} and snap.names == ("a",)
    assert "_state" not in snap.__dict__
    assert snap.state == {"a": 1}
    assert sm.get("exp", 1).snapshot_id == snap.snapshot_id


def test_history_lists_every_version_without_payloads(sm: StateManager) -> None:
    for i in range(5):
        sm.save("exp", {"i": i}, message=f"m{i}")
    h = sm.history("exp")
    assert h["version"].tolist() == [1, 2, 3, 4, 5]
    assert h["message"].tolist() == [f"m{i}" for i in range(5)]
    assert h["parent_version"].tolist()[1:] == [1, 2, 3, 4]
    assert {"created_at", "actor", "kind", "size_bytes", "checksum", "names"} <= set(h.columns)
    assert str(h["created_at"].dt.tz) == "UTC"
    assert sm.history("exp", limit=2)["version"].tolist() == [4, 5]


def test_branches_are_named_heads_sharing_the_numbering(sm: StateManager) -> None:
    sm.save("exp", {"a": 1})
    sm.save("exp", {"a": 2})
    sm.save("exp", {"a": 3})
    base = sm.create_branch("exp", "try-log", from_version=2, reason="try a log transform")
    assert base.version == 2
    s4 = sm.save("exp", {"a": 20}, branch="try-log")
    s5 = sm.save("exp", {"a": 4})
    assert (s4.version, s4.branch, s4.parent_version) == (4, "try-log", 2)
    assert (s5.version, s5.branch, s5.parent_version) == (5, "main", 3)
    b = sm.branches("exp").set_index("branch")
    assert b.loc["main", "head_version"] == 5 and b.loc["try-log", "head_version"] == 4
    assert b.loc["try-log", "base_version"] == 2
    assert sm.load("exp", branch="try-log") == {"a": 20}
    assert sm.load("exp") == {"a": 4}
    kinds = sm.transitions("exp")["transition_type"].tolist()
    assert "branch" in kinds
    with pytest.raises(ConflictError):
        sm.create_branch("exp", "try-log")
    with pytest.raises(NotFoundError):
        sm.save("exp", {"a": 0}, branch="no-such-branch")


def test_rollback_makes_a_new_version_and_destroys_nothing(sm: StateManager) -> None:
    df = pd.DataFrame({"x": range(10)})
    sm.save("exp", {"df": df, "p": {"lr": 0.1}})
    sm.save("exp", {"df": df.iloc[:3], "p": {"lr": 0.5}})
    before = sm.metrics()["bytes_written"]
    snap = sm.rollback("exp", 1, reason="bad join", actor="ana")
    assert snap.version == 3 and snap.kind == TransitionType.ROLLBACK and snap.parent_version == 2
    assert snap.checksum == sm.get("exp", 1).checksum
    state = sm.load("exp")
    pd.testing.assert_frame_equal(state["df"], df)
    assert state["p"] == {"lr": 0.1}
    assert sm.history("exp")["version"].tolist() == [1, 2, 3]
    assert sm.load("exp", 2)["p"] == {"lr": 0.5}
    t = sm.transitions("exp").iloc[-1]
    assert (t["transition_type"], t["actor"], t["reason"]) == ("rollback", "ana", "bad join")
    assert t["metadata"]["target_version"] == 1
    # the rolled-back payload is shared, not copied
    assert sm.metrics()["bytes_written"] - before < 1000


def test_rollback_defaults_to_the_previous_version(sm: StateManager) -> None:
    sm.save("exp", {"a": 1})
    sm.save("exp", {"a": 2})
    assert sm.rollback("exp").version == 3
    assert sm.load("exp") == {"a": 1}
    with pytest.raises(NotFoundError):
        sm.rollback("fresh-entity")
    with pytest.raises(ConflictError):
        sm.rollback("exp", 1, expected_version=2)
    assert sm.head_version("exp") == 3
    sm.save("single", {"a": 1})
    with pytest.raises(NotFoundError, match="no earlier version"):
        sm.rollback("single")
    assert sm.head_version("single") == 1


def test_every_change_leaves_a_transition_with_actor_and_reason(sm: StateManager) -> None:
    sm.save("exp", {"a": 1}, actor="ana", message="load data")
    sm.save("exp", {"a": 2}, actor="bo", message="clean")
    sm.create_branch("exp", "alt", actor="cy", reason="experiment")
    sm.rollback("exp", 1, actor="ana", reason="undo clean")
    t = sm.transitions("exp")
    assert t["transition_type"].tolist() == ["create", "update", "branch", "rollback"]
    assert t["actor"].tolist() == ["ana", "bo", "cy", "ana"]
    assert t["reason"].tolist() == ["load data", "clean", "experiment", "undo clean"]
    assert t["timestamp"].is_monotonic_increasing


def test_expected_version_detects_a_concurrent_change(sm: StateManager) -> None:
    sm.save("exp", {"n": 0}, expected_version=0)
    sm.save("exp", {"n": 1}, expected_version=1)
    with pytest.raises(ConflictError) as err:
        sm.save("exp", {"n": 99}, expected_version=1)
    assert (err.value.expected, err.value.actual) == (1, 2)
    assert sm.head_version("exp") == 2 and sm.load("exp") == {"n": 1}
    with pytest.raises(ConflictError):
        sm.save("other", {"n": 1}, expected_version=3)
    assert sm.head_version("other") is None


def test_default_lifetimes_per_state_type(sm: StateManager) -> None:
    day = timedelta(hours=24)
    s = sm.save("s", {"a": 1}, StateType.SESSION_STATE)
    w = sm.save("w", {"a": 1}, StateType.WORKFLOW_STATE)
    a = sm.save("a", {"a": 1}, StateType.AGENT_STATE)
    m = sm.save("m", {"a": 1})
    x = sm.save("x", {"a": 1}, StateType.SESSION_STATE, expires_in="never")
    y = sm.save("y", {"a": 1}, "agent_state", expires_in=timedelta(minutes=5))
    assert abs((s.expires_at - s.created_at) - day) < timedelta(seconds=1)
    assert abs((w.expires_at - w.created_at) - 3 * day) < timedelta(seconds=1)
    assert a.expires_at is None and m.expires_at is None and x.expires_at is None
    assert abs((y.expires_at - y.created_at) - timedelta(minutes=5)) < timedelta(seconds=1)
    assert m.state_type == StateType.MEMORY_STATE
    # a later save without a type keeps the entity's type and its lifetime
    s2 = sm.save("s", {"a": 2})
    assert s2.state_type == StateType.SESSION_STATE and s2.expires_at is not None


def test_expired_snapshots_are_hidden_from_default_reads(sm: StateManager) -> None:
    sm.save("exp", {"a": 1}, expires_in=0)
    with pytest.raises(NotFoundError, match="expired"):
        sm.load("exp")
    assert sm.load("exp", include_expired=True) == {"a": 1}
    assert sm.history("exp").empty
    assert len(sm.history("exp", include_expired=True)) == 1


def test_status_is_recorded(sm: StateManager) -> None:
    snap = sm.save("wf", {"step": 2}, StateType.WORKFLOW_STATE, status=SnapshotStatus.COMPLETED)
    assert snap.status == SnapshotStatus.COMPLETED
    assert sm.history("wf")["status"].tolist() == ["completed"]


def test_merge_carries_unnamed_values_over_by_reference(sm: StateManager) -> None:
    df = pd.DataFrame({"x": range(1000)})
    sm.save("nb", {"df": df, "a": 1, "b": 2})
    first_size = sm.get("nb", 1).size_bytes
    snap = sm.save("nb", {"a": 10}, merge=True, drop=["b"])
    assert snap.names == ("df", "a")
    assert snap.new_bytes < 100  # the row's own JSON: no payload chunk is written again
    assert abs(snap.size_bytes - first_size) < 50  # but the version's size still counts the frame
    state = sm.load("nb")
    assert state["a"] == 10 and "b" not in state
    pd.testing.assert_frame_equal(state["df"], df)


def test_save_many_and_load_many_are_one_transaction(sm: StateManager) -> None:
    out = sm.save_many({"e1": {"a": 1}, "e2": {"b": 2}}, message="batch")
    assert {k: v.version for k, v in out.items()} == {"e1": 1, "e2": 1}
    assert sm.load_many(["e1", "e2"]) == {"e1": {"a": 1}, "e2": {"b": 2}}
    with pytest.raises(Exception, match="lock"):
        sm.save_many({"e1": {"a": 2}, "e3": {"bad": threading.Lock()}})
    assert sm.head_version("e1") == 1 and sm.head_version("e3") is None


def test_save_many_rolls_back_every_entity_on_a_conflict(sm: StateManager) -> None:
    sm.save("e1", {"a": 1}, branch="other")
    with pytest.raises(NotFoundError):
        sm.save_many({"e2": {"a": 1}, "e1": {"a": 2}})  # e1 has no main branch: the whole batch fails
    assert sm.head_version("e2") is None


def test_unchanged_values_cost_no_new_bytes(sm: StateManager, store_url: str) -> None:
    df = pd.DataFrame({"x": range(200_000), "y": [f"s{i}" for i in range(200_000)]})

    def payload_bytes() -> int:
        engine = sa.create_engine(store_url)
        with engine.connect() as conn:
            total = conn.exec_driver_sql("SELECT COALESCE(SUM(size), 0) FROM state_payloads").scalar()
        engine.dispose()
        return int(total)

    first = sm.save("big", {"df": df, "note": "v1"})
    assert first.new_bytes > 1_000_000
    stored = payload_bytes()
    again = sm.save("big", {"df": df.copy(), "note": "v2"})
    assert payload_bytes() == stored
    assert again.new_bytes < 100
    appended = pd.concat([df, pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}, index=[200_000, 200_001])])
    grown = sm.save("big", {"df": appended})
    assert grown.new_bytes < 0.2 * first.new_bytes  # only the last row chunk of each column is new
    pd.testing.assert_frame_equal(sm.load("big")["df"], appended)


def test_tampered_checksum_raises_an_integrity_error_naming_the_snapshot(sm: StateManager, store_url: str) -> None:
    snap = sm.save("exp", {"a": 1})
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE state_snapshots SET checksum = 'bad' WHERE snapshot_id = %s" if "postgresql" in store_url
            else "UPDATE state_snapshots SET checksum = 'bad' WHERE snapshot_id = ?",
            (snap.snapshot_id,),
        )
    engine.dispose()
    fresh = StateManager(store_url)
    with pytest.raises(IntegrityError) as err:
        fresh.load("exp")
    assert err.value.snapshot_id == snap.snapshot_id and snap.snapshot_id in str(err.value)
    fresh.close()


def test_tampered_inline_data_is_detected(sm: StateManager, store_url: str) -> None:
    snap = sm.save("exp", {"balance": 100})
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_snapshots SET state_data = :d WHERE snapshot_id = :s"),
                     {"d": '{"balance":1000000}', "s": snap.snapshot_id})
    engine.dispose()
    fresh = StateManager(store_url)
    with pytest.raises(IntegrityError, match=snap.snapshot_id):
        fresh.load("exp")
    fresh.close()


def test_flipped_payload_byte_and_missing_chunk_are_detected(sm: StateManager, store_url: str) -> None:
    df = pd.DataFrame({"x": range(100)})
    snap = sm.save("exp", {"df": df})
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        digest, data = conn.execute(sa.text(
            "SELECT p.digest, p.data FROM state_payloads p JOIN state_snapshot_payloads l ON l.digest = p.digest "
            "WHERE l.snapshot_id = :s ORDER BY p.size DESC"), {"s": snap.snapshot_id}).first()
        data = bytearray(data)
        data[len(data) // 2] ^= 0x01
        conn.execute(sa.text("UPDATE state_payloads SET data = :d WHERE digest = :g"), {"d": bytes(data), "g": digest})
    fresh = StateManager(store_url)
    with pytest.raises(IntegrityError, match=snap.snapshot_id):
        fresh.load("exp")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM state_payloads WHERE digest = :g"), {"g": digest})
    engine.dispose()
    fresh.cache.clear()
    with pytest.raises(IntegrityError, match="missing"):
        fresh.load("exp")
    fresh.close()


def test_observers_see_committed_changes_only(sm: StateManager, store_url: str) -> None:
    seen: list[tuple[str, int, dict]] = []
    other = StateManager(store_url)

    def observer(event) -> None:  # noqa: ANN001
        # the change is committed: another connection can already read it
        seen.append((event.kind.value, event.snapshot.version, other.load(event.entity_id, event.snapshot.version)))

    unsubscribe = sm.subscribe(observer, entity_id="exp")
    sm.save("exp", {"a": 1})
    sm.save("elsewhere", {"a": 1})
    with pytest.raises(ConflictError):
        sm.save("exp", {"a": 2}, expected_version=5)
    with pytest.raises(Exception, match="generator"):
        sm.save("exp", {"g": (i for i in range(3))})
    sm.save("exp", {"a": 3})
    assert seen == [("create", 1, {"a": 1}), ("update", 2, {"a": 3})]
    unsubscribe()
    sm.save("exp", {"a": 4})
    assert len(seen) == 2
    other.close()


def test_observer_filters_and_a_raising_observer_never_breaks_a_save(sm: StateManager) -> None:
    got: list[str] = []
    sm.subscribe(lambda e: got.append(e.entity_id), state_type=StateType.AGENT_STATE)

    def broken(event) -> None:  # noqa: ANN001
        raise RuntimeError("observer bug")

    sm.subscribe(broken)
    with pytest.warns(RuntimeWarning, match="observer bug"):
        snap = sm.save("agent", {"a": 1}, StateType.AGENT_STATE)
    with pytest.warns(RuntimeWarning):
        sm.save("sess", {"a": 1}, StateType.SESSION_STATE)
    assert snap.version == 1 and got == ["agent"]
    assert sm.metrics()["observer_errors"] == 2


def test_metrics_and_cache(sm: StateManager) -> None:
    sm.save("exp", {"a": 1})
    sm.load("exp", 1)
    sm.load("exp", 1)
    m = sm.metrics()
    assert m["operations"]["save"]["count"] == 1
    assert m["cache"]["hits"] >= 1
    assert m["bytes_written"] > 0
    frame = sm.metrics(as_frame=True)
    assert "save" in frame.index and frame.loc["save", "count"] == 1


def test_diff_of_dict_states_by_key_path(sm: StateManager) -> None:
    sm.save("exp", {"params": {"lr": 0.1, "layers": [64, 32], "opt": {"name": "adam"}}, "n": 1})
    sm.save("exp", {"params": {"lr": 0.05, "layers": [64, 32], "opt": {"name": "sgd"}, "wd": 0.01}, "m": 2})
    d = sm.diff("exp", 1, 2)
    rows = {(r.item, r.change): (r.old, r.new) for r in d.itertuples()}
    assert rows == {
        ("params.lr", "changed"): (0.1, 0.05),
        ("params.opt.name", "changed"): ("adam", "sgd"),
        ("params.wd", "added"): (None, 0.01),
        ("n", "removed"): (1, None),
        ("m", "added"): (None, 2),
    }
    assert list(sm.diff("exp").columns) == ["name", "item", "change", "old", "new"]


def test_diff_of_dataframes_by_row_and_cell(sm: StateManager) -> None:
    old = pd.DataFrame({"price": [1.0, 2.0, 3.0], "qty": [1, 2, 3]}, index=["a", "b", "c"])
    new = pd.DataFrame({"price": [1.0, 2.5, 4.0], "qty": [1.0, 2.0, 4.0], "note": ["x", "y", "z"]},
                       index=["a", "b", "d"])
    sm.save("exp", {"df": old})
    sm.save("exp", {"df": new})
    d = sm.diff("exp", 1, 2)
    rows = {(r.item, r.change): (r.old, r.new) for r in d.itertuples()}
    assert rows[("df.loc['b', 'price']", "changed")] == (2.0, 2.5)
    assert ("df.loc['c']", "removed") in rows and ("df.loc['d']", "added") in rows
    assert rows[("df.columns['note']", "added")] == (None, "str")
    assert rows[("df.dtypes['qty']", "changed")] == ("int64", "float64")
    assert ("df.loc['a', 'price']", "changed") not in rows


def test_unchanged_items_are_not_loaded_for_a_diff(sm: StateManager) -> None:
    df = pd.DataFrame({"x": range(10)})
    sm.save("exp", {"df": df, "a": 1})
    sm.save("exp", {"df": df, "a": 2})
    d = sm.diff("exp", 1, 2)
    assert d["item"].tolist() == ["a"]


def test_two_managers_share_a_store(store_url: str) -> None:
    a, b = StateManager(store_url), StateManager(store_url)
    a.save("exp", {"x": 1})
    assert b.load("exp") == {"x": 1}
    b.save("exp", {"x": 2})
    assert a.load("exp") == {"x": 2}
    assert a.head_version("exp") == 2
    a.close()
    b.close()


def test_large_frame_diffs_list_each_kind_up_to_max_rows_and_count_the_rest(sm: StateManager) -> None:
    old = pd.DataFrame({"v": range(100), "w": 0})
    new = old.drop(index=range(0, 30)).assign(w=1)
    sm.save("exp", {"df": old})
    sm.save("exp", {"df": new})
    d = sm.diff("exp", 1, 2, max_rows=10)
    counts = d["change"].value_counts().to_dict()
    assert counts == {"removed": 11, "changed": 11}  # 10 shown of each kind, plus a summary row
    assert "20 more removed rows" in " ".join(d["item"]) and "60 more changed cells" in " ".join(d["item"])


def test_resaving_a_frame_skips_encoding_only_while_it_is_unchanged(sm: StateManager) -> None:
    df = pd.DataFrame({"x": np.arange(300_000), "s": [f"r{i % 97}" for i in range(300_000)]})
    sm.save("memo", {"df": df})
    second = sm.save("memo", {"df": df})
    assert sm.metrics()["frame_memo_hits"] == 1 and second.new_bytes < 200
    df.loc[5, "x"] = -1  # in place: copy-on-write makes this visible to the memo
    third = sm.save("memo", {"df": df})
    assert sm.metrics()["frame_memo_hits"] == 1 and third.new_bytes > 0
    df.loc[7, "s"] = "changed"
    sm.save("memo", {"df": df})
    df.index.name = "row"
    sm.save("memo", {"df": df})
    sm.cache.clear()
    got = sm.load("memo")["df"]
    assert got.loc[5, "x"] == -1 and got.loc[7, "s"] == "changed" and got.index.name == "row"
    pd.testing.assert_frame_equal(got, df)
    pd.testing.assert_frame_equal(sm.load("memo", 2)["df"].iloc[:10], pd.DataFrame(
        {"x": np.arange(10), "s": [f"r{i}" for i in range(10)]}))
