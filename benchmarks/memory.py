"""Memory of saving and loading a large float frame: peak extra RSS and what stays afterwards.

    python -m benchmarks.memory               # a 100 MB frame
    python -m benchmarks.memory --mb 400      # the issue's size (about 381 MiB)

Each measurement runs in a fresh subprocess (so one does not inherit another's
heap), on a fresh SQLite store in a temporary folder. A thread samples the
process's RSS every millisecond while the operation runs. Figures, as ratios to
the frame's own size:

- save peak: extra RSS while saving (the frame already exists); large values are
  streamed into the save transaction chunk by chunk, so this stays small;
- array save peak: the same for an ndarray of the same size (the .npy codec);
- load peak: extra RSS while loading, the loaded frame included;
- kept after load: RSS after the load minus the frame it returned (Arrow's pool
  and any buffers nobody frees).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

COLUMNS = 10


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Peak:
    """The highest RSS seen while the block runs."""

    def __enter__(self) -> _Peak:
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _frame(mb: int) -> Any:
    import numpy as np
    import pandas as pd

    rows = mb * 1024 * 1024 // (8 * COLUMNS)
    values = np.random.default_rng(0).random((COLUMNS, rows))  # the layout of pandas' block: no copy below
    return pd.DataFrame(values.T, columns=[f"c{i}" for i in range(COLUMNS)], copy=False)


def _child(step: str, store: str, mb: int) -> dict[str, Any]:
    import gc

    from statekit import StateManager

    sm = StateManager(f"sqlite:///{store}", cache_size=0)
    out: dict[str, Any] = {}
    if step == "save":
        df = _frame(mb)
        size = int(df.memory_usage(index=False).sum())
        gc.collect()
        with _Peak() as p:
            sm.save("big", {"df": df})
        out = {"frame_bytes": size, "save_peak_extra": p.peak - p.start}
    elif step == "save_array":
        import numpy as np

        arr = np.random.default_rng(1).random(mb * 1024 * 1024 // 8)
        gc.collect()
        with _Peak() as p:
            sm.save("array", {"arr": arr})
        out = {"array_bytes": arr.nbytes, "array_save_peak_extra": p.peak - p.start}
    else:
        gc.collect()
        with _Peak() as p:
            df = sm.load("big")["df"]
        gc.collect()
        size = int(df.memory_usage(index=False).sum())
        out = {"frame_bytes": size, "load_peak_extra": p.peak - p.start, "kept_after_load": _rss() - p.start - size}
    sm.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="frame size in MB (default 100; the issue used 400)")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.mb)))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store.db")
        for step in ("save", "load", "save_array"):
            proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--mb", str(args.mb), "--child", step,
                                   store], capture_output=True, text=True, check=True)
            results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    mib = 1024 * 1024
    size = results["frame_bytes"]
    print(f"frame: {size / mib:.0f} MiB of float64 ({COLUMNS} columns)")
    for key in ("save_peak_extra", "load_peak_extra", "kept_after_load"):
        print(f"{key.replace('_', ' ')}: {results[key] / mib:+.0f} MiB ({results[key] / size:.2f}x the frame)")
    extra = results["array_save_peak_extra"]
    print(f"array save peak extra: {extra / mib:+.0f} MiB ({extra / results['array_bytes']:.2f}x the "
          f"{results['array_bytes'] / mib:.0f} MiB array)")


if __name__ == "__main__":
    main()
