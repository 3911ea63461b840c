"""The ``statekit`` command, through click's CliRunner and as a real subprocess.

It must print what the library returns (tables, or JSON with --json), and fail
with one line on stderr and a documented exit code: 2 bad arguments, 3
integrity problems, 4 not found, 5 conflict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from test_maintenance import EXPECTED_PROBLEM, damage

from statekit import StateManager
from statekit.cli import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_error_line(result: Result, code: int, fragment: str = "") -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("statekit: error: "), result.stderr
    assert fragment in lines[0]
    return lines[0]


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def fill(sm: StateManager) -> StateManager:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "name": ["a", "b", "c"]})
    sm.save("exp", {"df": df, "params": {"lr": 0.1}}, message="first", actor="ana")
    sm.save("exp", {"df": df.assign(x=[1.0, 2.5, 3.0]), "params": {"lr": 0.2}, "arr": np.arange(3)},
            message="second")
    sm.save("notes", {"text": "hello"})
    return sm


@pytest.fixture
def store(sm: StateManager) -> StateManager:
    return fill(sm)


def test_listings_print_what_the_library_returns(store: StateManager) -> None:
    url = store.url
    entities = as_json(run("--url", url, "entities", "--json"))
    assert [(e["entity_id"], e["last_version"], e["snapshots"]) for e in entities] == [("exp", 2, 2), ("notes", 1, 1)]

    log = as_json(run("log", "exp", "--url", url, "--json"))  # options may follow the subcommand
    assert [(r["version"], r["message"], r["actor"]) for r in log] == [(1, "first", "ana"), (2, "second", store.actor)]
    assert [r["checksum"] for r in log] == store.history("exp")["checksum"].tolist()

    shown = as_json(run("--url", url, "--json", "show", "exp", "1"))
    assert shown["snapshot"]["version"] == 1 and shown["snapshot"]["names"] == ["df", "params"]
    assert shown["state"]["params"] == {"lr": 0.1}
    assert shown["state"]["df"]["data"] == [[1.0, "a"], [2.0, "b"], [3.0, "c"]]
    head = as_json(run("--url", url, "--json", "show", "exp"))
    assert head["state"]["arr"] == {"type": "ndarray", "dtype": "int64", "shape": [3], "data": [0, 1, 2]}

    diff = as_json(run("--url", url, "--json", "diff", "exp", "1", "2"))
    expected = store.diff("exp", 1, 2)
    assert [(d["name"], d["change"]) for d in diff] == list(zip(expected["name"], expected["change"], strict=True))
    assert {"name": "params", "item": "params.lr", "change": "changed", "old": 0.1, "new": 0.2} in diff


def test_tables_for_people(store: StateManager) -> None:
    out = run("--url", store.url, "entities").stdout
    assert out.splitlines()[0].split()[:3] == ["entity_id", "state_type", "last_version"]
    assert "exp" in out and "notes" in out
    out = run("--url", store.url, "show", "exp").stdout
    assert "3 rows x 2 columns (x: float64, name:" in out and "second" in out
    assert run("--url", store.url, "verify").stdout.strip() == "OK: no problems found"
    assert "params.lr" in run("--url", store.url, "diff", "exp", "1").stdout


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["log", "nobody"], 4, "No entity 'nobody'"),
    (["show", "exp", "99"], 4, "no version 99"),
    (["show", "exp", "--branch", "nope"], 4, "no branch 'nope'"),
    (["diff", "exp", "1", "7"], 4, "no version 7"),
    (["show", "exp", "abc"], 2, "'abc'"),
    (["log"], 2, "Missing argument 'ENTITY'"),
    (["diff", "exp"], 2, "Missing argument 'A'"),
    (["frobnicate"], 2, "No such command 'frobnicate'"),
    (["log", "exp", "--limit", "0"], 2, "--limit"),
    (["restore", "nothing-here.skb", "--merge"], 2, "No backup file"),
])
def test_failures_are_one_line_and_an_exit_code(store: StateManager, args: list[str], code: int,
                                                fragment: str) -> None:
    result = run("--url", store.url, *args)
    one_error_line(result, code, fragment)
    assert result.stdout == ""


def test_a_missing_store_is_not_created_by_reading(tmp_path: Path) -> None:
    one_error_line(run("entities"), 4, "No store at .statekit/state.db")
    one_error_line(run("--url", str(tmp_path / "nowhere.db"), "verify"), 4, "nowhere.db")
    assert not (tmp_path / ".statekit").exists() and not (tmp_path / "nowhere.db").exists()


def test_the_default_store_is_the_librarys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateManager() as sm:  # .statekit/state.db under the current directory
        sm.save("here", {"n": 1})
    assert [e["entity_id"] for e in as_json(run("entities", "--json"))] == ["here"]
    monkeypatch.setenv("STATEKIT_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with StateManager() as sm:
        sm.save("from-env", {"n": 1})
    assert [e["entity_id"] for e in as_json(run("entities", "--json"))] == ["from-env"]


@pytest.mark.parametrize("how", ["flip", "delete", "checksum"])
def test_verify_exit_code_reports_damage(store: StateManager, how: str) -> None:
    assert run("--url", store.url, "verify").exit_code == 0
    sid = damage(store, "exp", 2, how)
    result = run("--url", store.url, "--json", "verify")
    one_error_line(result, 3, "verify found 1 integrity problems in 1 snapshots")
    problems = json.loads(result.stdout)
    assert {(p["snapshot_id"], p["problem"]) for p in problems} == {(sid, EXPECTED_PROBLEM[how])}
    assert run("--url", store.url, "verify", "notes").exit_code == 0  # another entity is fine
    one_error_line(run("--url", store.url, "show", "exp"), 3, sid)  # reading it: the same code
    recovered = as_json(run("--url", store.url, "--json", "recover", "exp", "--reason", "disk"))
    assert (recovered["version"], recovered["kind"]) == (3, "recover")


def test_purge_backup_and_restore(store: StateManager, tmp_path: Path) -> None:
    url = store.url
    store.save("tmp", {"n": 1}, expires_in=0)
    assert "Would remove 1 snapshots" in run("--url", url, "purge-expired", "--dry-run").stdout
    removed = as_json(run("--url", url, "--json", "purge-expired"))
    assert [(r["kind"], r["entity_id"], r["version"]) for r in removed] == [("snapshot", "tmp", 1)]
    assert "Removed 0 snapshots" in run("--url", url, "purge-expired").stdout

    out = run("--url", url, "backup", str(tmp_path / "b.skb"))
    assert out.exit_code == 0 and "Backed up 3 entities, 3 snapshots" in out.stdout
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    restored = as_json(run("--url", copy, "--json", "restore", str(tmp_path / "b.skb")))
    assert restored["snapshots_added"] == 3
    one_error_line(run("--url", copy, "restore", str(tmp_path / "b.skb")), 5, "--merge")
    again = run("--url", copy, "restore", str(tmp_path / "b.skb"), "--merge")
    assert again.exit_code == 0 and "Restored 0 snapshots (3 already present)" in again.stdout
    one_error_line(run("--url", url, "backup", str(tmp_path / "missing" / "b.skb")), 2, "does not exist")


class Tripwire:
    """Unpickling this writes a file: proof that code from the payload ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __setstate__(self, state: dict[str, str]) -> None:
        Path(state["marker"]).write_text("unpickled")
        self.__dict__.update(state)


