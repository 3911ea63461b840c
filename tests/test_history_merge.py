"""Three-way merge: dicts, nested dicts, DataFrames, conflicts, rollbacks, repeated merges."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from statekit import InvalidArgumentError, MergeConflictError, NotFoundError, StateManager


def _fork(sm: StateManager, base: dict, ours: dict, theirs: dict) -> None:
    sm.save("e", base)
    sm.create_branch("e", "b")
    sm.save("e", theirs, branch="b")
    sm.save("e", ours)


def test_dicts_merge_by_name_and_key_path(sm: StateManager) -> None:
    _fork(sm, {"a": 1, "b": 1, "p": {"lr": 0.1, "opt": {"beta": 1, "eps": 1}}},
          ours={"a": 2, "b": 1, "p": {"lr": 0.5, "opt": {"beta": 1, "eps": 1}}},
          theirs={"a": 1, "b": 3, "c": 9, "p": {"lr": 0.1, "opt": {"beta": 2, "eps": 1}, "new": True}})
    snap = sm.merge("e", "b", message="bring b in", actor="ana")
    assert snap.kind == "merge" and snap.branch == "main" and snap.actor == "ana"
    assert sm.load("e") == {"a": 2, "b": 3, "c": 9,
                            "p": {"lr": 0.5, "opt": {"beta": 2, "eps": 1}, "new": True}}
    row = sm.history("e").iloc[-1]
    assert row["metadata"]["merged_from"]["version"] == 2 and row["parent_version"] == 3
    t = sm.transitions("e").iloc[-1]
    assert t["transition_type"] == "merge" and t["metadata"]["merged_from"]["branch"] == "b"
    assert sm.verify().empty


def test_a_conflict_writes_nothing_and_resolve_settles_it(sm: StateManager) -> None:
    _fork(sm, {"p": {"lr": 0.1, "x": 1}, "k": 1},
          ours={"p": {"lr": 0.2, "x": 1}, "k": 1},
          theirs={"p": {"lr": 0.3, "x": 2}, "k": 5})
    before = len(sm.history("e"))
    with pytest.raises(MergeConflictError) as info:
        sm.merge("e", "b")
    c = info.value.conflicts
    assert list(c.columns) == ["name", "item", "base", "ours", "theirs"]
    assert c.to_dict("records") == [{"name": "p", "item": "p.lr", "base": 0.1, "ours": 0.2, "theirs": 0.3}]
    assert len(sm.history("e")) == before and sm.load("e")["p"]["lr"] == 0.2
    sm.merge("e", "b", resolve={"p": "theirs"})
    assert sm.load("e") == {"p": {"lr": 0.3, "x": 2}, "k": 5}


def test_resolve_ours_keeps_our_value_and_the_other_changes(sm: StateManager) -> None:
    _fork(sm, {"v": 1, "w": 1}, ours={"v": 2, "w": 1}, theirs={"v": 3, "w": 4})
    sm.merge("e", "b", resolve={"v": "ours"})
    assert sm.load("e") == {"v": 2, "w": 4}
    with pytest.raises(InvalidArgumentError):
        sm.merge("e", "b", resolve={"v": "mine"})


def test_dataframes_merge_by_index_and_cell(sm: StateManager) -> None:
    base = pd.DataFrame({"a": [1, 2, 3], "s": ["x", "y", "z"]}, index=[10, 20, 30])
    ours = base.copy()
    ours.loc[10, "a"] = 100                      # one cell on our side
    ours.loc[40] = [4, "ours-row"]               # a row added on our side
    theirs = base.copy()
    theirs.loc[30, "s"] = "zz"                    # another cell on their side
    theirs.loc[50] = [5, "their-row"]            # a row added on their side
    theirs = theirs.drop(index=20)               # a row removed on their side
    _fork(sm, {"df": base}, ours={"df": ours}, theirs={"df": theirs})
    sm.merge("e", "b")
    got = sm.load("e")["df"]
    expected = pd.DataFrame({"a": [100, 3, 4, 5], "s": ["x", "zz", "ours-row", "their-row"]},
                            index=[10, 30, 40, 50])
    pd.testing.assert_frame_equal(got, expected)


def test_the_same_cell_changed_on_both_sides_is_a_conflict(sm: StateManager) -> None:
    base = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2]})
    ours, theirs = base.copy(), base.copy()
    ours.loc[1, "a"] = 7.0
    theirs.loc[1, "a"] = 8.0
    theirs.loc[0, "b"] = 9
    _fork(sm, {"df": base}, ours={"df": ours}, theirs={"df": theirs})
    with pytest.raises(MergeConflictError) as info:
        sm.merge("e", "b")
    assert info.value.conflicts.to_dict("records") == [
        {"name": "df", "item": "df.loc[1, 'a']", "base": 2.0, "ours": 7.0, "theirs": 8.0}]
    sm.merge("e", "b", resolve={"df.loc[1, 'a']": "theirs"})
    pd.testing.assert_frame_equal(sm.load("e")["df"], pd.DataFrame({"a": [1.0, 8.0], "b": [9, 2]}))


def test_merge_after_a_rollback(sm: StateManager) -> None:
    sm.save("e", {"x": 1, "y": 1})              # v1
    sm.create_branch("e", "b")
    sm.save("e", {"x": 2, "y": 1}, branch="b")   # v2: x on the branch
    sm.save("e", {"x": 1, "y": 2})              # v3: y on main ...
    sm.rollback("e", version=1, reason="bad y")  # v4: ... rolled back
    sm.merge("e", "b")
    assert sm.load("e") == {"x": 2, "y": 1}


def test_a_second_merge_starts_from_the_first(sm: StateManager) -> None:
    _fork(sm, {"x": 1, "z": 0}, ours={"x": 1, "z": 0, "o": 1}, theirs={"x": 2, "z": 0})
    sm.merge("e", "b")
    sm.save("e", {"x": 5}, merge=True)               # main changes x after the merge
    sm.save("e", {"x": 2, "z": 1}, branch="b")       # the branch changes only z
    sm.merge("e", "b")                               # base is b's first head: no conflict on x
    assert sm.load("e") == {"x": 5, "z": 1, "o": 1}
    head = sm.head_version("e")
    assert sm.merge("e", "b").version == head        # nothing new: no version written
    assert sm.head_version("e") == head


def test_merge_errors(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    with pytest.raises(NotFoundError):
        sm.merge("e", "nope")
    with pytest.raises(InvalidArgumentError):
        sm.merge("e", "main")


def test_backup_and_restore_keep_both_parents(sm: StateManager, tmp_path: Path) -> None:
    _fork(sm, {"x": 1, "z": 0}, ours={"x": 1, "z": 0, "o": 1}, theirs={"x": 2, "z": 0})
    sm.merge("e", "b")
    sm.backup(tmp_path / "b.db")
    with StateManager(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        copy.restore(tmp_path / "b.db")
        copy.save("e", {"x": 5}, merge=True)
        copy.save("e", {"x": 2, "z": 1}, branch="b")
        copy.merge("e", "b")  # the restored merge version still names its second parent
        assert copy.load("e") == {"x": 5, "z": 1, "o": 1}


def test_frames_pandas_cannot_merge_cell_by_cell_are_one_conflict(sm: StateManager) -> None:
    base = pd.DataFrame({"c": pd.Categorical(["a", "b"])})
    theirs = base.assign(c=pd.Categorical(["a", "z"]))   # a new category
    ours = base.copy()
    ours.loc[0, "c"] = "b"
    _fork(sm, {"df": base}, ours={"df": ours}, theirs={"df": theirs})
    with pytest.raises(MergeConflictError) as info:
        sm.merge("e", "b")
    assert info.value.conflicts[["name", "item"]].values.tolist() == [["df", "df"]]
    sm.merge("e", "b", resolve={"df": "theirs"})
    pd.testing.assert_frame_equal(sm.load("e")["df"], theirs)


def test_a_name_removed_on_one_side_stays_removed(sm: StateManager) -> None:
    _fork(sm, {"a": 1, "b": 2, "c": 3}, ours={"b": 2, "c": 3}, theirs={"a": 1, "b": 2, "d": 4})
    sm.merge("e", "b")
    assert sm.load("e") == {"b": 2, "d": 4}
    sm.save("f", {"k": 1})
    sm.create_branch("f", "b")
    sm.save("f", {"k": 5}, branch="b")
    sm.save("f", {"j": 0})  # k removed here, changed there: a conflict
    with pytest.raises(MergeConflictError) as info:
        sm.merge("f", "b")
    assert info.value.conflicts.to_dict("records") == [
        {"name": "k", "item": "k", "base": 1, "ours": None, "theirs": 5}]
