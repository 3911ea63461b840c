"""The values in legacy_frames_v1.db, written by statekit before frame format 2 (commit cd39dc2).

Regenerate only with that release: ``python -m tests.data.legacy_values OUT.db`` run against it.
Version ``i + 1`` of entity ``legacy`` holds ``{name: value}`` for the i-th item.
"""

from __future__ import annotations

import decimal
import sys
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


def _arrow(t: pa.DataType, values: list[Any]) -> pd.Series:
    return pd.Series(values, dtype=pd.ArrowDtype(t))


def legacy_values() -> dict[str, Any]:
    letters = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["l", "n"])
    return {
        "plain": pd.DataFrame({"i": [1, 2, 3], "f": [0.5, np.nan, -1e300], "s": ["x", None, "z"]}),
        "multi": pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=letters),
        "cat": pd.DataFrame({"c": pd.Categorical(["lo", "hi", "lo"], categories=["lo", "mid", "hi"], ordered=True)}),
        "tz": pd.DataFrame({"t": pd.date_range("2024-03-30", periods=3, freq="h", tz="Europe/Paris")}),
        "nullable": pd.DataFrame({"i": pd.array([1, None, 3], dtype="Int64"),
                                  "b": pd.array([True, None, False], dtype="boolean")}),
        "objnan": pd.DataFrame({"s": pd.Series(["a", np.nan, "c"], dtype=object)}),
        "pystr": pd.DataFrame({"s": pd.array(["a", None, "c"], dtype="string[python]")}),
        "nocols": pd.DataFrame(index=pd.RangeIndex(3)),
        "empty": pd.DataFrame({"a": pd.Series([], dtype="int64")}),
        "series": pd.Series([1.0, 2.0], index=["a", "b"], name="price"),
        "list": pd.DataFrame({"l": _arrow(pa.list_(pa.int64()), [[1, 2], None])}),
        "struct": pd.DataFrame({"s": _arrow(pa.struct([("a", pa.int64())]), [{"a": 1}, None])}),
        "dict": pd.DataFrame({"d": _arrow(pa.dictionary(pa.int32(), pa.string()), ["a", None])}),
        "dec": pd.DataFrame({"d": _arrow(pa.decimal128(10, 2), [decimal.Decimal("1.23"), None])}),
        "big": pd.DataFrame({"x": np.arange(70_000) % 7}),
    }


if __name__ == "__main__":
    from statekit import StateManager

    with StateManager(f"sqlite:///{sys.argv[1]}") as sm:
        for name, value in legacy_values().items():
            sm.save("legacy", {name: value}, message=name)
