"""Search by variable: history(changed=...), find(...), the SQL views, and the 2 -> 3 upgrade."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import InvalidArgumentError, StateManager


def _versions(frame: pd.DataFrame) -> list[int]:
    return [int(v) for v in frame["version"]]


def test_changed_lists_versions_that_changed_a_name(sm: StateManager) -> None:
    df = pd.DataFrame({"a": [1, 2]})
    sm.save("e", {"df": df, "n": 1})                      # v1: both added
    sm.save("e", {"df": df.copy(), "n": 2})                # v2: df unchanged
    sm.save("e", {"df": df.assign(a=[1, 3]), "n": 2})      # v3: df changed
    sm.save("e", {"n": 2})                                 # v4: df removed
    assert _versions(sm.history("e", changed="df")) == [1, 3, 4]
    assert _versions(sm.history("e", changed="n")) == [1, 2]
    assert sm.history("e", changed="nothing").empty


def test_changed_key_paths_inside_dicts(sm: StateManager) -> None:
    sm.save("e", {"params": {"lr": 0.1, "opt": {"beta": 1}, "batch": 32}})   # v1
    sm.save("e", {"params": {"lr": 0.1, "opt": {"beta": 1}, "batch": 64}})   # v2: batch
    sm.save("e", {"params": {"lr": 0.2, "opt": {"beta": 1}, "batch": 64}})   # v3: lr
    sm.save("e", {"params": {"lr": 0.2, "opt": {"beta": 2}, "batch": 64}})   # v4: opt.beta
    sm.save("e", {"params": 5})                                               # v5: replaced whole
    sm.save("e", {"params": {"lr": 1, "x": 1}})                               # v6: a dict again
    sm.save("e", {"params": {"lr": 1.0, "x": 1}})                             # v7: 1 -> 1.0 is a change
    assert _versions(sm.history("e", changed="params.lr")) == [1, 3, 5, 6, 7]
    assert _versions(sm.history("e", changed="params.opt")) == [1, 4, 5]
    assert _versions(sm.history("e", changed="params.opt.beta")) == [1, 4, 5]
    assert _versions(sm.history("e", changed="params")) == [1, 2, 3, 4, 5, 6, 7]
    frame = sm.history("e", changed="params.lr")
    assert frame.loc[frame["version"] == 3, "changed"].iloc[0] == ("params.lr",)


def test_changed_with_many_paths_compares_the_values(sm: StateManager) -> None:
    big = {f"k{i}": i for i in range(400)}
    sm.save("e", {"p": {**big, "lr": 0.1}})
    sm.save("e", {"p": {**{k: v + 1 for k, v in big.items()}, "lr": 0.1}})   # 400 keys changed, lr not
    sm.save("e", {"p": {**{k: v + 2 for k, v in big.items()}, "lr": 0.3}})   # lr too
    assert _versions(sm.history("e", changed="p.lr")) == [1, 3]
    assert _versions(sm.history("e", changed="p.k5")) == [1, 2, 3]
    with pytest.raises(InvalidArgumentError):
        sm.history("e", changed="")


def test_changed_on_rollback_and_branch(sm: StateManager) -> None:
    sm.save("e", {"x": 1, "y": 1})
    sm.save("e", {"x": 2, "y": 1})
    sm.rollback("e", version=1)
    assert _versions(sm.history("e", changed="x")) == [1, 2, 3]
    assert _versions(sm.history("e", changed="y")) == [1]
    sm.create_branch("e", "b", from_version=1)
    sm.save("e", {"x": 1, "y": 5}, branch="b")
    assert _versions(sm.history("e", changed="y", branch="b")) == [4]


def test_find_by_inline_value_across_entities(sm: StateManager) -> None:
    sm.save("a", {"params": {"lr": 0.1}, "df": pd.DataFrame({"x": [1]})})
    sm.save("a", {"params": {"lr": 0.2}})
    sm.save("b", {"params": {"lr": 0.1, "flag": True}})
    sm.save("c", {"params": {"lr": 1, "flag": 1}})
    sm.save("d", {"other": {"lr": 0.1}})
    found = sm.find(where={"params.lr": 0.1})
    assert list(zip(found["entity_id"], found["version"], strict=True)) == [("a", 1), ("b", 1)]
    assert list(found["params.lr"]) == [0.1, 0.1]
    assert list(sm.find(where={"params.flag": True})["entity_id"]) == ["b"]   # True is not 1
    assert list(sm.find(where={"params.flag": 1})["entity_id"]) == ["c"]
    assert list(sm.find(where={"params.lr": 1.0})["entity_id"]) == []          # 1.0 is not 1
    assert list(sm.find(name="df")["entity_id"]) == ["a"]
    assert list(sm.find(["b", "d"], where={"params.lr": 0.1})["entity_id"]) == ["b"]
    assert list(sm.find(where={"params": {"lr": 0.2}})["version"]) == [2]
    with pytest.raises(InvalidArgumentError):
        sm.find(where=[("params.lr", 0.1)])
    for bad in ({"params.lr": float("nan")}, {"params[": 1}, {5: 1}):
        with pytest.raises(InvalidArgumentError):
            sm.find(where=bad)
    with pytest.raises(InvalidArgumentError):
        sm.find(entities=5)


def test_the_history_views_answer_plain_sql(sm: StateManager) -> None:
    sm.save("e", {"params": {"lr": 0.1}, "n": 1})
    sm.save("e", {"params": {"lr": 0.2}, "n": 1})
    sm.create_branch("e", "b", from_version=1)
    sm.save("e", {"params": {"lr": 0.1}, "n": 7}, branch="b")
    sm.merge("e", "b")
    sm.tag("e", "merged")
    engine = sm.db.engine
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version, kind, parent_version, merge_parent_version, tags "
                                    "FROM statekit_history WHERE entity_id = 'e' ORDER BY version")).all()
        changed_n = conn.execute(sa.text("SELECT version FROM statekit_names WHERE entity_id = 'e' AND name = 'n' "
                                         "AND changed ORDER BY version")).all()
    assert [tuple(r) for r in rows] == [(1, "create", None, None, None), (2, "update", 1, None, None),
                                        (3, "update", 1, None, None), (4, "merge", 2, 3, "merged")]
    assert [r[0] for r in changed_n] == [1, 3, 4]


def test_a_schema_2_store_is_upgraded_and_backfilled(store_url: str) -> None:
    with StateManager(store_url) as sm:
        sm.save("e", {"params": {"lr": 0.1}, "n": 1})
        sm.save("e", {"params": {"lr": 0.2}, "n": 1})
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # what a schema-2 store looks like
        conn.exec_driver_sql("DROP VIEW statekit_names")
        conn.exec_driver_sql("DROP VIEW statekit_history")
        conn.exec_driver_sql("ALTER TABLE state_snapshots DROP COLUMN changed")
        conn.exec_driver_sql("ALTER TABLE state_snapshots DROP COLUMN lineage")
        conn.exec_driver_sql("UPDATE statekit_meta SET value = '2' WHERE key = 'schema_version'")
    engine.dispose()
    with StateManager(store_url) as sm:
        assert sm.db.schema_version() == 3
        with sm.db.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version, changed FROM statekit_names WHERE name = 'n' "
                                        "ORDER BY version")).all()
        assert [(r[0], bool(r[1])) for r in rows] == [(1, True), (2, False)]
        assert _versions(sm.history("e", changed="params.lr")) == [1, 2]
        assert _versions(sm.history("e", changed="n")) == [1]
        assert sm.verify().empty
