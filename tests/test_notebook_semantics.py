"""What the notebook promises about values: a loaded value is the value saved; a refused value is
never left in a version with an older value; a load never binds a name that would break the kernel;
and a store error (a full disk) is one UsageError line, with the earlier versions intact.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from statekit import StateManager
from statekit.magics import StateMagics
from tests import shells

ENTITY = "nb"


class Param:
    """A value whose deep copy is not faithful (like lmfit's Parameters: an int comes back a float),
    and whose pickle round trip is."""

    def __init__(self, value: Any, flags: dict[str, bool] | None = None):
        self.value = value
        self.flags = flags if flags is not None else {"modified": True}

    def __deepcopy__(self, memo: dict[int, Any]) -> Param:
        return Param(float(self.value), {"modified": False})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Param) and type(other.value) is type(self.value) and other.value == self.value \
            and other.flags == self.flags

    __hash__ = None  # type: ignore[assignment]


def magics(shell: InteractiveShell) -> StateMagics:
    return shell.magics_manager.registry["StateMagics"]


@pytest.fixture
def ip(store_url: str) -> Iterator[InteractiveShell]:
    shell = shells.make_shell(store_url, ENTITY)
    yield shell
    magics(shell).auto = False
    magics(shell).close()
    shell.user_ns.clear()


run, state = shells.run, shells.state


def usage_error(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str) -> str:
    return shells.usage_error(ip, capsys, code, quiet=False)


# ---------------------------------------------------------------- item 7: a loaded value is the value saved


def test_load_returns_the_unpickled_value_not_a_deep_copy(sm: StateManager) -> None:
    assert copy.deepcopy(Param(10)) != Param(10)  # the class really is unfaithful to deepcopy
    sm.save("p", {"p": Param(10), "n": [1, 2]}, allow_pickle=True)
    first = sm.load("p")
    second = sm.load("p")  # a second load, by head and by version: decoded again, never deep-copied
    third = sm.load("p", 1)
    for loaded in (first, second, third):
        assert loaded["p"] == Param(10) and type(loaded["p"].value) is int
    assert first["p"] is not second["p"] is not third["p"]
    first["n"].append(3)  # a caller's edit never reaches a later load
    assert sm.load("p", 1)["n"] == [1, 2]


def test_cached_loads_still_copy_plain_values(sm: StateManager) -> None:
    sm.save("c", {"a": np.arange(3), "t": (1, {2, 3}), "d": {"k": [1]}})
    first = sm.load("c", 1)
    first["a"][0] = 99
    first["d"]["k"].append(2)
    again = sm.load("c", 1)
    assert again["a"].tolist() == [0, 1, 2] and again["d"] == {"k": [1]} and again["t"] == (1, {2, 3})
    assert sm.cache.stats()["hits"] >= 1  # plain values are still served from the cache


def test_state_load_hands_back_the_saved_object(ip: InteractiveShell) -> None:
    ip.user_ns["Param"] = Param
    run(ip, "%config StateMagics.allow_pickle = True")
    run(ip, "p = Param(10)")
    state(ip, "save p")
    for _ in range(2):
        run(ip, "del p")
        state(ip, "load")
        assert ip.user_ns["p"] == Param(10) and type(ip.user_ns["p"].value) is int


# ---------------------------------------------------------------- item 5: refused values are dropped


def test_a_value_that_became_unstorable_is_dropped_and_saved_once_allowed(
        ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    sm = StateManager(magics(ip).url)
    run(ip, "import numpy as np")
    run(ip, "%state auto on")
    run(ip, "results = []\nkeep = 1")
    assert sm.load(ENTITY) == {"results": [], "keep": 1}
    capsys.readouterr()
    run(ip, "results.append(np.zeros(3))")
    out = capsys.readouterr().out
    assert "auto-saved v2 on main: results (dropped: list: needs pickle, which is off)" in out, out
    assert sm.load(ENTITY) == {"keep": 1}  # not the stale []
    state(ip, "status")
    assert "results (not saved: list: needs pickle, which is off)" in capsys.readouterr().out
    run(ip, "%state auto off")
    run(ip, "%config StateMagics.allow_pickle = True")
    capsys.readouterr()
    state(ip, "save")
    out = capsys.readouterr().out
    assert "saved v3" in out and "results (new)" in out and "1 unchanged" in out, out
    saved = StateManager(magics(ip).url).load(ENTITY)["results"]
    assert len(saved) == 1 and saved[0].tolist() == [0.0, 0.0, 0.0]
    state(ip, "status")
    assert "namespace: matches v3" in capsys.readouterr().out


def test_a_variable_rebound_to_a_function_leaves_the_version(ip: InteractiveShell,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "f = 5\ng = 1")
    state(ip, "save")
    run(ip, "def f():\n    return 1")
    capsys.readouterr()
    state(ip, "save")
    assert "f (dropped: now a function)" in capsys.readouterr().out
    assert StateManager(magics(ip).url).load(ENTITY) == {"g": 1}


# ---------------------------------------------------------------- item 11: loading never breaks the kernel


def test_load_never_binds_names_that_saving_refuses(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    sm = StateManager(magics(ip).url)
    bad = {"__builtins__": {}, "get_ipython": 1, "print": 2, "exit": 3, "quit": 4, "_": 5, "__name__": "x",
           "In": 6, "Out": 7, "_ih": 8, "_oh": 9, "_dh": 10, "len": 11, "fine": 12}
    sm.save(ENTITY, bad)
    for command in ("load", "checkout 1", "rollback 1"):
        capsys.readouterr()
        state(ip, command)
        out = capsys.readouterr().out
        assert out.startswith("not loaded: ") and "print" in out and "__builtins__" in out, out
        assert ip.user_ns["fine"] == 12
        run(ip, "print('the kernel still works', len([1]))")
        assert "the kernel still works 1" in capsys.readouterr().out
        assert ip.user_ns["get_ipython"] is not None and callable(ip.user_ns["exit"])
    # and saving refuses the same names: skipped with a word, or a UsageError when named
    run(ip, "sum = 3")
    assert "sum is shadows the builtin sum" in usage_error(ip, capsys, "%state save sum")
    capsys.readouterr()
    state(ip, "save")
    assert "skipped sum (shadows the builtin sum)" in capsys.readouterr().out
    assert "sum" not in sm.load(ENTITY)


# ---------------------------------------------------------------- labels after loading an older version


def test_labels_after_loading_an_older_version(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1\nb = 'other'")
    state(ip, "save")
    run(ip, "a = 2")
    state(ip, "save")
    state(ip, "load 1")
    capsys.readouterr()
    state(ip, "save")
    out = capsys.readouterr().out
    assert "a (changed), 1 unchanged" in out and "(saved)" not in out, out
    assert StateManager(magics(ip).url).load(ENTITY) == {"a": 1, "b": "other"}


# ---------------------------------------------------------------- item 15: a full disk


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root only): a real 'database or disk is full'."""
    where = tmp_path / "tiny"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_one_usage_error_line(tiny_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tiny_disk / 'state.db'}"
    ip = shells.make_shell(url, ENTITY)
    try:
        run(ip, "small = {'a': 1}")
        state(ip, "save")
        run(ip, "import numpy as np\nbig = np.random.default_rng(0).random(600_000)")  # 4.8 MB, incompressible
        message = usage_error(ip, capsys, "%state save")
        assert "full" in message, message
        run(ip, "%state auto on")
        capsys.readouterr()
        run(ip, "big2 = big + 1")  # an auto-checkpoint: one line, and the cell still succeeds
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and "not saved" in err and "full" in err, (out, err)
        run(ip, "%state auto off")
        assert StateManager(url).load(ENTITY) == {"small": {"a": 1}}
    finally:
        magics(ip).auto = False
        magics(ip).close()


# ---------------------------------------------------------------- two shells on one entity (fast; real kernels:
# test_notebook_two_kernels.py)


@pytest.fixture
def pair(store_url: str) -> Iterator[tuple[InteractiveShell, InteractiveShell]]:
    shells_ = (shells.make_shell(store_url, ENTITY), shells.make_shell(store_url, ENTITY))
    yield shells_
    for s in shells_:
        magics(s).auto = False
        magics(s).close()
        s.user_ns.clear()


def test_another_writers_frame_change_and_replacement_are_kept(pair: Any, store_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    sm = StateManager(store_url)
    run(a, "import pandas as pd\ndf = pd.DataFrame({'v': range(1000)})\nn = 1\nold = 'x'")
    state(a, "save")
    state(b, "load")
    run(a, "df.loc[3, 'v'] = -1")
    state(a, "save")
    run(b, "n = 2")
    state(b, "save n")  # a named save writes n only, on top of A's frame
    assert sm.load(ENTITY)["df"].loc[3, "v"] == -1 and sm.load(ENTITY)["n"] == 2
    sm.save(ENTITY, {"df": sm.load(ENTITY)["df"], "n": 2})  # a script replaces the state: 'old' is gone
    run(b, "m = 3")
    state(b, "save")
    assert set(sm.load(ENTITY)) == {"df", "n", "m"}
    # B changes the frame A changed since B loaded: a %%state save cell is refused, nothing written
    head = sm.head_version(ENTITY)
    capsys.readouterr()
    result = b.run_cell("%%state save\ndf.loc[0, 'v'] = 7")
    assert isinstance(result.error_in_exec, UsageError) and "df also changed by another writer" in str(
        result.error_in_exec)
    assert sm.head_version(ENTITY) == head and sm.load(ENTITY)["df"].loc[3, "v"] == -1


def test_branching_from_an_older_version_saves_the_namespace_there(pair: Any, store_url: str) -> None:
    a, _ = pair
    sm = StateManager(store_url)
    run(a, "x = 1\ny = 'same'")
    state(a, "save")
    run(a, "x = 2")
    state(a, "save")
    state(a, "branch exp -f 1")  # the namespace holds x = 2: that is this kernel's change on exp
    run(a, "z = 0")
    state(a, "save")
    assert sm.load(ENTITY, branch="exp") == {"x": 2, "y": "same", "z": 0}
