"""Awkward values for every codec: what a hostile or merely unusual notebook stores.

Used by the CLI tests to check that ``show``, ``diff`` and ``log`` handle anything
a store can hold. Each entry is a name, a value and a changed version of it
(so a diff has cells to compare).
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

CONTROL = "\x1b[31m\x1b]0;owned\x07\u202eevil\u200b\x08\r\x9b"
"""Escape sequences, a bidi override, a zero-width space, backspace, CR and an 8-bit CSI."""


def _changed(v: Any) -> Any:
    """A different value of the same kind."""
    if isinstance(v, pd.DataFrame):
        if len(v) > 1:
            return v.iloc[::-1].set_axis(v.index, axis=0)
        return v.iloc[:0]
    if isinstance(v, pd.Series):
        return v.iloc[::-1].set_axis(v.index) if len(v) > 1 else v.iloc[:0]
    if isinstance(v, np.ndarray):
        return v[::-1].copy() if v.ndim else v.reshape(1)
    if isinstance(v, dict):
        return {**v, "extra" + CONTROL: 1}
    return [v, v]


def awkward_values() -> Iterator[tuple[str, Any, Any]]:
    """(name, value, changed value) for many awkward values; some of them a store may refuse."""
    rng = np.random.default_rng(7)
    frames: dict[str, pd.DataFrame] = {
        "bytes_col": pd.DataFrame({"b": [b"\x00\xff", b"\x1b[2J", None]}),
        "interval_index": pd.DataFrame({"x": [1, 2]}, index=pd.IntervalIndex.from_breaks([0, 1, 5])),
        "interval_col": pd.DataFrame({"i": pd.arrays.IntervalArray.from_breaks([0, 1, 2])}),
        "tuple_labels": pd.DataFrame({("a", 1): [1, 2], ("b", 2): [3.5, 4.5]}),
        "multiindex_cols": pd.DataFrame(rng.random((2, 2)), columns=pd.MultiIndex.from_tuples([("x", "a"), ("x", "b")])),
        "int_labels": pd.DataFrame({0: [1, 2], 1: ["a", "b"]}),
        "bool_labels": pd.DataFrame({True: [1, 2], False: [3, 4]}),
        "mixed_labels": pd.DataFrame({0: [1, 2], "a": [3, 4]}),
        "control_labels": pd.DataFrame({CONTROL: [CONTROL, "x"]}, index=[CONTROL, "y"]),
        "surrogate_cell": pd.DataFrame({"s": pd.Series(["\ud800", "ok"], dtype=object)}),
        "categorical": pd.DataFrame({"c": pd.Categorical(["a", CONTROL, "a"])}),
        "tz_datetime": pd.DataFrame({"t": pd.date_range("2020", periods=3, tz="Asia/Kolkata")}),
        "timedelta": pd.DataFrame({"td": pd.to_timedelta([1, 2, 3], unit="D")}),
        "period": pd.DataFrame({"p": pd.period_range("2020-01", periods=2, freq="M")}),
        "nullable": pd.DataFrame({"i": pd.array([1, None, 2**62], dtype="Int64"),
                                  "b": pd.array([True, None, False], dtype="boolean"),
                                  "f": pd.array([1.5, None, float("nan")], dtype="Float64")}),
        "big_ints": pd.DataFrame({"u": np.array([2**64 - 1, 0], dtype=np.uint64), "i": [2**63 - 1, -(2**63)]}),
        "complex_col": pd.DataFrame({"z": [1 + 2j, -3j]}),
        "float_special": pd.DataFrame({"f": [np.nan, np.inf, -np.inf, -0.0]}),
        "arrow_list": pd.DataFrame({"l": pd.Series([[1, 2], None], dtype=pd.ArrowDtype(pa.list_(pa.int64())))}),
        "arrow_struct": pd.DataFrame({"s": pd.Series([{"a": 1}, None],
                                                     dtype=pd.ArrowDtype(pa.struct([("a", pa.int64())])))}),
        "arrow_string": pd.DataFrame({"s": pd.Series(["x", None], dtype=pd.ArrowDtype(pa.string()))}),
        "arrow_decimal": pd.DataFrame({"d": pd.Series([decimal.Decimal("1.10"), None],
                                                      dtype=pd.ArrowDtype(pa.decimal128(5, 2)))}),
        "empty": pd.DataFrame(),
        "zero_rows": pd.DataFrame({"a": pd.Series([], dtype="int64")}),
        "duplicate_labels": pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),
        "duplicate_index": pd.DataFrame({"x": [1, 2, 3]}, index=[1, 1, 2]),
        "nan_index": pd.DataFrame({"x": [1, 2]}, index=[np.nan, 1.0]),
        "object_mixed": pd.DataFrame({"o": [1, "a", None]}),
        "nested_objects": pd.DataFrame({"o": [{"k": [1]}, (1, 2)]}),
        "wide_named": pd.DataFrame(rng.random((3, 30))).rename_axis("cols", axis=1).rename_axis("rows"),
        "attrs": pd.DataFrame({"a": [1]}).pipe(lambda d: (d.attrs.update({"unit": CONTROL}), d)[1]),
        "two_chunks": pd.DataFrame({"n": np.arange(70_000), "s": ["x"] * 70_000}),
    }
    for name, df in frames.items():
        yield f"frame_{name}", df, _changed(df)
    series = {
        "named_tuple": pd.Series([1, 2], name=("a", 1)),
        "control_name": pd.Series(["x", CONTROL], name=CONTROL),
        "datetime_index": pd.Series([1.0, 2.0], index=pd.date_range("2021", periods=2, freq="D")),
        "bytes": pd.Series([b"\x07", b"\x1b"]),
        "string_dtype": pd.Series(["a", None], dtype="string"),
        "sparse": pd.Series(pd.arrays.SparseArray([0, 0, 1])),
    }
    for name, s in series.items():
        yield f"series_{name}", s, _changed(s)
    arrays = {
        "int8": np.array([-128, 127], dtype=np.int8),
        "uint64": np.array([2**64 - 1, 1], dtype=np.uint64),
        "float16": np.array([1.5, np.nan], dtype=np.float16),
        "longdouble": np.array([1.5, 2.5], dtype=np.longdouble),
        "complex128": np.array([1 + 1j, np.nan]),
        "datetime64": np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"),
        "timedelta64": np.array([1, 2], dtype="timedelta64[s]"),
        "bool": np.array([True, False]),
        "unicode": np.array(["a", CONTROL]),
        "bytes": np.array([b"\x1b[2J", b"x"]),
        "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        "zero_d": np.array(5),
        "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "three_d": np.arange(24).reshape(2, 3, 4),
        "object": np.array([1, "a"], dtype=object),
        "big": np.arange(3_000_000, dtype=np.int64),
    }
    for name, a in arrays.items():
        yield f"array_{name}", a, _changed(a)
    tagged = {
        "bytes": b"\x00\x1b[2J\xff",
        "set": {1, "a", CONTROL},
        "frozenset": frozenset({(1, 2)}),
        "tuple": (1, (2, (3,))),
        "tuple_keys": {(1, 2): "a", (CONTROL,): "b"},
        "int_keys": {1: "a", 2: {3: "b"}},
        "surrogate_str": "lone \ud800 surrogate",
        "surrogate_key": {"\udc00": 1},
        "decimal": decimal.Decimal("3.14159265358979323846264338327950288"),
        "decimal_nan": decimal.Decimal("NaN"),
        "nan": float("nan"),
        "inf": float("-inf"),
        "datetime": dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        "date": dt.date(1, 1, 1),
        "time": dt.time(23, 59, 59, 999999),
        "timedelta": dt.timedelta(days=-1, microseconds=1),
        "complex": 1 + 2j,
        "numpy_scalars": [np.int64(2**62), np.float32(0.1), np.bool_(True), np.datetime64("2020-01-01")],
        "longdouble": np.longdouble("1.1"),
        "big_int": 2**200,
        "huge_int": 10**5000,
        "nested": {"a": [{"b": ({1, 2}, b"x")}]},
        "deep": _nest(60),
        "control_text": CONTROL * 3,
        "long_text": "x" * 300_000,
        "json_big": {"k": list(range(40_000))},
        "fraction": fractions.Fraction(1, 3),
        "range": range(3),
        "empty_containers": [[], {}, (), set(), ""],
    }
    for name, v in tagged.items():
        yield f"value_{name}", v, _changed(v)


def _nest(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v, (v,)] if depth < 3 else [v]
    return v
