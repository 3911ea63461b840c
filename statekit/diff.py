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
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("old", "new"):
        frame[c] = frame[c].astype(object)
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


def _diff_frames(name: str, old: pd.DataFrame, new: pd.DataFrame, max_rows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for col in old.columns:
        if col not in new.columns:
            rows.append(_row(name, f"{name}.columns[{col!r}]", "removed", str(old[col].dtype), None))
    for col in new.columns:
        if col not in old.columns:
            rows.append(_row(name, f"{name}.columns[{col!r}]", "added", None, str(new[col].dtype)))
        elif str(old[col].dtype) != str(new[col].dtype):
            rows.append(_row(name, f"{name}.dtypes[{col!r}]", "changed", str(old[col].dtype), str(new[col].dtype)))
    if not (old.index.is_unique and new.index.is_unique):
        old, new = old.reset_index(drop=True), new.reset_index(drop=True)
    removed = old.index.difference(new.index, sort=False)
    added = new.index.difference(old.index, sort=False)
    for label in removed[:max_rows]:
        rows.append(_row(name, f"{name}.loc[{label!r}]", "removed", _record(old, label), None))
    rows.extend(_more(name, "removed", "rows", len(removed) - max_rows))
    for label in added[:max_rows]:
        rows.append(_row(name, f"{name}.loc[{label!r}]", "added", None, _record(new, label)))
    rows.extend(_more(name, "added", "rows", len(added) - max_rows))
    common = old.index.intersection(new.index, sort=False)
    if len(common) == 0:
        return rows
    shown = 0
    hidden = 0
    for col in [c for c in new.columns if c in old.columns]:
        a = old[col].reindex(common)
        b = new[col].reindex(common)
        try:
            same = (a == b).to_numpy(dtype=bool, na_value=False)
        except (TypeError, ValueError):
            same = np.array([_equal(x, y) for x, y in zip(a, b, strict=True)], dtype=bool)
        both_na = (a.isna() & b.isna()).to_numpy(dtype=bool, na_value=False)
        changed = np.flatnonzero(~(same | both_na))
        room = max(max_rows - shown, 0)
        for pos in changed[:room]:
            label = common[pos]
            rows.append(_row(name, f"{name}.loc[{label!r}, {col!r}]", "changed", _scalar(a.iloc[pos]),
                             _scalar(b.iloc[pos])))
        shown += min(room, len(changed))
        hidden += max(len(changed) - room, 0)
    rows.extend(_more(name, "changed", "cells", hidden))
    return rows


def _more(name: str, change: str, what: str, count: int) -> list[dict[str, Any]]:
    """One summary row for the changes past ``max_rows`` of one kind."""
    if count <= 0:
        return []
    return [_row(name, f"{name}: {count:,} more {change} {what}", change, None, f"{count:,} not shown")]


def _record(frame: pd.DataFrame, label: Any) -> dict[str, Any]:
    return {str(k): _scalar(v) for k, v in frame.loc[label].items()}


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
