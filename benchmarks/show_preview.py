"""Issue 13, item 20: ``statekit show`` on a ~114 MiB frame must read only what it prints.

    python -m benchmarks.show_preview            # 1,500,000 rows x 10 columns (~119 MiB in pandas)
    python -m benchmarks.show_preview --rows 100000

Saves the frame to a fresh SQLite store, then runs the real command in a
subprocess (``show``, ``show --json``, and ``entities`` as the start-up floor)
and prints each run's wall time and peak RSS (the child's ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from statekit import StateManager


def _run(url: str, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one ``python -m statekit`` run in a fresh child."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "statekit", "--url", url, *args],
                         capture_output=True, text=True, check=True, env=os.environ).stdout.split()
    if out[2] != "0":
        raise RuntimeError(f"statekit {' '.join(args)} exited {out[2]}")
    return float(out[0]), int(out[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"c{i}": rng.random(opts.rows) for i in range(8)})
    df["k"] = np.arange(opts.rows)
    df["s"] = pd.Series(rng.integers(0, 1000, opts.rows)).astype(str)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'store.db'}"
        with StateManager(url) as sm:
            started = time.perf_counter()
            sm.save("big", {"df": df})
            saved = time.perf_counter() - started
        print(f"frame: {df.shape[0]:,} x {df.shape[1]}, {df.memory_usage(deep=True).sum() / 2**20:.0f} MiB "
              f"in pandas; saved in {saved:.1f} s")
        for args in (("entities",), ("show", "big"), ("show", "big", "--json")):
            seconds, rss = _run(url, *args)
            print(f"statekit {' '.join(args):<22} {seconds:6.2f} s   peak RSS {rss:7.0f} MiB")


if __name__ == "__main__":
    main()
