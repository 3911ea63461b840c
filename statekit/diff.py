"""Snapshots -> diff DataFrames, in the shape Dolt made familiar.

One row per changed item: ``name`` (the top-level value), ``item`` (a key path
such as ``params.lr``, or ``df.loc[3, 'price']``), ``change`` (added, removed,
changed) and the ``old`` and ``new`` values. DataFrames are matched row by
index and compared cell by cell; added or removed columns and dtype changes
get rows of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ["name", "item", "change", "old", "new"]
MISSING: Any = object()
MAX_ROWS = 1000
_IDENT = str.isidentifier


def diff_states(old: Mapping[str, Any], new: Mapping[str, Any], *, max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """Compare two states (dicts of name -> value)."""
    rows: list[dict[str, Any]] = []
    for name in list(dict.fromkeys([*old, *new])):
        rows.extend(diff_values(name, old.get(name, MISSING), new.get(name, MISSING), max_rows=max_rows))
    return to_frame(rows, max_rows)


def to_frame(rows: list[dict[str, Any]], max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """The rows as a DataFrame whose ``old`` and ``new`` hold the values exactly (object dtype, never cast)."""
    frame = pd.DataFrame([{c: r[c] for c in COLUMNS[:3]} for r in rows], columns=COLUMNS[:3])
    for c in ("old", "new"):
        column = np.empty(len(rows), dtype=object)
        for i, r in enumerate(rows):
            column[i] = r[c]
        frame[c] = pd.Series(column, index=frame.index, dtype=object)
    return frame


def diff_values(name: str, old: Any, new: Any, *, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    if old is MISSING and new is MISSING:
        return []
    if old is MISSING:
        return [_row(name, name, "added", None, summarize(new))]
    if new is MISSING:
        return [_row(name, name, "removed", summarize(old), None)]
    if isinstance(old, pd.Series) and isinstance(new, pd.Series):
        old, new = old.to_frame(), new.to_frame()
    if isinstance(old, pd.DataFrame) and isinstance(new, pd.DataFrame):
        return _diff_frames(name, old, new, max_rows)
    if type(old) is dict and type(new) is dict:
        return _diff_dicts(name, name, old, new)
    if _equal(old, new):
        return []
    return [_row(name, name, "changed", summarize(old), summarize(new))]


def _row(name: str, item: str, change: str, old: Any, new: Any) -> dict[str, Any]:
    return {"name": name, "item": item, "change": change, "old": old, "new": new}


def _path(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if isinstance(key, str) and _IDENT(key) else f"{prefix}[{key!r}]"


def _diff_dicts(name: str, prefix: str, old: dict[Any, Any], new: dict[Any, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in list(dict.fromkeys([*old, *new])):
        path = _path(prefix, key)
        if key not in new:
            rows.append(_row(name, path, "removed", summarize(old[key]), None))
        elif key not in old:
            rows.append(_row(name, path, "added", None, summarize(new[key])))
        elif type(old[key]) is dict and type(new[key]) is dict:
            rows.extend(_diff_dicts(name, path, old[key], new[key]))
        elif not _equal(old[key], new[key]):
            rows.append(_row(name, path, "changed", summarize(old[key]), summarize(new[key])))
    return rows


def _equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
        return bool(a.equals(b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - objects whose == is odd: treat as changed
        return False


def summarize(v: Any) -> Any:
    """A value small enough to show in a table cell."""
    if isinstance(v, pd.DataFrame):
        return f"DataFrame {v.shape[0]}×{v.shape[1]}"
    if isinstance(v, pd.Series):
        return f"Series ({len(v)},) {v.dtype}"
    if isinstance(v, np.ndarray):
        return f"ndarray {v.shape} {v.dtype}"
    if isinstance(v, (list, dict, tuple, set)) and len(v) > 20:
        return f"{type(v).__name__} of {len(v)}"
    if isinstance(v, str) and len(v) > 200:
        return v[:200] + "…"
    return v


def _column_keys(frame: pd.DataFrame) -> list[tuple[Any, int]]:
    """Each column as (label, n): its label and which occurrence of that label it is (0 unless duplicated)."""
    seen: dict[Any, int] = {}
    keys = []
    for label in frame.columns:
        try:
            n = seen.get(label, 0)
            seen[label] = n + 1
        except TypeError:  # an unhashable label: match it by its text
            label = repr(label)
            n = seen.get(label, 0)
            seen[label] = n + 1
        keys.append((label, n))
    return keys


def _col_text(key: tuple[Any, int]) -> str:
    label, n = key
    return _label(label) if n == 0 else f"{_label(label)} (#{n + 1})"


def _diff_frames(name: str, old: pd.DataFrame, new: pd.DataFrame, max_rows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    old_keys, new_keys = _column_keys(old), _column_keys(new)
    old_pos = {k: i for i, k in enumerate(old_keys)}
    new_pos = {k: i for i, k in enumerate(new_keys)}
    for key, i in old_pos.items():
        if key not in new_pos:
            rows.append(_row(name, f"{name}.columns[{_col_text(key)}]", "removed", str(old.dtypes.iloc[i]), None))
    for key, j in new_pos.items():
        if key not in old_pos:
            rows.append(_row(name, f"{name}.columns[{_col_text(key)}]", "added", None, str(new.dtypes.iloc[j])))
        elif str(old.dtypes.iloc[old_pos[key]]) != str(new.dtypes.iloc[j]):
            rows.append(_row(name, f"{name}.dtypes[{_col_text(key)}]", "changed", str(old.dtypes.iloc[old_pos[key]]),
                             str(new.dtypes.iloc[j])))
    old_index, new_index, by_label = _matchable(old.index, new.index)
    loc = "loc" if by_label else "iloc"
    removed = old_index.difference(new_index, sort=False)
    added = new_index.difference(old_index, sort=False)
    for label in removed[:max_rows]:
        rows.append(_row(name, f"{name}.{loc}[{_label(label)}]", "removed", _record(old, old_keys, old_index.get_loc(label)),
                         None))
    rows.extend(_more(name, "removed", "rows", len(removed) - max_rows))
    for label in added[:max_rows]:
        rows.append(_row(name, f"{name}.{loc}[{_label(label)}]", "added", None, _record(new, new_keys, new_index.get_loc(label))))
    rows.extend(_more(name, "added", "rows", len(added) - max_rows))
    common = old_index.intersection(new_index, sort=False)
    if len(common) == 0:
        return rows
    old_rows, new_rows = old_index.get_indexer(common), new_index.get_indexer(common)
    shown = 0
    hidden = 0
    for key, j in new_pos.items():
        if key not in old_pos:
            continue
        a = old.iloc[old_rows, old_pos[key]]
        b = new.iloc[new_rows, j]
        changed = np.flatnonzero(~_same(a, b))
        room = max(max_rows - shown, 0)
        for pos in changed[:room]:
            rows.append(_row(name, f"{name}.{loc}[{_label(common[pos])}, {_col_text(key)}]", "changed", _scalar(a.iloc[pos]),
                             _scalar(b.iloc[pos])))
        shown += min(room, len(changed))
        hidden += max(len(changed) - room, 0)
    rows.extend(_more(name, "changed", "cells", hidden))
    return rows


def _matchable(old: pd.Index, new: pd.Index) -> tuple[pd.Index, pd.Index, bool]:
    """Indexes rows can be matched by: the frames' own when both are unique and comparable, else positions."""
    try:  # labels may be unhashable (dicts) or not comparable with each other
        if old.is_unique and new.is_unique:
            old.difference(new, sort=False)
            new.difference(old, sort=False)
            old.intersection(new, sort=False)
            return old, new, True
    except (TypeError, ValueError):
        pass
    return pd.RangeIndex(len(old)), pd.RangeIndex(len(new)), False


