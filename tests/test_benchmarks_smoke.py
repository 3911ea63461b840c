"""The benchmarks still run: ``python -m benchmarks --smoke`` end to end, on tiny sizes.

A benchmark is not a test, so nothing here looks at speed. What it checks is
that every workload ran without error, that every comparator really ran (a
row with numeric figures for each, in the JSON the run writes), that each
target got a measured figure, and the two correctness targets of the
PostgreSQL workload (no errors, no lost versions), which hold at any size.
The comparators are the ``bench`` extra (and Kishu, which the benchmark puts
in a venv of its own, built on first use in the user's cache folder).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import history as history_wl
from benchmarks import large_frame, notebook, postgres, scale, small_state
from tests.conftest import require_pg

REPO = Path(__file__).resolve().parent.parent

EXPECTED: dict[str, list[tuple[str, str]]] = {
    "1": [(small_state.RAW, "save (insert+commit)"), (small_state.SK, "save"), (small_state.LG, "put"),
          (small_state.OA, "add_items"), (small_state.RAW, "load (select+decode)"),
          (small_state.SK, "load (database)"), (small_state.SK, "load (cached)"), (small_state.LG, "get_tuple"),
          (small_state.OA, "get_items(limit=1)")],
    "2": [(history_wl.SK, "history() -> DataFrame"), (history_wl.LG, "list(thread)")],
    "3": [(system, op) for system in (large_frame.SK, large_frame.ARROW, large_frame.PICKLE, large_frame.DILL,
                                      large_frame.STORE) for op in ("save", "load", "bytes on disk")],
    "4": [(large_frame.SK, "first save"), (large_frame.SK, "re-save unchanged"), (large_frame.SK, "new payload bytes")],
    "5": [(large_frame.SK, "save after the change"), (large_frame.SK, "new payload bytes"),
          (large_frame.SK, "changed column's own size")],
    "6": [(m, "8 cells, wall") for m in (notebook.NONE, notebook.SK, notebook.KISHU, notebook.DILL)]
    + [(m, "store size") for m in (notebook.SK, notebook.KISHU, notebook.DILL)],
    "7": [(s, op) for s in (scale.BIG, scale.EMPTY) for op in ("save", "load (database)", "load (cached)")],
    "8": [(s, op) for s in (postgres.SK, postgres.RAW) for op in ("save, all", "throughput", "errors")],
}

if importlib.util.find_spec("langgraph") is not None:  # issue 10's adapter: its rows once it imports
    try:
        import statekit.integrations.langgraph  # noqa: F401

        EXPECTED["1"] += [(small_state.SKLG, "put"), (small_state.SKLG, "get_tuple")]
    except ImportError:
        pass


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not (isinstance(x, float) and math.isnan(x))


@pytest.mark.slow  # a dozen kernels and processes start; about a minute on 2 cores
def test_smoke_run_covers_every_workload_and_comparator(tmp_path: Path) -> None:
    require_pg()  # workload 8 needs the server (skips with the reason outside CI when it is down)
    out = tmp_path / "smoke.json"
    env = {**os.environ, "STATEKIT_BENCH_PG": os.environ.get("STATEKIT_TEST_PG",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--tmp", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["meta"]["smoke"] is True
    workloads = doc["workloads"]
    assert sorted(workloads) == sorted(EXPECTED)
    for key, wanted in EXPECTED.items():
        w = workloads[key]
        assert w["error"] is None, f"workload {key}: {w['error']}"
        rows = {(r["system"], r["op"]): r for r in w["rows"]}
        for system, op in wanted:
            row = rows.get((system, op))
            assert row is not None, f"workload {key}: no row for {system} / {op}"
            assert row["available"], f"workload {key}: {system} / {op} not available: {row.get('note')}"
            figure = row.get("median", row.get("value"))
            assert _number(figure), f"workload {key}: {system} / {op} has no figure ({row})"
        assert w["targets"], f"workload {key} states no target"
        for t in w["targets"]:
            assert _number(t["measured"]), f"workload {key}: target {t['text']!r} was not measured"
    # correctness, not speed: these hold at any size
    pg = {t["text"]: t["met"] for t in workloads["8"]["targets"]}
    assert pg == {"no errors": True, "no lost or duplicated versions": True}
    assert workloads["4"]["targets"][0]["met"], "re-saving an unchanged DataFrame wrote payload bytes"
    # the table printed what the JSON holds
    assert "targets:" in proc.stdout and str(out) in proc.stdout


def test_bad_workload_name_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "9", "--out", str(tmp_path / "x.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "unknown workload(s) 9; choose from 1, 2, 3, 4, 5, 6, 7, 8"
    assert not (tmp_path / "x.json").exists()
