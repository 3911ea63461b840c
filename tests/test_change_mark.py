"""The change mark on its own, without a store: a claim "unchanged" only with proof.

A mark is sealed (the frame's block memory is reachable only through pandas, so it is
made read-only while marked) or hashed (memory someone else may write); either way a
write through any path is seen or refused, and releasing the mark gives write access back.
"""

from __future__ import annotations

import gc
import pickle
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from statekit import changemark


def frame(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"a": rng.random(n), "b": rng.random(n), "n": np.arange(n)})


def test_a_frame_built_by_pandas_is_sealed_and_reads_do_not_change_it() -> None:
    df = frame()
    mark = changemark.take(df)
    assert mark is not None and mark.sealed
    df["a"].sum(), df.describe(), df.to_numpy(), df.iloc[:5].copy(), df["a"] * 2
    assert mark.unchanged(df) and mark.intact()


def test_pandas_writes_still_work_and_are_seen() -> None:
    df = frame()
    mark = changemark.take(df)
    df.loc[3, "a"] = -1.0  # copy-on-write: the guard makes pandas copy the block
    assert df.loc[3, "a"] == -1.0 and not mark.unchanged(df) and mark.intact()
    assert mark.guard.loc[3, "a"] != -1.0


@pytest.mark.parametrize("write", [
    lambda df: df["a"].array.__setitem__(0, 42.0),
    lambda df: setattr(df["a"].to_numpy().flags, "writeable", True),
    lambda df: setattr(np.asarray(df["b"]).flags, "writeable", True),
])
def test_writes_around_pandas_are_refused_while_sealed(write: object) -> None:
    df = frame()
    before = df.copy()
    mark = changemark.take(df)
    with pytest.raises(ValueError, match="read-only|WRITEABLE"):
        write(df)  # type: ignore[operator]
    pd.testing.assert_frame_equal(df, before)
    assert mark.unchanged(df)


def test_a_write_through_the_owner_fetched_with_base_is_seen() -> None:
    df = frame()
    mark = changemark.take(df)
    owner = df["a"].to_numpy()
    while owner.base is not None:
        owner = owner.base
    owner.flags.writeable = True
    owner.flat[0] = 7.0
    assert not mark.unchanged(df) and not mark.intact()


def test_memory_the_user_still_holds_is_hashed() -> None:
    arr = np.random.default_rng(2).random((1000, 2))
    df = pd.DataFrame(arr, copy=False)
    mark = changemark.take(df)
    assert mark is not None and not mark.sealed and mark.unchanged(df)
    arr[0, 0] = 42.0  # the example: copy-on-write does not see this
    assert not mark.unchanged(df) and not mark.intact()
    arr[0, 0] = 1.0
    sarr = np.arange(10.0)
    s = pd.Series(sarr, copy=False)
    smark = changemark.take(s)
    assert smark is not None and smark.unchanged(s)
    sarr[3] = -1
    assert not smark.unchanged(s)


def test_a_view_the_user_holds_is_not_private() -> None:
    df = frame()
    view = df["a"].to_numpy()  # a read-only view: it could be made writeable before the mark
    mark = changemark.take(df)
    assert mark is not None and not mark.sealed
    view.flags.writeable = True
    view[0] = 5.0
    assert not mark.unchanged(df)


def test_an_index_over_a_user_array_is_hashed() -> None:
    df = frame(100)
    idx = np.arange(100) * 2
    df.index = idx  # pandas keeps idx's memory
    mark = changemark.take(df)
    assert mark is not None and mark.unchanged(df)
    idx[0] = -5
    assert df.index[0] == -5 and not mark.unchanged(df)


@pytest.mark.parametrize("change", [
    lambda df: df.attrs.__setitem__("unit", "m"),
    lambda df: df.attrs["tags"].append("y"),
    lambda df: setattr(df.flags, "allows_duplicate_labels", False),
    lambda df: setattr(df.index, "name", "row"),
    lambda df: setattr(df.columns, "name", "col"),
    lambda df: df.rename(columns={"a": "A"}, inplace=True),
    lambda df: df.__setitem__("c", df["c"].cat.reorder_categories(["y", "x"])),
    lambda df: df.__setitem__("n", df["n"].astype("int32")),
    lambda df: df.insert(0, "first", 1.0),
    lambda df: df.pop("n"),
])
def test_metadata_changes_are_seen(change: object) -> None:
    df = frame(50)
    df.attrs["tags"] = ["x"]
    df["c"] = pd.Categorical(["x", "y"] * 25)
    mark = changemark.take(df)
    assert mark is not None and mark.unchanged(df)
    change(df)  # type: ignore[operator]
    assert not mark.unchanged(df)


