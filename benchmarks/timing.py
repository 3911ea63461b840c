"""Measuring: samples with medians and p99, round-robin interleaving, fsync and scratch folders.

The machine is shared and noisy, so every comparison runs its systems in turn
within one loop (statekit, then a comparator, then the next...), rotating who
goes first, and reports ratios of figures taken side by side.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

clock = time.perf_counter


class Samples:
    """Durations in seconds (or any other quantity) with the statistics the report prints."""

    def __init__(self, values: list[float] | None = None):
        self.values: list[float] = list(values or [])

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def __len__(self) -> int:
        return len(self.values)

    def percentile(self, q: float) -> float:
        """Linear-interpolated percentile (``q`` in 0..100); NaN when empty."""
        if not self.values:
            return math.nan
        s = sorted(self.values)
        pos = (len(s) - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @property
    def median(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def total(self) -> float:
        return sum(self.values)

    def as_dict(self) -> dict[str, Any]:
        n = len(self.values)
        return {
            "n": n,
            "median": self.median,
            "p99": self.p99,
            "min": min(self.values) if n else math.nan,
            "max": max(self.values) if n else math.nan,
            "mean": self.total / n if n else math.nan,
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = clock()
    result = fn()
    return clock() - start, result


def interleave(ops: dict[str, Callable[[int], Any]], rounds: int, *, warmup: int = 0) -> dict[str, Samples]:
    """Call every ``ops[name](i)`` once per round, for ``rounds`` rounds, in a rotating order.

    Returns the samples per name. ``warmup`` extra rounds (with negative ``i``
    values) run first and are not recorded.
    """
    names = list(ops)
    out = {n: Samples() for n in names}
    for i in range(-warmup, rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            fn = ops[name]
            start = clock()
            fn(i)
            elapsed = clock() - start
            if i >= 0:
                out[name].add(elapsed)
    return out


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """fsync every file under ``path`` and the folders themselves."""
    root = Path(path)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            fsync_path(p)
    for p in [root, *[d for d in root.rglob("*") if d.is_dir()]]:
        fsync_path(p)


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes in the files at or under ``path``."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if not p.exists():
        return 0
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def sqlite_files_size(db_path: str | os.PathLike[str]) -> int:
    """A SQLite database's size on disk, with its -wal and -shm files."""
    return sum(tree_size(f"{db_path}{suffix}") for suffix in ("", "-wal", "-shm", "-journal"))


@contextmanager
def scratch(prefix: str, root: str | None = None) -> Iterator[Path]:
    """A fresh temporary folder on the machine's disk (not tmpfs: fsync must cost what it costs)."""
    path = Path(tempfile.mkdtemp(prefix=f"statekit-bench-{prefix}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
