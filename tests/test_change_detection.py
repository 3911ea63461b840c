"""The mutation suite: every way a frame or Series can change, re-saved, must store the change.

Each mutation runs twice: through ``StateManager.save`` (the frame memo path; large
frames so the memo is active, small ones too) and through ``%state auto on`` in the
in-process shell. A write pandas' copy-on-write does not see (through the array a
frame was built on, through ``Series.array``, through a view made writeable again)
is either stored or refused with numpy's read-only error while statekit tracks the
frame: never silently lost. Then the negative: an untouched frame is not re-encoded
nor re-saved, and a new name bound to an unchanged object does not re-save the old one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from statekit import StateManager
from statekit.magics import StateMagics
from tests import shells

ENTITY = "nb"
LARGE, SMALL = 80_000, 300  # LARGE x 2 random floats (1.3 MB) and 3 x LARGE for ser: above the memo's 1 MiB

SETUP = """\
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
arr = rng.random(({n}, 2))
df = pd.DataFrame(arr, columns=["a", "b"], copy={copy})
df["n"] = np.arange({n})
df.loc[::97, "b"] = np.nan
sarr = rng.random(3 * {n})
ser = pd.Series(sarr, copy={copy}, name="s")
ser.iloc[::89] = np.nan
"""

CAT = 'df["cat"] = pd.Categorical(np.where(np.arange(len(df)) % 2, "x", "y"))'

# (id, variable, preparation saved first, the mutation)
MUTATIONS: list[tuple[str, str, str, str]] = [
    ("original-array", "df", "", "arr[:, 0] = 42.0"),
    ("original-array-series", "ser", "", "sarr[1] = 42.0"),
    ("series-array-write", "df", "", 'df["a"].array[0] = 42.0'),
    ("view-made-writeable", "df", "", 'v = df["a"].to_numpy()\nv.flags.writeable = True\nv[0] = 42.0'),
    ("asarray-made-writeable", "ser", "", "v = np.asarray(ser)\nv.flags.writeable = True\nv[2] = -1.0"),
    ("owner-via-base", "df", "",
     'v = df["a"].to_numpy()\nwhile v.base is not None:\n    v = v.base\nv.flags.writeable = True\nv.flat[0] = 7.0'),
    ("attrs-set", "df", "", 'df.attrs["unit"] = "m"'),
    ("attrs-nested", "df", 'df.attrs["tags"] = ["x"]', 'df.attrs["tags"].append("y")'),
    ("series-attrs", "ser", "", 'ser.attrs["unit"] = "s"'),
    ("flags", "df", "", "df.flags.allows_duplicate_labels = False"),
    ("index-name", "df", "", 'df.index.name = "row"'),
    ("columns-name", "df", "", 'df.columns.name = "col"'),
    ("series-name", "ser", "", 'ser.name = "renamed"'),
    ("series-index-name", "ser", "", 'ser.index.name = "k"'),
    ("add-categories", "df", CAT, 'df["cat"] = df["cat"].cat.add_categories(["z"])'),
    ("rename-categories", "df", CAT, 'df["cat"] = df["cat"].cat.rename_categories({"x": "X"})'),
    ("reorder-categories", "df", CAT, 'df["cat"] = df["cat"].cat.reorder_categories(["y", "x"])'),
    ("set-categories", "df", CAT, 'df["cat"] = df["cat"].cat.set_categories(["x", "y", "w"])'),
    ("as-ordered", "df", CAT, 'df["cat"] = df["cat"].cat.as_ordered()'),
    ("categorical-array-write", "df", CAT, 'df["cat"].array[0] = "x"'),
    ("fillna-inplace", "df", "", "df.fillna(0.0, inplace=True)"),
    ("replace-inplace", "df", "", 'df.replace({"n": {0: -1}}, inplace=True)'),
    ("update", "df", "", 'df.update(pd.DataFrame({"a": [5.0]}, index=[3]))'),
    ("clip-inplace", "df", "", "df.clip(lower=1, inplace=True)"),
    ("where-inplace", "df", "", "df.where(df > 0.1, 0.0, inplace=True)"),
    ("sort-values-inplace", "df", "", 'df.sort_values("a", inplace=True)'),
    ("drop-rows-inplace", "df", "", "df.drop(index=[0, 1], inplace=True)"),
    ("drop-column-inplace", "df", "", 'df.drop(columns=["n"], inplace=True)'),
    ("dropna-inplace", "df", "", "df.dropna(inplace=True)"),
    ("rename-columns-inplace", "df", "", 'df.rename(columns={"a": "A"}, inplace=True)'),
    ("rename-index-inplace", "df", "", "df.rename(index={0: -1}, inplace=True)"),
    ("set-index-inplace", "df", "", 'df.set_index("n", inplace=True)'),
    ("reset-index-inplace", "df", "", "df.reset_index(inplace=True)"),
    ("eval-inplace", "df", "", 'df.eval("a = a * 2", inplace=True)'),
    ("query-inplace", "df", "", 'df.query("a > 0.5", inplace=True)'),
    ("interpolate-inplace", "df", "", 'df.interpolate(inplace=True)'),
    ("loc", "df", "", 'df.loc[5, "a"] = -1.0'),
    ("iloc", "df", "", "df.iloc[5, 1] = -1.0"),
    ("at", "df", "", 'df.at[7, "n"] = -7'),
    ("iat", "df", "", "df.iat[7, 0] = -7.0"),
    ("setitem-existing", "df", "", 'df["a"] = 0.0'),
    ("setitem-new", "df", "", 'df["new"] = 1'),
    ("augmented", "df", "", 'df["a"] += 1'),
    ("astype-assignment", "df", "", 'df["n"] = df["n"].astype("int32")'),
    ("columns-assignment", "df", "", 'df.columns = ["x", "y", "z"]'),
    ("index-assignment", "df", "", "df.index = df.index + 1"),
    ("index-over-user-array", "df", "idx = np.arange(len(df)) * 2\ndf.index = idx", "idx[0] = -5"),
    ("index-array-write", "df", "df.index = np.arange(len(df)) * 3", "df.index.array[0] = -9"),
    ("insert", "df", "", 'df.insert(0, "first", 1.0)'),
    ("pop", "df", "", 'df.pop("n")'),
    ("del-column", "df", "", 'del df["b"]'),
    ("series-iloc", "ser", "", "ser.iloc[0] = 5.0"),
    ("series-array", "ser", "", "ser.array[3] = 5.0"),
    ("series-fillna-inplace", "ser", "", "ser.fillna(0.0, inplace=True)"),
    ("series-sort-inplace", "ser", "", "ser.sort_values(inplace=True)"),
    ("series-drop-inplace", "ser", "", "ser.drop([0, 1], inplace=True)"),
    ("series-rename-inplace", "ser", "", 'ser.rename("r", inplace=True)'),
    ("series-astype", "ser", "", 'ser = ser.astype("float32")'),
]

READ_ONLY = re.compile(r"read-only|WRITEABLE")


def _setup(n: int, shared: bool) -> str:
    return SETUP.format(n=n, copy=not shared)


def _run(ns: dict[str, Any], code: str) -> bool:
    """Run a mutation; False when numpy refused it (statekit made the tracked memory read-only)."""
    try:
        exec(code, ns)  # noqa: S102 - the mutations are this file's own code
    except ValueError as exc:
        if not READ_ONLY.search(str(exc)):
            raise
        return False
    return True


def _differs(before: Any, after: Any) -> bool:
    """Did the mutation change the value (contents, labels, names, attrs or flags)?"""
    try:
        _assert_same(after, before)
    except AssertionError:
        return True
    return type(before) is not type(after) or before.flags.allows_duplicate_labels != after.flags.allows_duplicate_labels


def _assert_same(got: Any, want: Any) -> None:
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_flags=False)
    else:
        pd.testing.assert_series_equal(got, want, check_exact=True, check_flags=False)
    assert got.attrs == want.attrs


# ---------------------------------------------------------------- through StateManager.save (the memo)


@pytest.mark.parametrize(("n", "shared"), [(LARGE, False), (LARGE, True), (SMALL, False)],
                         ids=["large-private", "large-shared", "small"])
@pytest.mark.parametrize(("name", "var", "prepare", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_save_stores_every_change(sqlite_url: str, name: str, var: str, prepare: str, mutate: str,
                                  n: int, shared: bool) -> None:
    _save_mutated(StateManager(sqlite_url), name, var, prepare, mutate, n, shared)


BACKEND_SAMPLE = [m for m in MUTATIONS if m[0] in ("original-array", "series-array-write", "attrs-set", "index-name",
                                                     "loc", "original-array-series")]


@pytest.mark.parametrize(("name", "var", "prepare", "mutate"), BACKEND_SAMPLE, ids=[m[0] for m in BACKEND_SAMPLE])
def test_save_stores_changes_on_every_backend(sm: StateManager, name: str, var: str, prepare: str,
                                              mutate: str) -> None:
    _save_mutated(sm, name, var, prepare, mutate, LARGE, True)


def _save_mutated(sm: StateManager, name: str, var: str, prepare: str, mutate: str, n: int, shared: bool) -> None:
    ns: dict[str, Any] = {}
    exec(_setup(n, shared), ns)  # noqa: S102
    _run(ns, prepare)
    sm.save("m", {var: ns[var]})
    hits = sm.metrics()["frame_memo_hits"]
    before = ns[var].copy()
    changed = _run(ns, mutate) and _differs(before, ns[var])
    sm.save("m", {var: ns[var]})
    if changed and n == LARGE:
        assert sm.metrics()["frame_memo_hits"] == hits, f"{name}: the memo claimed the changed frame unchanged"
    sm.cache.clear()
    _assert_same(sm.load("m")[var], ns[var])


def test_untouched_large_frame_costs_no_new_bytes(sm: StateManager) -> None:
    for shared in (False, True):  # sealed, and hashed (its memory is the user's array too)
        ns: dict[str, Any] = {}
        exec(_setup(LARGE, shared), ns)  # noqa: S102
        entity = f"u{shared}"
        sm.save(entity, {"df": ns["df"], "ser": ns["ser"]})
        hits = sm.metrics()["frame_memo_hits"]
        ns["df"]["a"].sum(), ns["df"].describe(), ns["df"].to_numpy(), ns["ser"].mean()  # reading is not changing
        again = sm.save(entity, {"df": ns["df"], "ser": ns["ser"]})
        assert again.new_bytes < 200 and sm.metrics()["frame_memo_hits"] == hits + 2


# ---------------------------------------------------------------- through %state auto on


def _magics(shell: InteractiveShell) -> StateMagics:
    return shell.magics_manager.registry["StateMagics"]


@pytest.fixture
def ip(sqlite_url: str) -> Iterator[InteractiveShell]:
    shell = shells.make_shell(sqlite_url, ENTITY)
    yield shell
    _magics(shell).auto = False
    _magics(shell).close()
    shell.user_ns.clear()


def _cell(ip: InteractiveShell, code: str) -> bool:
    """Run a cell; False when numpy refused the write as read-only."""
    result = ip.run_cell(code)
    if result.error_in_exec is not None:
        if isinstance(result.error_in_exec, ValueError) and READ_ONLY.search(str(result.error_in_exec)):
            return False
        result.raise_error()
    return True


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
@pytest.mark.parametrize(("name", "var", "prepare", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_auto_checkpoint_stores_every_change(ip: InteractiveShell, name: str, var: str, prepare: str, mutate: str,
                                             shared: bool) -> None:
    _cell(ip, _setup(LARGE, shared))
    _cell(ip, "%state auto on")
    if prepare:
        _cell(ip, prepare)
    sm = _magics(ip).store()
    before, value = sm.head_version(ENTITY), ip.user_ns[var].copy()
    changed = _cell(ip, mutate) and _differs(value, ip.user_ns[var])
    _cell(ip, "1")  # after a failed cell, the next one looks at what it touched
    if changed:
        assert sm.head_version(ENTITY) > before, f"{name}: the change was not saved"
    sm.cache.clear()
    _assert_same(sm.load(ENTITY)[var], ip.user_ns[var])


def test_auto_does_not_resave_an_untouched_frame(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    _cell(ip, _setup(LARGE, False))
    _cell(ip, "%state auto on")
    sm = _magics(ip).store()
    head = sm.head_version(ENTITY)
    for code in ('m = df["a"].mean()', "df.describe()", 'x = df.to_numpy()', "s = ser.sum()"):
        _cell(ip, code)
    capsys.readouterr()
    _cell(ip, "k = 1")
    assert sm.head_version(ENTITY) == head + 4  # m, x, s, then k: never df or ser
    assert "auto-saved" in capsys.readouterr().out
    for label in sm.history(ENTITY)["message"].iloc[-4:]:
        assert "df" not in label and "ser" not in label, label


# ---------------------------------------------------------------- a new name for an existing object (item 8)


def _last_message(ip: InteractiveShell) -> str:
    return str(_magics(ip).store().history(ENTITY)["message"].iloc[-1])


@pytest.mark.parametrize(("setup", "cell", "expected"), [
    ("a = 1", "b = 1", "auto: b (new)"),
    ("a = [1, 2, 3]", "b = a", "auto: b (new)"),
    ("import numpy as np\nfirst, second = np.zeros(100_000), np.ones(100_000)\narrays = [first, second]",
     "for item in arrays:\n    pass", "auto: item (new)"),  # the loop variable ends on second
    ("import numpy as np\nbig = np.zeros(300_000)", "alias = big", "auto: alias (new)"),
    ("import pandas as pd\ndf = pd.DataFrame({'a': range(10)})", "df2 = df", "auto: df2 (new)"),
])
def test_a_new_name_does_not_resave_the_old_one(ip: InteractiveShell, setup: str, cell: str, expected: str) -> None:
    _cell(ip, setup)
    _cell(ip, "%state auto on")
    sm = _magics(ip).store()
    head = sm.head_version(ENTITY)
    _cell(ip, cell)
    assert sm.head_version(ENTITY) == head + 1
    assert _last_message(ip) == expected


def test_an_alias_changed_in_place_saves_every_name(ip: InteractiveShell) -> None:
    _cell(ip, "big = list(range(100_000))")
    _cell(ip, "%state auto on")
    _cell(ip, "alias = big\nalias.append(-1)")  # new name and in-place change in one cell: big changed too
    assert _last_message(ip) == "auto: big (changed), alias (new)" or _last_message(ip) == \
        "auto: alias (new), big (changed)"
    _cell(ip, "alias.append(-2)")
    assert set(re.findall(r"(\w+) \(changed\)", _last_message(ip))) == {"alias", "big"}
    assert _magics(ip).store().load(ENTITY)["big"][-2:] == [-1, -2]
