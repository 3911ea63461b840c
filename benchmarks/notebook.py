"""Workload 6: auto-checkpointing an 8-cell notebook on a 2,000,000 x 4 DataFrame, run through nbclient.

The same 8 cells (create the frame, modify it, filter it, make small variables
beside it) run in a fresh kernel per mode, after one setup cell that is timed
apart:

- no checkpointing (in the project's venv, and once more in Kishu's venv to
  show the two kernels run the cells alike);
- statekit: ``%load_ext statekit`` and ``%state auto on``: a save after each
  successful cell, synchronous in IPython's ``post_run_cell`` hook;
- Kishu 0.3.4, headless as its own tests run it (``init_kishu`` in the setup
  cell; a ``PostWithoutPreError`` printed for that cell is expected); it runs
  in :mod:`benchmarks.kishu_env`'s venv;
- ``dill.dump_module`` of the session to a new file after every cell, fsynced.

The wall time is the sum of the 8 cells' round trips as nbclient sees them: a
cell's reply comes after its ``post_run_cell`` hooks return, so every
checkpoint is on disk when the timing ends (all three write synchronously).
The store is opened from outside the kernel as soon as the last cell returns,
and again after the kernel has shut down: a checkpoint that shows up only the
second time (work left to a background thread) is reported.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from statekit import StateManager

from . import kishu_env
from .config import Config
from .report import WorkloadResult
from .timing import Samples, clock, scratch, sqlite_files_size, tree_size

NONE = "no checkpointing"
NONE_KISHU = "no checkpointing (kishu's venv)"
SK = "statekit %state auto on"
KISHU = "kishu 0.3.4"
DILL = "dill.dump_module every cell"
ENTITY = "bench_notebook"


def cells(rows: int) -> list[str]:
    """The 8 timed cells."""
    return [
        f"import numpy as np\nimport pandas as pd\nrng = np.random.default_rng(0)\nN = {rows}\n"
        "df = pd.DataFrame({'id': np.arange(N), 'x': rng.random(N), 'y': rng.normal(size=N),\n"
        "                   'group': pd.array(np.array(list('abcdefgh'))[rng.integers(0, 8, N)], dtype='str')})",
        "df['x'] = df['x'] * 2.0\nn_rows = len(df)",
        "positive = df[df['y'] > 0]\nshare_positive = len(positive) / n_rows",
        "means = df.groupby('group')['x'].mean().to_dict()\nthreshold = 0.5",
        "df.loc[df['x'] > 1.9, 'y'] = 0.0\nclipped = int((df['y'] == 0.0).sum())",
        "top = df.nlargest(1000, 'y')\nparams = {'lr': 0.1, 'depth': 6, 'threshold': threshold}",
        "recent = positive[positive['id'] > N // 2]\nlabel = 'run-' + str(len(recent))",
        "summary = {'rows': n_rows, 'mean_x': float(df['x'].mean()), 'top_y': float(top['y'].max()),\n"
        "           'clipped': clipped}\nsmall = df.head(100)",
    ]


PREAMBLE = "import numpy as np\nimport pandas as pd\n"
"""Every setup cell imports what the cells use, so no mode's first cell pays for the imports."""


def setup_cell(mode: str, work: Path, nb_path: Path) -> str:
    return PREAMBLE + _setup(mode, work, nb_path)


def _setup(mode: str, work: Path, nb_path: Path) -> str:
    if mode == SK:
        url = f"sqlite:///{work / 'statekit.db'}"
        return ("%load_ext statekit\n"
                f"%config StateMagics.url = {url!r}\n"
                f"%config StateMagics.entity = {ENTITY!r}\n"
                "%state auto on")
    if mode == KISHU:
        return f"from kishu import init_kishu\ninit_kishu({str(nb_path)!r})"
    if mode == DILL:
        return (
            "import os as _os, dill as _dill\n"
            f"_ckpt_dir = {str(work / 'dill')!r}\n"
            "_os.makedirs(_ckpt_dir, exist_ok=True)\n"
            "_ckpt_count = [0]\n"
            "def _dill_checkpoint(result):\n"
            "    _ckpt_count[0] += 1\n"
            "    path = _os.path.join(_ckpt_dir, f'cell{_ckpt_count[0]:03d}.dill')\n"
            "    _dill.dump_module(path)\n"
            "    fd = _os.open(path, _os.O_RDONLY)\n"
            "    _os.fsync(fd)\n"
            "    _os.close(fd)\n"
            "get_ipython().events.register('post_run_cell', _dill_checkpoint)"
        )
    return "pass"


def _kernel_manager(python: str, kernels: Path, name: str) -> KernelManager:
    spec_dir = kernels / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"],
        "display_name": name, "language": "python",
    }), encoding="utf-8")
    ksm = KernelSpecManager()
    ksm.kernel_dirs = [str(kernels)]
    ksm.ensure_native_kernel = False
    return KernelManager(kernel_name=name, kernel_spec_manager=ksm)