def _label(label: Any) -> str:
    """An index label as Python would write it (numpy scalars as plain numbers)."""
    if isinstance(label, tuple):
        return repr(tuple(_scalar(x) for x in label))
    return repr(_scalar(label))


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Cell by cell: equal, or missing on both sides."""
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    try:
        same = (a == b).to_numpy(dtype=bool, na_value=False)
    except (TypeError, ValueError):
        same = np.array([_equal(x, y) for x, y in zip(a, b, strict=True)], dtype=bool)
    try:
        both_na = (a.isna() & b.isna()).to_numpy(dtype=bool, na_value=False)
    except (TypeError, ValueError):
        both_na = np.zeros(len(a), dtype=bool)
    return same | both_na


def _more(name: str, change: str, what: str, count: int) -> list[dict[str, Any]]:
    """One summary row for the changes past ``max_rows`` of one kind."""
    if count <= 0:
        return []
    return [_row(name, f"{name}: {count:,} more {change} {what}", change, None, f"{count:,} not shown")]


def _record(frame: pd.DataFrame, keys: list[tuple[Any, int]], row: Any) -> dict[Any, Any]:
    """One row as {column label: exact value}, read column by column so no dtype is widened."""
    out: dict[Any, Any] = {}
    for j, key in enumerate(keys):
        out[key[0] if key[1] == 0 else _col_text(key)] = _scalar(frame.iloc[row, j])
    return out


_EXACT_ITEM = (np.integer, np.bool_, np.str_, np.bytes_, np.float16, np.float32, np.float64, np.complex64,
               np.complex128)


def _scalar(v: Any) -> Any:
    """A numpy scalar as the Python value it equals exactly; others (datetime64, longdouble...) as they are."""
    return v.item() if isinstance(v, _EXACT_ITEM) else v
