"""Remembering how a DataFrame was encoded, so saving it again unchanged costs no encoding.

pandas >= 3 is always copy-on-write. The memo keeps a shallow copy of each
frame it encoded; that copy shares the frame's memory and is registered with
pandas' reference tracking, so any later in-place write to the frame first
copies the written block. Comparing the data addresses of the frame's arrays
with the copy's therefore tells, exactly and in microseconds, whether the frame
changed since it was encoded. Index, column labels and names are compared too.

The price: after a save, the first in-place write to a remembered frame copies
the written block (as it would if you had kept ``df.copy(deep=False)``), and
the old block stays in memory until the next save of that frame or until the
frame is garbage collected. Only frames of at least ``min_bytes`` are
remembered, at most ``max_entries`` of them.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class _Entry:
    ref: weakref.ref[Any]
    guard: Any  # the shallow copy: keeps CoW protection on and the memory alive
    fingerprint: tuple[Any, ...]
    descriptor: dict[str, Any]
    size: int


def _array_key(arr: Any) -> Any:
    if isinstance(arr, np.ndarray):
        return ("np", arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)
    pa_array = getattr(arr, "_pa_array", None)
    if pa_array is not None:  # Arrow-backed: immutable buffers, compare their addresses
        addrs = tuple(b.address if b is not None else 0 for chunk in pa_array.chunks for b in chunk.buffers())
        return ("pa", addrs, len(arr), str(arr.dtype))
    inner = [getattr(arr, name, None) for name in ("_ndarray", "_data", "_mask", "_codes")]
    parts = tuple(_array_key(x) for x in inner if isinstance(x, np.ndarray))
    if not parts:
        raise TypeError("unknown array type")
    cats = getattr(getattr(arr, "dtype", None), "categories", None)
    extra = (_index_key(cats), arr.dtype.ordered) if cats is not None else ()
    return ("ext", type(arr).__name__, str(arr.dtype), parts, extra)


def _index_key(index: pd.Index) -> Any:
    if isinstance(index, pd.RangeIndex):
        return ("range", index.start, index.stop, index.step, index.name)
    if isinstance(index, pd.MultiIndex):
        return ("multi", tuple(_index_key(level) for level in index.levels),
                tuple(_array_key(c) for c in index.codes), tuple(index.names))
    return ("index", type(index).__name__, _array_key(index.array), index.name, str(index.dtype))


def fingerprint(frame: pd.DataFrame | pd.Series) -> tuple[Any, ...] | None:
    """The identity of a frame's memory and labels, or None when it cannot be taken."""
    try:
        mgr = frame._mgr  # noqa: SLF001 - the block arrays; there is no public equivalent
        arrays = mgr.arrays
        labels = tuple(frame.columns) if isinstance(frame, pd.DataFrame) else (frame.name,)
        column_names = tuple(frame.columns.names) if isinstance(frame, pd.DataFrame) else ()
        return (type(frame).__name__, tuple(_array_key(a) for a in arrays), _index_key(frame.index),
                labels, column_names, frame.shape)
    except Exception:  # noqa: BLE001 - an unusual frame is simply not remembered
        return None


class FrameMemo:
    """id(frame) -> how it was last encoded, while the frame is alive and unchanged."""

    def __init__(self, max_entries: int = 32, min_bytes: int = 1 << 20):
        self.max_entries = max_entries
        self.min_bytes = min_bytes
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0

    def lookup(self, frame: Any) -> tuple[dict[str, Any], int] | None:
        """The descriptor and size of an unchanged frame, or None."""
        with self._lock:
            entry = self._entries.get(id(frame))
        if entry is None or entry.ref() is not frame:
            return None
        if fingerprint(frame) != entry.fingerprint:
            self._forget(id(frame))
            return None
        self.hits += 1
        return entry.descriptor, entry.size

    def remember(self, frame: Any, descriptor: dict[str, Any], size: int) -> None:
        if self.max_entries <= 0 or size < self.min_bytes:
            return
        key = id(frame)
        try:
            guard = frame.copy(deep=False)
            fp = fingerprint(frame)
            ref = weakref.ref(frame, self._forgetter(key))
        except TypeError:
            return
        if fp is None or fingerprint(guard) != fp:
            return
        with self._lock:
            self._entries[key] = _Entry(ref, guard, fp, descriptor, size)
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))

    def _forgetter(self, key: int) -> Any:
        def forget(_ref: Any) -> None:
            self._forget(key)

        return forget

    def _forget(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
