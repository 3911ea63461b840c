"""``%state`` / ``%%state`` in-process, in a real IPython shell (history off) on a real store.

Each test gets a fresh shell with ``%load_ext statekit`` and ``StateMagics.url``
pointing at its own SQLite file (the core flows also run on PostgreSQL). User
errors must print one ``UsageError:`` line and no traceback, and leave the
head where it was.
"""

from __future__ import annotations

import gc
import re
import sqlite3
import sys
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

import ipywidgets
import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from statekit import StateManager
from statekit.magics import StateMagics
from statekit.notebook.args import COMMANDS
from tests import shells
from tests.shells import run, state, usage_error

ENTITY = "nb"


def make_shell(url: str | None, entity: str | None = ENTITY) -> InteractiveShell:
    """A fresh shell with statekit loaded, as a kernel would have it (minus the kernel)."""
    return shells.make_shell(url, entity)


def magics(shell: InteractiveShell) -> StateMagics:
    return shell.magics_manager.registry["StateMagics"]


@pytest.fixture
def url(store_url: str) -> str:
    return store_url


@pytest.fixture
def ip(sqlite_url: str) -> Iterator[InteractiveShell]:
    shell = make_shell(sqlite_url)
    yield shell
    magics(shell).auto = False
    magics(shell).close()
    shell.user_ns.clear()


@pytest.fixture
def sm(ip: InteractiveShell) -> StateManager:
    """The test's own view of the store the shell writes to."""
    return StateManager(magics(ip).url)




def head(sm: StateManager, entity: str = ENTITY, branch: str = "main") -> int | None:
    return sm.head_version(entity, branch)


# ---------------------------------------------------------------- registration and help


def test_load_ext_registers_line_and_cell_magic(ip: InteractiveShell) -> None:
    assert ip.find_line_magic("state") is not None
    assert ip.find_cell_magic("state") is not None
    assert magics(ip) in ip.configurables
    # loading again (e.g. %reload_ext) replaces the instance instead of stacking hooks
    magics(ip).auto = True
    old = magics(ip)
    ip.run_line_magic("reload_ext", "statekit")
    assert magics(ip) is not old and magics(ip).url == old.url  # %config values carry over
    assert ip.events.callbacks["post_run_cell"].count(old._after_cell) == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert state(ip, f"{command} -h") is None
    out = capsys.readouterr().out
    assert out.startswith(f"usage: %state {command}")


def test_top_level_help_lists_commands(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    state(ip, "-h")
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS)


# ---------------------------------------------------------------- save


def test_save_everything_skips_code_and_reports_it(ip: InteractiveShell, sm: StateManager,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "import math\nimport pandas as pd\n"
            "df = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\nparams = {'lr': 0.1}\n"
            "def f(): return 1\nclass K: pass\ngen = (i for i in range(3))\n_hidden = 5\nn = 7")
    capsys.readouterr()
    state(ip, "save -m 'first cut'")
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"saved v1 on main: (df|params|n) \(new\), .*; [\d.]+ (B|kB|MB) new; [\d.]+ s", out[0]), out
    assert "skipped" in out[1] and "math (module)" in out[1] and "f (function)" in out[1]
    assert "K (class)" in out[1] and "gen (generator: needs pickle, which is off)" in out[1]
    loaded = sm.load(ENTITY)
    assert set(loaded) == {"df", "params", "n"}  # no _-names, In/Out, modules, functions, classes
    pd.testing.assert_frame_equal(loaded["df"], ip.user_ns["df"])
    assert sm.history(ENTITY)["message"].tolist() == ["first cut"]


