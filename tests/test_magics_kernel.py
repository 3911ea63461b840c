"""``%state`` in real IPython kernels, driven through nbclient like a notebook run.

1. A notebook saves a DataFrame and a dict, changes both, saves again and
   rolls back: the kernel's values equal the originals (SQLite and PostgreSQL).
2. A second, fresh kernel runs ``%load_ext statekit`` and ``%state load`` and
   gets the work back.
3. With ``auto on``, each cell that changes something makes one version, and
   cells that change nothing make none.

The kernels inherit this process's environment (signing key file, cwd through
the notebook's path); the store is given with ``%config`` or ``$STATEKIT_URL``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from statekit import StateManager

pytestmark = pytest.mark.kernel


def run_notebook(cells: list[str | tuple[str, list[str]]], cwd: Path) -> list[str]:
    """Execute the cells in a fresh python3 kernel; returns each cell's text output (stdout+stderr)."""
    nb = nbformat.v4.new_notebook()
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags}))
    NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=120,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return [_text(c) for c in nb.cells]


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif out.get("output_type") == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
        elif "text/plain" in out.get("data", {}):
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def test_save_change_rollback_then_resume_in_a_fresh_kernel(store_url: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # what Jupyter Server tells a kernel about its notebook: the entity defaults to its file name
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "churn analysis.ipynb"))
    setup = ["%load_ext statekit", f"%config StateMagics.url = {store_url!r}"]
    first = run_notebook([
        *setup,
        "import pandas as pd\n"
        "df = pd.DataFrame({'region': ['north', 'south', 'east'], 'sales': [10.5, 20.25, 7.0]})\n"
        "params = {'lr': 0.1, 'layers': [64, 32], 'name': 'baseline'}",
        "%state save df params -m original",
        "df.loc[0, 'sales'] = 999.0\ndf['extra'] = 1\nparams['lr'] = 0.5\nparams['layers'].append(16)",
        "%state save df params -m changed",
        "%state rollback -r 'bad change'",
        "assert df.equals(pd.DataFrame({'region': ['north', 'south', 'east'], 'sales': [10.5, 20.25, 7.0]}))\n"
        "assert params == {'lr': 0.1, 'layers': [64, 32], 'name': 'baseline'}\n"
        "print('rolled back ok')",
    ], tmp_path)
    assert re.match(r"saved v1 on main: df \(new\), params \(new\); [\d.]+ (B|kB) new; [\d.]+ s", first[3]), first[3]
    assert first[5].startswith("saved v2 on main: df (changed), params (changed);"), first[5]
    restored = re.match(r"rolled back main to v1 as v3: restored (.*); [\d.]+ s", first[6])
    assert restored and set(restored.group(1).split(", ")) == {"df", "params"}, first[6]
    assert first[7].strip() == "rolled back ok"

    sm = StateManager(store_url)
    assert sm.history("churn analysis")["kind"].tolist() == ["create", "update", "rollback"]
    assert sm.load("churn analysis")["params"] == {"lr": 0.1, "layers": [64, 32], "name": "baseline"}

    second = run_notebook([  # a new kernel: nothing in memory
        *setup,
        "print('df' in globals())",
        "%state load",
        "print(df.to_dict('list'), params)",
    ], tmp_path)
    assert second[2].strip() == "False"
    loaded = re.match(r"loaded v3: (.*); [\d.]+ (B|kB); [\d.]+ s", second[3])
    assert loaded and set(loaded.group(1).split(", ")) == {"df", "params"}, second[3]
    assert second[4].strip() == ("{'region': ['north', 'south', 'east'], 'sales': [10.5, 20.25, 7.0]} "
                                 "{'lr': 0.1, 'layers': [64, 32], 'name': 'baseline'}")
    sm.close()


def test_auto_checkpoint_saves_one_version_per_changing_cell(sqlite_url: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_URL", sqlite_url)  # the default store, as StateManager() finds it
    cells: list[str | tuple[str, list[str]]] = [
        "%load_ext statekit",
        "%config StateMagics.entity = 'auto_nb'",
        "%state auto on",                                   # nothing to save yet
        "import pandas as pd",                              # a module: no version
        "df = pd.DataFrame({'a': range(5)})",               # v1
        "df",                                               # displays it: no version
        "print(df['a'].sum())",                             # reads it: no version
        "df.loc[0, 'a'] = 100",                             # v2: an in-place write
        "notes = ['start']",                                # v3
        "notes.append('more')",                             # v4
        "def helper():\n    return len(notes)",             # code: no version
        "helper()",                                         # no version
        ("notes.append('lost')\nraise RuntimeError('boom')", ["raises-exception"]),  # failed: no version
        "count = helper()",                                 # v5: count, and notes changed by the failed cell
        "del count",                                        # v6
        "%state auto off",
        "later = 1",                                        # off: no version
    ]
    outputs = run_notebook(cells, tmp_path)
    changed = {4: 1, 7: 2, 8: 3, 9: 4, 13: 5, 14: 6}
    for i, out in enumerate(outputs):
        saved = re.findall(r"auto-saved v(\d+)", out)
        assert saved == ([str(changed[i])] if i in changed else []), (i, cells[i], out)
    assert "auto-checkpoint on for 'auto_nb'" in outputs[2]
    sm = StateManager(sqlite_url)
    hist = sm.history("auto_nb")
    assert hist["version"].tolist() == [1, 2, 3, 4, 5, 6]
    assert set(hist["names"].iloc[4]) == {"df", "notes", "count"}
    final = sm.load("auto_nb")
    assert set(final) == {"df", "notes"} and final["notes"] == ["start", "more", "lost"]
    assert final["df"]["a"].tolist() == [100, 1, 2, 3, 4]
    sm.close()
