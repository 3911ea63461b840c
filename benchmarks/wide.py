"""A wide frame (20,000 float columns x 100 rows, about 15 MiB): save, load, re-save after one changed cell.

    python -m benchmarks.wide                 # 20,000 columns
    python -m benchmarks.wide --columns 5000

Runs on a fresh SQLite store in a temporary folder and prints the times, the
number of chunks and the payload bytes stored against the frame's size.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from statekit import StateManager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((args.rows, args.columns)), columns=[f"c{i}" for i in range(args.columns)])
    size = int(df.memory_usage(index=False).sum())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        with StateManager(f"sqlite:///{path}", cache_size=0) as sm:
            t = time.perf_counter()
            first = sm.save("wide", {"df": df})
            save = time.perf_counter() - t
            t = time.perf_counter()
            sm.load("wide")
            load = time.perf_counter() - t
            changed = df.copy()
            changed.iloc[args.rows // 2, args.columns // 2] = -1.0
            t = time.perf_counter()
            again = sm.save("wide", {"df": changed})
            resave = time.perf_counter() - t
        con = sqlite3.connect(path)
        chunks, stored = con.execute("SELECT COUNT(*), SUM(size) FROM state_payloads").fetchone()
        con.close()
    mib = 1024 * 1024
    print(f"frame: {args.columns} x {args.rows} float64, {size / mib:.1f} MiB")
    print(f"save {save:.2f} s, load {load:.2f} s, re-save after one changed cell {resave:.2f} s")
    print(f"first save: {first.new_bytes / mib:.1f} MiB new ({first.new_bytes / size:.2f}x the frame); "
          f"re-save: {again.new_bytes / 1024:.0f} KiB new; {chunks} chunks, {stored / mib:.1f} MiB stored")


if __name__ == "__main__":
    main()