def test_save_named_carries_the_rest_over(ip: InteractiveShell, sm: StateManager,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1\nb = [1, 2]")
    state(ip, "save")
    run(ip, "a = 2\nb.append(3)")
    capsys.readouterr()
    state(ip, "save a")
    assert capsys.readouterr().out.startswith("saved v2 on main: a (changed);")
    assert sm.load(ENTITY) == {"a": 2, "b": [1, 2]}  # b not named: carried over from v1


def test_save_labels_and_does_not_reencode_unchanged(ip: InteractiveShell, sm: StateManager,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "import numpy as np, pandas as pd\n"
            "big = pd.DataFrame(np.arange(400_000, dtype='float64').reshape(-1, 4), columns=list('abcd'))\n"
            "arr = np.arange(100_000)\nsmall = {'k': 1}")
    state(ip, "save")
    m = magics(ip).store()
    before = m.metrics()["bytes_deduplicated"]
    run(ip, "small['k'] = 2\nnew_one = 'hello'")
    capsys.readouterr()
    state(ip, "save")
    line = capsys.readouterr().out.splitlines()[0]
    assert "small (changed)" in line and "new_one (new)" in line and "2 unchanged" in line, line
    # the unchanged DataFrame and array were carried over by reference, not encoded again:
    # encoding them would have counted their bytes as deduplicated
    assert m.metrics()["bytes_deduplicated"] == before
    assert sm.history(ENTITY)["new_bytes"].iloc[-1] < 1000
    run(ip, "big.loc[3, 'a'] = -1.0")  # an in-place write is seen (copy-on-write) and saved
    capsys.readouterr()
    state(ip, "save")
    assert "big (changed)" in capsys.readouterr().out
    assert sm.load(ENTITY)["big"].loc[3, "a"] == -1.0


def test_save_drops_deleted_variables(ip: InteractiveShell, sm: StateManager,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1\ntmp = 2")
    state(ip, "save")
    run(ip, "del tmp")
    capsys.readouterr()
    state(ip, "save")
    assert "tmp (deleted)" in capsys.readouterr().out
    assert sm.load(ENTITY) == {"a": 1}


def test_deleting_a_variable_frees_it(ip: InteractiveShell, sm: StateManager,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The magics must not keep a deleted frame (or its data) alive until the next save."""
    run(ip, "import numpy as np, pandas as pd\ndf = pd.DataFrame({'a': np.arange(100_000)})\nother = [1]")
    state(ip, "save")
    data = weakref.ref(ip.user_ns["df"]._mgr.blocks[0].values)
    frame = weakref.ref(ip.user_ns["df"])
    run(ip, "del df\nother = [2]")
    gc.collect()
    assert frame() is None and data() is None
    capsys.readouterr()
    state(ip, "save")  # still known as deleted, and other as rebound
    assert "df (deleted)" in capsys.readouterr().out and sm.load(ENTITY) == {"other": [2]}


def test_explicit_save_always_makes_a_version(ip: InteractiveShell, sm: StateManager,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1")
    state(ip, "save")
    capsys.readouterr()
    state(ip, "save -m checkpoint")
    assert capsys.readouterr().out.startswith("saved v2 on main: 1 unchanged;")
    state(ip, "save a")
    assert "a (unchanged)" in capsys.readouterr().out
    assert head(sm) == 3 and sm.load(ENTITY) == {"a": 1}


def test_allow_pickle_trait(ip: InteractiveShell, sm: StateManager, capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["counts"] = Counter("hello")  # a dict subclass: only pickle keeps its type
    msg = usage_error(ip, capsys, "%state save counts")
    assert "without pickle" in msg and "%config StateMagics.allow_pickle = True" in msg
    assert head(sm) is None
    run(ip, "%config StateMagics.allow_pickle = True")
    state(ip, "save counts")
    assert sm.load(ENTITY) == {"counts": Counter("hello")}
    assert type(StateManager(magics(ip).url).load(ENTITY)["counts"]) is Counter


UNPICKLABLE = {
    "generator": "obj = (i for i in range(3))",
    "lock": "import threading\nobj = threading.Lock()",
    "connection": "import sqlite3\nobj = sqlite3.connect(':memory:')",
}


@pytest.mark.parametrize("pickle", [False, True], ids=["pickle-off", "pickle-on"])
@pytest.mark.parametrize("kind", list(UNPICKLABLE))
def test_unpicklable_objects(ip: InteractiveShell, sm: StateManager, capsys: pytest.CaptureFixture[str],
                             kind: str, pickle: bool) -> None:
    run(ip, f"%config StateMagics.allow_pickle = {pickle}\nkeep = 1")
    state(ip, "save")
    run(ip, UNPICKLABLE[kind] + "\nkeep = 2")
    msg = usage_error(ip, capsys, "%state save obj keep")
    assert "'obj'" in msg and ("cannot be pickled" in msg if pickle else "without pickle" in msg), msg
    assert head(sm) == 1 and sm.load(ENTITY) == {"keep": 1}  # nothing written, not even keep
    capsys.readouterr()
    state(ip, "save")  # saving everything skips it, with the reason
    out = capsys.readouterr().out
    assert "keep (changed)" in out and re.search(r"skipped .*\bobj \([^)]*(cannot be pickled|needs pickle)", out), out
    assert sm.load(ENTITY) == {"keep": 2}
    if kind == "connection":
        ip.user_ns["obj"].close()


# ---------------------------------------------------------------- load, rollback


def test_load_into_a_fresh_shell(url: str) -> None:
    """What a kernel restart does: a new shell, %load_ext statekit, %state load."""
    first = make_shell(url)
    run(first, "import pandas as pd\ndf = pd.DataFrame({'a': [1.5, 2.5]}, index=['r1', 'r2'])\n"
               "cfg = {'depth': 3, 'tags': ['x']}")
    state(first, "save")
    magics(first).close()
    second = make_shell(url)
    assert "df" not in second.user_ns
    state(second, "load")
    pd.testing.assert_frame_equal(second.user_ns["df"], first.user_ns["df"])
    assert second.user_ns["cfg"] == {"depth": 3, "tags": ["x"]}
    assert run(second, "%state status") is None
    magics(second).close()


def test_load_version_and_names(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1\nb = 2")
    state(ip, "save")
    run(ip, "a = 10\nb = 20")
    state(ip, "save")
    capsys.readouterr()
    state(ip, "load 1 a")
    assert capsys.readouterr().out.startswith("loaded v1: a;")
    assert ip.user_ns["a"] == 1 and ip.user_ns["b"] == 20
    state(ip, "load")
    assert ip.user_ns["a"] == 10
    msg = usage_error(ip, capsys, "%state load v1")
    assert "holds no 'v1'" in msg and "%state load 1" in msg
    msg = usage_error(ip, capsys, "%state load 1 nope")
    assert "holds no 'nope'" in msg and "a, b" in msg


def test_rollback_restores_and_leaves_other_variables_alone(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ip = make_shell(url)
    sm = StateManager(url)
    run(ip, "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nparams = {'lr': 0.1}")
    state(ip, "save")
    run(ip, "df.loc[0, 'a'] = 100\nparams['lr'] = 0.5\nextra = 'made later'")
    state(ip, "save")
    run(ip, "scratch = 42")
    capsys.readouterr()
    state(ip, "rollback -r 'bad join'")
    out = capsys.readouterr().out
    m = re.match(r"rolled back main to v1 as v3: restored (.*); left alone: extra, scratch; [\d.]+ s", out)
    assert m and set(m.group(1).split(", ")) == {"df", "params"}, out
    assert ip.user_ns["df"]["a"].tolist() == [1, 2] and ip.user_ns["params"] == {"lr": 0.1}
    assert ip.user_ns["extra"] == "made later" and ip.user_ns["scratch"] == 42
    hist = sm.history(ENTITY)
    assert hist["kind"].tolist() == ["create", "update", "rollback"]
    t = sm.transitions(ENTITY)
    assert t["transition_type"].iloc[-1] == "rollback" and t["reason"].iloc[-1] == "bad join"
    state(ip, "rollback 2")
    assert ip.user_ns["params"] == {"lr": 0.5} and head(sm) == 4
    magics(ip).close()


def test_rollback_needs_an_earlier_version(ip: InteractiveShell, sm: StateManager,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert "nothing saved yet" in usage_error(ip, capsys, "%state rollback")
    run(ip, "a = 1")
    state(ip, "save")
    assert "nothing earlier" in usage_error(ip, capsys, "%state rollback")
    assert head(sm) == 1


# ---------------------------------------------------------------- log, diff, branches


def test_log(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert state(ip, "log") is None and "no versions" in capsys.readouterr().out
    for i in range(3):
        run(ip, f"a = {i}")
        state(ip, f"save -m step{i}")
    log = state(ip, "log")
    assert isinstance(log, pd.DataFrame) and log["version"].tolist() == [1, 2, 3]
    assert log["message"].tolist() == ["step0", "step1", "step2"] and "checksum" not in log
    assert state(ip, "log -n 2")["version"].tolist() == [2, 3]
    assert "checksum" in state(ip, "log --all-columns")
    state(ip, "branch exp")
    run(ip, "a = 99")
    state(ip, "save")
    assert state(ip, "log -b exp")["version"].tolist() == [4]


def test_diff(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "import pandas as pd\ndf = pd.DataFrame({'p': [1.0, 2.0]})\ncfg = {'lr': 0.1, 'opt': 'sgd'}")
    state(ip, "save")
    run(ip, "cfg['lr'] = 0.2\ndf.loc[1, 'p'] = 5.0\nnew_var = 3")
    d = state(ip, "diff")  # the namespace against the head
    assert set(zip(d["item"], d["change"], strict=True)) == {
        ("cfg.lr", "changed"), ("df.loc[1, 'p']", "changed"), ("new_var", "added")}
    state(ip, "save")
    assert set(state(ip, "diff 1 2")["item"]) == {"cfg.lr", "df.loc[1, 'p']", "new_var"}
    assert set(state(ip, "diff 1")["item"]) == {"cfg.lr", "df.loc[1, 'p']", "new_var"}  # v1 against the head
    assert state(ip, "diff").empty
    assert "no version 9" in usage_error(ip, capsys, "%state diff 1 9")


def test_branch_and_checkout(ip: InteractiveShell, sm: StateManager, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1")
    state(ip, "save")
    run(ip, "a = 2")
    state(ip, "save")
    state(ip, "branch exp -f 1")  # a branch from v1, and switch to it
    assert magics(ip).branch == "exp"
    run(ip, "a = 'exp'")
    state(ip, "save")
    assert sm.load(ENTITY, branch="exp") == {"a": "exp"} and sm.load(ENTITY) == {"a": 2}
    branches = state(ip, "branch")
    assert dict(zip(branches["branch"], branches["current"], strict=True)) == {"main": False, "exp": True}
    state(ip, "checkout main")
    assert magics(ip).branch == "main" and ip.user_ns["a"] == 2
    state(ip, "checkout 3")  # a version: its values, and its branch
    assert magics(ip).branch == "exp" and ip.user_ns["a"] == "exp"
    capsys.readouterr()
    state(ip, "checkout v1")
    assert "not the head" in capsys.readouterr().out and ip.user_ns["a"] == 1
    assert "no branch or version 'nope'" in usage_error(ip, capsys, "%state checkout nope")
    assert "already has a branch" in usage_error(ip, capsys, "%state branch exp")


def test_status(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    state(ip, "status")
    out = capsys.readouterr().out
    assert "entity 'nb' · branch main · nothing saved yet" in out and "auto-checkpoint off · pickle off" in out
    run(ip, "a = 1\nb = 2")
    state(ip, "save")
    state(ip, "status")
    assert "namespace: matches v1" in capsys.readouterr().out
    run(ip, "a = 5\nc = 3\ndel b")
    state(ip, "status")
    assert "namespace since v1: a (changed), c (new), b (deleted)" in capsys.readouterr().out


def test_verify_and_damaged_store(ip: InteractiveShell, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "import numpy as np\narr = np.arange(50_000)")
    state(ip, "save")
    assert state(ip, "verify") is None and "no problems" in capsys.readouterr().out
    state(ip, "verify --all")
    assert "the whole store" in capsys.readouterr().out
    magics(ip).close()
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE state_payloads SET data = zeroblob(length(data))")
    problems = state(ip, "verify")
    assert isinstance(problems, pd.DataFrame) and len(problems) > 0
    magics(ip).store().cache.clear()
    msg = usage_error(ip, capsys, "%state load")
    assert "damaged" in msg or "checksum" in msg


# ---------------------------------------------------------------- entity, url and traits


def test_entity_default_and_use(sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    ip = make_shell(sqlite_url, entity=None)
    assert magics(ip).entity_id == "notebook"  # the documented fallback
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/ana/projects/churn model.ipynb")
    assert magics(ip).entity_id == "churn model"
    ip.user_ns["__session__"] = "/home/ana/other/analysis.ipynb"  # what ipykernel sets
    assert magics(ip).entity_id == "analysis"
    run(ip, "x = 1")
    state(ip, "save")
    state(ip, "use exp_42")
    assert "using entity 'exp_42': nothing saved yet" in capsys.readouterr().out
    assert magics(ip).entity == "exp_42"
    run(ip, "x = 2")
    state(ip, "save")
    sm = StateManager(sqlite_url)
    assert sm.load("analysis") == {"x": 1} and sm.load("exp_42") == {"x": 2}
    run(ip, "%config StateMagics.entity = 'analysis'")
    state(ip, "load")
    assert ip.user_ns["x"] == 1
    assert "entity" in usage_error(ip, capsys, "%state use ''")
    magics(ip).close()


def test_config_url_change_takes_effect(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    ip = make_shell(first)
    run(ip, "a = 1")
    state(ip, "save")
    run(ip, f"%config StateMagics.url = {second!r}")
    run(ip, "a = 2")
    state(ip, "save")
    assert StateManager(first).load(ENTITY) == {"a": 1} and StateManager(second).load(ENTITY) == {"a": 2}
    assert StateManager(second).head_version(ENTITY) == 1  # a fresh start, nothing carried from the old store
    run(ip, "%config StateMagics.url = 'nosuchdriver://nowhere'")
    msg = usage_error(ip, capsys, "%state log")
    assert msg.startswith("cannot open nosuchdriver://nowhere")
    magics(ip).close()


def test_default_url_is_statemanagers(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ip = make_shell(None)
    assert magics(ip).url is None
    run(ip, "a = 1")
    state(ip, "save")
    assert (tmp_path / ".statekit" / "state.db").exists()  # cwd is tmp_path: StateManager()'s default
    assert StateManager().load(ENTITY) == {"a": 1}
    magics(ip).close()
    monkeypatch.setenv("STATEKIT_URL", f"sqlite:///{tmp_path / 'env.db'}")
    ip2 = make_shell(None)
    run(ip2, "a = 2")
    state(ip2, "save")
    assert StateManager(f"sqlite:///{tmp_path / 'env.db'}").load(ENTITY) == {"a": 2}
    magics(ip2).close()


def test_progress_bar(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "%config StateMagics.progress_delay = 0\nimport numpy as np\narr = np.zeros(200_000)")
    capsys.readouterr()
    state(ip, "save")
    err = capsys.readouterr().err
    assert "saving nb" in err and "1.60M" in err  # tqdm's text bar: the estimated bytes
    state(ip, "load")
    assert "loading v1" in capsys.readouterr().err
    run(ip, "%config StateMagics.progress_delay = 60")
    capsys.readouterr()
    state(ip, "load")
    assert capsys.readouterr().err == ""  # quick work shows no bar


def test_panel(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1")
    state(ip, "save")
    widget = state(ip, "panel")
    assert isinstance(widget, ipywidgets.Widget)
    widget.close()
    monkeypatch.setitem(sys.modules, "statekit.panels", None)  # as if the panel were not installed
    assert "panel is not available" in usage_error(ip, capsys, "%state panel")


# ---------------------------------------------------------------- %%state save


def test_cell_magic_saves_what_the_cell_assigned(ip: InteractiveShell, sm: StateManager,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "items = [1]\nold = 'x'\nuntouched = {'k': 1}")
    state(ip, "save")
    run(ip, "untouched['k'] = 2")  # changed before, but not by the cell: not saved by %%state save
    capsys.readouterr()
    run(ip, "%%state save -m 'cell'\nresult = sum(items)\nitems.append(2)\ndel old\nfor i in range(2): pass")
    out = capsys.readouterr().out
    assert re.search(r"saved v2 on main: .*result \(new\)", out) and "old (deleted)" in out, out
    loaded = sm.load(ENTITY)
    assert loaded == {"items": [1, 2], "untouched": {"k": 1}, "result": 1, "i": 1}
    assert sm.history(ENTITY)["message"].iloc[-1] == "cell"


def test_cell_magic_failure_saves_nothing(ip: InteractiveShell, sm: StateManager,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "a = 1")
    state(ip, "save")
    result = ip.run_cell("%%state save\na = 2\nraise ValueError('boom')")
    assert not result.success
    assert "nothing saved: the cell failed (ValueError)" in capsys.readouterr().err
    assert head(sm) == 1
    assert "only 'save'" in usage_error(ip, capsys, "%%state load\nx = 1")
    assert "takes no names" in usage_error(ip, capsys, "%%state save a\nx = 1")
    assert head(sm) == 1


# ---------------------------------------------------------------- auto-checkpoint


def versions(sm: StateManager) -> list[int]:
    return sm.history(ENTITY)["version"].tolist()


def test_auto_checkpoint(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ip = make_shell(url)
    sm = StateManager(url)
    run(ip, "import pandas as pd\ndf = pd.DataFrame({'a': range(1000)})")
    run(ip, "%state auto on")  # saves what is not saved yet
    assert versions(sm) == [1] and ip.events.callbacks["post_run_cell"].count(magics(ip)._after_cell) == 1
    expectations = [
        ("x = 1", 2),
        ("x", 2),                          # an expression: nothing changed
        ("print(x, df['a'].sum())", 2),    # reading is not changing
        ("total = df['a'].mean()", 3),
        ("df.loc[0, 'a'] = -5", 4),        # an in-place write
        ("df = df.copy()", 4),             # a new object, equal contents
        ("def helper(): return 1", 4),     # code is not state
        ("import json", 4),
        ("del x", 5),
        ("x = 1 / 0", 5),                  # a failed cell saves nothing
        ("y = [1, 2]", 6),
        ("y.append(3)", 7),
        ("gen = (i for i in y)", 7),       # cannot be stored: skipped, no version
        ("gen2 = 5", 8),
    ]
    for code, expected_head in expectations:
        ip.run_cell(code)
        assert head(sm) == expected_head, code
    assert "x" not in sm.load(ENTITY) and sm.load(ENTITY)["y"] == [1, 2, 3]
    assert sm.load(ENTITY)["df"]["a"].iloc[0] == -5
    out = capsys.readouterr().out
    assert "auto-saved v7 on main: y (changed)" in out and out.count("skipped gen") == 1
    run(ip, "%state auto off")
    run(ip, "z = 1")
    assert head(sm) == 8 and ip.events.callbacks["post_run_cell"].count(magics(ip)._after_cell) == 1
    magics(ip).close()


def test_auto_sees_changes_made_by_functions_and_failed_cells(ip: InteractiveShell, sm: StateManager) -> None:
    run(ip, "big = list(range(100_000))\ndef grow():\n    big.append(-1)\ndef outer():\n    grow()")
    run(ip, "%config StateMagics.auto = True")  # the trait turns the hook on too
    assert head(sm) == 1
    ip.run_cell("outer()")  # the cell's text never names big: found through outer -> grow -> big
    assert head(sm) == 2 and sm.load(ENTITY)["big"][-1] == -1
    ip.run_cell("big.append(-2)\n1 / 0")  # fails after changing big: checked after the next cell
    assert head(sm) == 2
    ip.run_cell("n = 1")
    assert head(sm) == 3 and sm.load(ENTITY)["big"][-2:] == [-1, -2]
    ip.run_cell("alias = big")  # a new name: v4
    ip.run_cell("alias.append(-3)")  # big is the same object: saved too
    assert head(sm) == 5 and sm.load(ENTITY)["big"][-1] == -3 and sm.load(ENTITY)["alias"][-1] == -3


def test_auto_with_load_and_rollback(ip: InteractiveShell, sm: StateManager) -> None:
    run(ip, "%state auto on")
    for code in ("x = 1", "x = 2", "x = 3"):
        ip.run_cell(code)
    assert head(sm) == 3
    ip.run_cell("%state rollback")  # makes v4 (= v2); the hook finds the namespace equal to it
    assert head(sm) == 4 and ip.user_ns["x"] == 2
    ip.run_cell("%state load 1")  # loading saves nothing...
    assert head(sm) == 4 and ip.user_ns["x"] == 1
    ip.run_cell("y = 'new'")  # ...but the next change saves the namespace as it is: x from v1, and y
    assert head(sm) == 5 and sm.load(ENTITY) == {"x": 1, "y": "new"}


def test_auto_follows_another_writer(ip: InteractiveShell, sm: StateManager) -> None:
    run(ip, "a = 1")
    run(ip, "%state auto on")
    sm.save(ENTITY, {"theirs": "x"}, merge=True)  # someone else moves the head
    ip.run_cell("a = 2")
    assert sm.load(ENTITY) == {"a": 2, "theirs": "x"} and head(sm) == 3


def test_auto_does_not_feel_a_large_frame(ip: InteractiveShell, sm: StateManager) -> None:
    """The hook must not encode a frame the cell did not change (the store's metrics would count it)."""
    run(ip, "import numpy as np, pandas as pd\nbig = pd.DataFrame(np.random.rand(200_000, 5))")
    run(ip, "%state auto on")
    store = magics(ip).store()
    saved = store.metrics()["bytes_written"] + store.metrics()["bytes_deduplicated"]
    for code in ("k = 1", "m = big[0].mean()", "big.describe()", "k = 2"):
        ip.run_cell(code)
    assert store.metrics()["bytes_written"] + store.metrics()["bytes_deduplicated"] - saved < 1000
    assert head(sm) == 4


# ---------------------------------------------------------------- bad input


BAD_INPUT = [
    ("%state", "needs a command"),
    ("%state bogus", "invalid choice: 'bogus'"),
    ("%state checkout", "required"),
    ("%state use", "required"),
    ("%state auto", "required"),
    ("%state auto maybe", "invalid choice"),
    ("%state status extra", "unrecognized arguments"),
    ("%state rollback 1 2", "unrecognized arguments"),
    ("%state rollback abc", "not a version number"),
    ("%state rollback 0", "not a version number"),
    ("%state rollback 99", "no version 99"),
    ("%state load 99", "no version 99"),
    ("%state load 99999999999999999999999", "not a version number"),
    ("%state checkout 99", "no version 99"),
    ("%state diff 1 99", "no version 99"),
    ("%state save nope", "not defined: nope"),
    ("%state save a -m two words", "not defined: words"),
    ("%state save -m 'unclosed", "check the quotes"),
    ("%state save math", "math is a module"),
    ("%state log -n 0", "must be 1 or more"),
    ("%state save -m 'a\x00b'", "NUL"),
    ("%state branch 'bad\x01name'", "control characters"),
]


@pytest.mark.parametrize(("code", "expected"), BAD_INPUT, ids=[c for c, _ in BAD_INPUT])
def test_bad_input_is_one_usage_error_line(ip: InteractiveShell, sm: StateManager,
                                           capsys: pytest.CaptureFixture[str], code: str, expected: str) -> None:
    run(ip, "import math\na = 1")
    state(ip, "save")
    msg = usage_error(ip, capsys, code)
    assert expected in msg, msg
    assert head(sm) == 1 and versions(sm) == [1]


def test_store_errors_on_postgres_are_usage_errors(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ip = make_shell(pg_url)
    run(ip, "a = np = 1")
    state(ip, "save")
    msg = usage_error(ip, capsys, "%state checkout 7")
    assert "no version 7" in msg
    assert StateManager(pg_url).head_version(ENTITY) == 1
    magics(ip).close()


def test_store_values_round_trip_through_magics(url: str) -> None:
    ip = make_shell(url)
    values = {"arr": np.arange(12).reshape(3, 4), "s": pd.Series([1.5, None], name="s"), "t": (1, "a"),
              "when": pd.Timestamp("2024-05-01", tz="UTC")}
    ip.push(values)
    state(ip, "save arr s t when")
    other = make_shell(url)
    state(other, "load")
    np.testing.assert_array_equal(other.user_ns["arr"], values["arr"])
    pd.testing.assert_series_equal(other.user_ns["s"], values["s"])
    assert other.user_ns["t"] == (1, "a") and other.user_ns["when"] == values["when"]
    magics(ip).close()
    magics(other).close()
