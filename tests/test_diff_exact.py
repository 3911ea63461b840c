"""A diff shows the values that were saved, exactly: never widened to float, never NaN for "nothing".

The ``old`` and ``new`` columns are object columns holding the stored values
themselves, whatever else sits in the same column of the diff (issue 13, items 9 and 14).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from statekit import StateManager
from statekit.diff import diff_states

BIG = 2**53 + 1  # the first integer a float64 cannot hold


def _by_item(frame: pd.DataFrame) -> dict[str, tuple[str, object, object]]:
    return {r.item: (r.change, r.old, r.new) for r in frame.itertuples()}


def test_integers_past_2_53_and_counts_come_back_as_the_integers_saved(sm: StateManager) -> None:
    sm.save("d", {"n": BIG, "count": 3, "params": {"seed": BIG, "k": 1}, "ratio": 0.5})
    sm.save("d", {"n": BIG + 2, "count": 4, "params": {"seed": BIG + 4, "k": 1, "new": 7}, "ratio": 0.25})
    d = _by_item(sm.diff("d", 1, 2))
    assert d["n"] == ("changed", BIG, BIG + 2)
    assert d["count"] == ("changed", 3, 4)
    assert d["params.seed"] == ("changed", BIG, BIG + 4)
    assert d["params.new"] == ("added", None, 7)
    assert d["ratio"] == ("changed", 0.5, 0.25)
    for _change, old, new in d.values():
        for v in (old, new):
            assert v is None or type(v) in (int, float)
    assert type(d["count"][1]) is int and type(d["params.new"][2]) is int
    assert sm.diff("d", 1, 2)["old"].dtype == object


def test_added_and_removed_rows_keep_each_columns_own_type(sm: StateManager) -> None:
    a = pd.DataFrame({"id": np.array([BIG, BIG + 2], dtype=np.int64), "count": [3, 4], "x": [0.5, 1.5],
                      "label": ["p", None]})
    b = pd.DataFrame({"id": np.array([BIG, BIG + 2, BIG + 4], dtype=np.int64), "count": [3, 5, 6],
                      "x": [0.5, 1.5, 2.5], "label": ["p", None, "r"]})
    sm.save("d", {"df": a})
    sm.save("d", {"df": b})
    d = _by_item(sm.diff("d", 1, 2))
    assert d["df.loc[2]"] == ("added", None, {"id": BIG + 4, "count": 6, "x": 2.5, "label": "r"})
    assert type(d["df.loc[2]"][2]["count"]) is int
    assert d["df.loc[1, 'count']"] == ("changed", 4, 5)
    back = _by_item(sm.diff("d", 2, 1))
    assert back["df.loc[2]"] == ("removed", {"id": BIG + 4, "count": 6, "x": 2.5, "label": "r"}, None)
    assert back["df.loc[2]"][2] is None  # "nothing" is None, not NaN


def test_nullable_and_missing_cells_are_shown_as_stored(sm: StateManager) -> None:
    a = pd.DataFrame({"n": pd.array([1, None, BIG], dtype="Int64"), "f": [1.0, math.nan, 2.0]})
    b = pd.DataFrame({"n": pd.array([None, 2, BIG + 2], dtype="Int64"), "f": [1.0, math.nan, 3.0]})
    sm.save("d", {"df": a})
    sm.save("d", {"df": b})
    d = _by_item(sm.diff("d", 1, 2))
    assert d["df.loc[0, 'n']"][1] == 1 and d["df.loc[0, 'n']"][2] is pd.NA
    assert d["df.loc[2, 'n']"] == ("changed", BIG, BIG + 2)
    assert "df.loc[1, 'f']" not in d  # NaN on both sides is no change
    assert d["df.loc[2, 'f']"] == ("changed", 2.0, 3.0)


def test_duplicate_column_labels_are_compared_by_occurrence() -> None:
    old = pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"])
    new = pd.DataFrame([[1, 9], [3, 4], [5, 6]], columns=["a", "a"])
    d = _by_item(diff_states({"df": old}, {"df": new}))
    assert d["df.loc[0, 'a' (#2)]"] == ("changed", 2, 9)
    assert d["df.loc[2]"] == ("added", None, {"a": 5, "'a' (#2)": 6})
    assert len(d) == 2


def test_duplicate_column_labels_through_the_store(store_url: str) -> None:
    sm = StateManager(store_url, allow_pickle=True)  # Arrow refuses duplicate labels: they go to a signed pickle
    sm.save("d", {"df": pd.DataFrame([[1, 2]], columns=["a", "a"])})
    sm.save("d", {"df": pd.DataFrame([[1, 3]], columns=["a", "a"])})
    assert _by_item(sm.diff("d", 1, 2)) == {"df.loc[0, 'a' (#2)]": ("changed", 2, 3)}
    sm.close()


@pytest.mark.parametrize("old_index, new_index", [
    (pd.IntervalIndex.from_breaks([0, 1, 2]), pd.IntervalIndex.from_breaks([0, 1, 3])),
    (pd.Index([1, "a"], dtype=object), pd.Index([(1, 2), "a"], dtype=object)),
    (pd.Index([1, 1]), pd.Index([1, 1])),
    (pd.MultiIndex.from_tuples([(1, "a"), (2, "b")]), pd.MultiIndex.from_tuples([(1, "a"), (3, "c")])),
    (pd.Index([np.nan, 1.0]), pd.Index([np.nan, 2.0])),
    (pd.Index([{"a": 1}, {"b": 2}], dtype=object), pd.Index([{"a": 1}, {"b": 2}], dtype=object)),  # unhashable
])
def test_any_index_gives_a_diff(old_index: pd.Index, new_index: pd.Index) -> None:
    old = pd.DataFrame({"x": [1, 2]}, index=old_index)
    new = pd.DataFrame({"x": [1, 3]}, index=new_index)
    d = diff_states({"df": old}, {"df": new})
    assert len(d) >= 1
    assert all(isinstance(v, int) or v is None or isinstance(v, dict) for v in [*d["old"], *d["new"]])
    assert "np.int64" not in " ".join(d["item"]) and "np.float64" not in " ".join(d["item"])


def test_every_kind_of_column_diffs_without_error() -> None:
    old = pd.DataFrame({
        "b": [b"a", b"b"], "c": pd.Categorical(["x", "y"]), "t": pd.to_datetime(["2020", "2021"], utc=True),
        "l": [[1], [2]], "o": [{"k": 1}, None], "z": [1 + 2j, 3j], "td": pd.to_timedelta([1, 2], unit="s"),
    })
    new = old.copy()
    new.loc[1, :] = [b"c", "x", pd.Timestamp("2022", tz="UTC"), [3], {"k": 2}, 4j, pd.Timedelta(seconds=5)]
    d = _by_item(diff_states({"df": old}, {"df": new}))
    assert d["df.loc[1, 'b']"] == ("changed", b"b", b"c")
    assert d["df.loc[1, 'z']"] == ("changed", 3j, 4j)
    assert d["df.loc[1, 'l']"] == ("changed", [2], [3])
    assert d["df.loc[1, 't']"][2] == pd.Timestamp("2022", tz="UTC")
    assert len(d) == 7