def test_show_never_unpickles_someone_elses_pickle(sm: StateManager, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    sm.save("p", {"obj": Tripwire(str(marker)), "n": 1}, allow_pickle=True)
    owner_key = os.environ["STATEKIT_KEY_FILE"]
    monkeypatch.setenv("STATEKIT_KEY_FILE", str(tmp_path / "someone-else" / "key"))
    one_error_line(run("--url", sm.url, "show", "p"), 3, "refusing to unpickle")
    assert not marker.exists()
    monkeypatch.setenv("STATEKIT_KEY_FILE", owner_key)
    assert run("--url", sm.url, "show", "p").exit_code == 0  # the owner's own key: it loads
    assert marker.exists()


def test_as_a_real_subprocess(sqlite_url: str) -> None:
    """Once, on SQLite (the runner tests cover both backends): the module and the console script."""
    store = fill(StateManager(sqlite_url))

    def statekit(*args: str, exe: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*(exe or [sys.executable, "-m", "statekit"]), "--url", store.url, *args],
                              capture_output=True, text=True, timeout=120)

    listed = statekit("entities", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["entity_id"] for e in json.loads(listed.stdout)] == ["exp", "notes"]
    damage(store, "exp", 1, "flip")
    checked = statekit("verify")
    assert checked.returncode == 3
    assert checked.stderr.count("\n") == 1 and checked.stderr.startswith("statekit: error: verify found")
    assert "corrupt_chunk" in checked.stdout
    script = Path(sys.executable).with_name("statekit")  # the console entry point pyproject declares
    assert script.exists(), "the package is installed with its console script in the venv"
    missing = statekit("log", "nobody", exe=[str(script)])
    assert (missing.returncode, missing.stdout, missing.stderr.count("\n")) == (4, "", 1)
    store.close()