def run_mode(mode: str, rows: int, work: Path, python: str) -> dict[str, Any]:
    """Run the notebook once in a fresh kernel; the cells' times, the store's size and its checkpoint count."""
    work.mkdir(parents=True, exist_ok=True)
    nb_path = work / "bench.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(setup_cell(mode, work, nb_path))]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells(rows)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nb_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if mode == KISHU:
        env.update({"TEST_NOTEBOOK_PATH": str(nb_path), "ENV_KISHU_TEST_MODE": "true",
                    "KISHU_PATH_ROOT": str(work / "kishu-root")})
    km = _kernel_manager(python, work / "kernels", "bench")
    client = NotebookClient(nb, km=km, timeout=1800, resources={"metadata": {"path": str(work)}})
    times: list[float] = []
    try:
        with client.setup_kernel(env=env, cwd=str(work)):
            t0 = clock()
            client.execute_cell(nb.cells[0], 0)
            setup = clock() - t0
            for i, cell in enumerate(nb.cells[1:], start=1):
                t0 = clock()
                client.execute_cell(cell, i)
                times.append(clock() - t0)
            at_end = _store_facts(mode, work, nb_path)  # what is durable when the timing ends
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    stderr = [o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    out: dict[str, Any] = {"cells": times, "total": sum(times), "setup": setup, "stderr": stderr}
    out.update(_store_facts(mode, work, nb_path))
    out["late_checkpoints"] = (out["checkpoints"] or 0) - (at_end["checkpoints"] or 0)
    return out


def _store_facts(mode: str, work: Path, nb_path: Path) -> dict[str, Any]:
    if mode == SK:
        db = work / "statekit.db"
        sm = StateManager(f"sqlite:///{db}")
        try:
            hist = sm.history(ENTITY)
            return {"store_bytes": sqlite_files_size(db), "checkpoints": len(hist),
                    "names_at_head": list(hist["names"].iloc[-1]) if len(hist) else []}
        finally:
            sm.close()
    if mode == KISHU:
        db = nb_path.with_suffix(".kishudb")
        return {"store_bytes": sqlite_files_size(db), "checkpoints": _kishu_commits(db)}
    if mode == DILL:
        folder = work / "dill"
        return {"store_bytes": tree_size(folder), "checkpoints": len(list(folder.glob("*.dill")))}
    return {"store_bytes": 0, "checkpoints": 0}


def _kishu_commits(db: Path) -> int | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        name = next((t for t in tables if t.lower() == "commit"), None) or next(
            (t for t in tables if "commit" in t.lower() and "variable" not in t.lower()), None)
        if name is None:
            return None
        return int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])


def run(cfg: Config) -> WorkloadResult:
    rows, reps = cfg.notebook_rows, cfg.notebook_reps
    res = WorkloadResult("6", f"Auto-checkpointing an 8-cell notebook on a {rows:,} x 4 DataFrame (nbclient)",
                         params={"rows": rows, "repetitions": reps})
    try:
        kishu_python: str | None = str(kishu_env.ensure())
        kishu_why = ""
    except Exception as exc:  # noqa: BLE001 - reported as "not available"
        kishu_python, kishu_why = None, f"cannot build Kishu's venv: {type(exc).__name__}: {exc}"
    modes: list[tuple[str, str]] = [(NONE, sys.executable), (SK, sys.executable), (DILL, sys.executable)]
    if kishu_python:
        modes += [(KISHU, kishu_python), (NONE_KISHU, kishu_python)]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m, _ in modes}
    with scratch("notebook", cfg.tmp_root) as tmp:
        for rep in range(reps):
            shift = rep % len(modes)
            for mode, python in modes[shift:] + modes[:shift]:
                work = tmp / f"rep{rep}-{mode.split()[0]}"
                runs[mode].append(run_mode(mode, rows, work, python))

    for mode, _ in modes:
        rs = runs[mode]
        res.add(mode, "8 cells, wall", Samples([r["total"] for r in rs]))
        res.add(mode, "setup cell", Samples([r["setup"] for r in rs]))
        if mode not in (NONE, NONE_KISHU):
            res.add(mode, "store size", value=float(_median([r["store_bytes"] for r in rs])), unit="B")
            res.add(mode, "checkpoints", value=float(_median([r["checkpoints"] or 0 for r in rs])), unit="")
        late = sum(r["late_checkpoints"] for r in rs)
        if late:
            res.notes.append(f"{mode}: {late} checkpoint(s) reached the store only after the timing ended")
        noise = sorted({line.strip().splitlines()[-1] for r in rs for line in r["stderr"] if line.strip()})
        if noise:
            res.notes.append(f"{mode} printed on stderr: " + " | ".join(n[:160] for n in noise[:4]))
    if not kishu_python:
        res.unavailable(KISHU, "8 cells, wall", kishu_why)
    per_cell = {m: [round(_median([r["cells"][i] for r in runs[m]]), 3) for i in range(8)] for m, _ in modes}
    res.params["per_cell_seconds"] = per_cell
    for m, values in per_cell.items():
        res.notes.append(f"per cell, {m} (s): " + " ".join(f"{v:.2f}" for v in values))
    if SK in runs and runs[SK]:
        res.params["statekit_names_at_head"] = runs[SK][-1].get("names_at_head")

    vs_kishu = res.ratio("wall vs Kishu", (SK, "8 cells, wall"), (KISHU, "8 cells, wall"))
    vs_none = res.ratio("wall vs no checkpointing", (SK, "8 cells, wall"), (NONE, "8 cells, wall"))
    res.ratio("wall vs dill.dump_module every cell", (SK, "8 cells, wall"), (DILL, "8 cells, wall"))
    size = res.ratio("store size vs Kishu", (SK, "store size"), (KISHU, "store size"))
    res.ratio("store size vs dill files", (SK, "store size"), (DILL, "store size"))
    res.target("wall time <= 0.5x Kishu's", vs_kishu, 0.5)
    res.target("wall time <= 1.3x no checkpointing", vs_none, 1.3)
    res.target("store size <= 0.5x Kishu's", size, 0.5)
    return res


def _median(values: list[float]) -> float:
    return Samples(values).median
