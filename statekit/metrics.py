"""Operation counts and latencies, bytes written and saved by deduplication."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
import pandas as pd

RESERVOIR = 10_000


class Metrics:
    """Thread-safe counters; the last ``RESERVOIR`` latencies of each operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: dict[str, deque[float]] = {}
        self._count: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self.counters: dict[str, int] = {
            "bytes_written": 0,
            "bytes_deduplicated": 0,
            "observer_errors": 0,
        }

    def record(self, op: str, seconds: float, *, error: bool = False) -> None:
        with self._lock:
            self._count[op] = self._count.get(op, 0) + 1
            if error:
                self._errors[op] = self._errors.get(op, 0) + 1
            self._latency.setdefault(op, deque(maxlen=RESERVOIR)).append(seconds)

    def add(self, counter: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + amount

    def as_dict(self, cache: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ops = {}
            for op, lat in self._latency.items():
                arr = np.fromiter(lat, dtype=float) * 1e3
                ops[op] = {
                    "count": self._count[op],
                    "errors": self._errors.get(op, 0),
                    "mean_ms": float(arr.mean()),
                    "p50_ms": float(np.percentile(arr, 50)),
                    "p99_ms": float(np.percentile(arr, 99)),
                }
            return {"operations": ops, "cache": dict(cache), **self.counters}

    @staticmethod
    def as_frame(d: dict[str, Any]) -> pd.DataFrame:
        """One row per operation, plus rows for the cache and byte counters."""
        rows = [{"metric": op, **vals} for op, vals in d["operations"].items()]
        frame = pd.DataFrame(rows, columns=["metric", "count", "errors", "mean_ms", "p50_ms", "p99_ms"])
        extra = {f"cache_{k}": v for k, v in d["cache"].items()}
        extra.update({k: v for k, v in d.items() if k not in ("operations", "cache")})
        frame = frame.set_index("metric")
        totals = pd.DataFrame({"value": pd.Series(extra, dtype=object)})
        frame["value"] = None
        return pd.concat([frame, totals.rename_axis("metric")])
