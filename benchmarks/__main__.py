"""``python -m benchmarks``: run every workload, print the table, write the JSON.

    python -m benchmarks                 # the issue's sizes (several minutes)
    python -m benchmarks --smoke         # tiny sizes, a smoke test of the code
    python -m benchmarks --only 1,3      # some workloads
    python -m benchmarks --scale 100000  # workload 7 with fewer snapshots

A workload that fails is reported (with its traceback in the JSON) and the
others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .config import Config
from .report import WorkloadResult, render, summary, write_json

WORKLOADS: dict[str, tuple[str, str]] = {
    "1": ("small_state", "Small state"),
    "2": ("history", "History"),
    "3": ("large_frame", "A large DataFrame"),
    "4": ("large_frame", "Re-saving it unchanged"),
    "5": ("large_frame", "Appending 1% and changing one column"),
    "6": ("notebook", "Auto-checkpointing a notebook"),
    "7": ("scale", "Scale"),
    "8": ("postgres", "PostgreSQL, 8 processes"),
}
"""Workload key -> (module, title). 3, 4 and 5 share one module and one DataFrame."""

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
PACKAGES = ["statekit", "pandas", "numpy", "pyarrow", "sqlalchemy", "psycopg", "langgraph-checkpoint-sqlite",
            "langgraph-checkpoint", "openai-agents", "dill", "ipython", "ipykernel", "nbclient"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code runs, figures mean nothing")
    p.add_argument("--only", default="", help="comma-separated workload numbers (default: all)")
    p.add_argument("--scale", type=int, default=None, help="snapshots in workload 7's big store (default 1,000,000)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JSON file (default {DEFAULT_OUT})")
    p.add_argument("--tmp", default=None, help="where the scratch stores go (default: the system's temp folder)")
    p.add_argument("--pg-url", default=None, help="PostgreSQL server for workload 8")
    return p.parse_args(argv)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    from .kishu_env import KISHU

    out["kishu"] = KISHU.split("==")[1] + " (its own venv, see benchmarks/kishu_env.py)"
    return out


def source_tree() -> dict[str, object]:
    """The commit the figures were measured on, and whether the tree had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "uncommitted_changes": bool(dirty)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.smoke_sized() if args.smoke else Config()
    if args.scale is not None:
        cfg = cfg.with_(scale=args.scale)
    if args.tmp:
        cfg = cfg.with_(tmp_root=args.tmp)
    if args.pg_url:
        cfg = cfg.with_(pg_url=args.pg_url)
    wanted = [k.strip() for k in args.only.split(",") if k.strip()] or list(WORKLOADS)
    unknown = [k for k in wanted if k not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2

    # a signing key of the run's own: the benchmark never touches the user's key
    key_dir = tempfile.mkdtemp(prefix="statekit-bench-key-")
    os.environ["STATEKIT_KEY_FILE"] = str(Path(key_dir) / "key")
    os.environ.pop("STATEKIT_URL", None)

    started = time.time()
    meta = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "smoke": cfg.smoke,
            "config": cfg.as_dict(), "versions": versions(), "source": source_tree(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "machine": platform.platform(), "command": sys.argv}
    print(f"statekit benchmarks{' (smoke: tiny sizes, figures mean nothing)' if cfg.smoke else ''}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus\n", flush=True)

    results: list[WorkloadResult] = []
    done_modules: dict[str, list[WorkloadResult]] = {}
    for key in wanted:
        module_name, title = WORKLOADS[key]
        if module_name in done_modules:  # a module that produces several workloads ran already
            for r in done_modules[module_name]:
                if r.key == key:
                    results.append(r)
                    print(render(r) + "\n", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{module_name}")
            out = module.run(cfg)
            produced = out if isinstance(out, list) else [out]
        except Exception:  # noqa: BLE001 - report it and go on with the other workloads
            produced = [WorkloadResult(k, t, error=traceback.format_exc())
                        for k, (m, t) in WORKLOADS.items() if m == module_name]
        elapsed = time.perf_counter() - t0
        for r in produced:
            r.seconds = elapsed / len(produced)
        done_modules[module_name] = produced
        for r in produced:
            if r.key == key:  # the module's other workloads print when their turn comes
                results.append(r)
                print(render(r) + "\n", flush=True)

    meta["seconds"] = round(time.time() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    text = summary(results)
    print(text)
    write_json(args.out, meta, results)
    print(f"\nfigures written to {args.out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