def test_series_name_and_index_name_are_seen() -> None:
    s = pd.Series(np.arange(10.0), name="s")
    mark = changemark.take(s)
    assert mark is not None and mark.unchanged(s)
    s.name = "t"
    assert not mark.unchanged(s)
    s.name = "s"
    assert mark.unchanged(s)
    s.index.name = "k"
    assert not mark.unchanged(s)


def test_extension_arrays_are_marked() -> None:
    df = pd.DataFrame({
        "i": pd.array([1, None, 3] * 10, dtype="Int64"),
        "t": pd.date_range("2024-01-01", periods=30, tz="UTC"),
        "s": pd.Series(list("abc") * 10, dtype="str"),
        "p": pd.array(range(30), dtype="int64[pyarrow]"),
        "o": pd.Series([{"k": 1}] * 30, dtype=object),
    })
    mark = changemark.take(df)
    assert mark is not None and mark.unchanged(df)
    df.loc[0, "i"] = 9
    assert not mark.unchanged(df)
    mark = changemark.take(df)
    df.loc[0, "o"]["k"] = 2  # a Python object inside an object column: its pickle is hashed
    assert not mark.unchanged(df)


def test_what_cannot_be_marked_gets_no_mark() -> None:
    assert changemark.take([1, 2]) is None
    df = frame(10)
    df.attrs["lock"] = threading.Lock()
    assert changemark.take(df) is None
    assert changemark.take(pd.DataFrame({"s": pd.arrays.SparseArray([0, 1, 0])})) is None


def test_releasing_the_mark_gives_write_access_back() -> None:
    df = frame()
    mark = changemark.take(df)
    df.loc[0, "a"] = 1.0  # splits the block: the untouched columns are views born while sealed
    del mark
    gc.collect()
    for col in ("a", "b", "n"):
        assert df[col].array._ndarray.flags.writeable  # noqa: SLF001
    df.loc[1, "b"] = 2.0  # no reference left: pandas writes in place, which needs a writeable block
    df.iloc[2, 2] = 3
    assert df.loc[1, "b"] == 2.0 and df.iloc[2, 2] == 3


def test_two_marks_share_the_seal() -> None:
    df = frame()
    first, second = changemark.take(df), changemark.take(df)
    assert first is not None and second is not None and first.sealed and second.sealed
    del first
    gc.collect()
    with pytest.raises(ValueError, match="read-only"):
        df["a"].array[0] = 1.0
    assert second.unchanged(df)
    del second
    gc.collect()
    df["a"].array[0] = 1.0  # released: back to what pandas allows without statekit
    assert df.loc[0, "a"] == 1.0


def test_frames_arrow_allocated_are_sealed_and_released() -> None:
    df = pa.table({"a": np.arange(1000.0), "b": np.arange(1000.0)}).to_pandas()
    mark = changemark.take(df)
    assert mark is not None and mark.sealed and mark.unchanged(df)
    with pytest.raises(ValueError, match="read-only"):
        df["a"].array[0] = 1.0
    del mark
    gc.collect()
    df.iloc[0, 0] = 5.0
    assert df.iloc[0, 0] == 5.0


def test_a_pickled_round_trip_is_a_new_unchanged_frame() -> None:
    df = frame(10)
    mark = changemark.take(df)
    twin = pickle.loads(pickle.dumps(df))
    assert mark is not None and not mark.unchanged(twin)  # another object: no identity claim
    assert mark.intact()


def test_an_index_pandas_owns_is_sealed_too() -> None:
    df = pd.DataFrame({"a": np.arange(100.0)}, index=pd.date_range("2024-01-01", periods=100, freq="h"))
    df.index.get_loc(df.index[3])  # the lookup engine keeps the index's array too
    mark = changemark.take(df)
    assert mark is not None and mark.sealed
    with pytest.raises(ValueError, match="WRITEABLE"):
        np.asarray(df.index).flags.writeable = True  # without the seal, a write through it changes the index
    assert mark.unchanged(df)
    del mark
    gc.collect()
    view = np.asarray(df.index)
    view.flags.writeable = True  # released: pandas' own (unsafe) behaviour again
    assert df.index._data._ndarray.flags.writeable  # noqa: SLF001


def test_blocks_derived_from_sealed_memory_are_writeable_after_release() -> None:
    df = frame()
    mark = changemark.take(df)
    keyed = df.set_index("n")  # derived while sealed: shares memory, born read-only
    part = df[["a", "b"]]
    col = df["a"]
    del mark
    gc.collect()
    del df
    gc.collect()
    keyed.iloc[0, 0] = 1.0
    part.iloc[0, 1] = 2.0
    col.iloc[0] = 3.0
    assert keyed.iloc[0, 0] == 1.0 and part.iloc[0, 1] == 2.0 and col.iloc[0] == 3.0
