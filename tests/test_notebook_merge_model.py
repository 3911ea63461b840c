"""Two shells on one entity, driven by hypothesis against a model of what each one changed.

After every ``%state save`` by a shell:

- refused (a UsageError): the store did not move, and the shell had changed a
  variable that another shell wrote since this one last loaded or saved it, to
  a value other than this shell's (a true conflict, never a false one);
- written: every variable the shell did not change since it last synchronised
  is exactly as the previous head had it (present or absent), and every
  variable it changed is the shell's value (or absent, when it deleted it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from statekit import StateManager
from tests import shells

NAMES = ["x", "y"]
ENTITY = "model"

ops = st.lists(
    st.tuples(st.sampled_from(["set", "set", "append", "del", "save", "save", "save", "load"]),
              st.integers(0, 1), st.sampled_from(NAMES), st.integers(0, 3)),
    min_size=1, max_size=20,
)
REVERT = [("set", 0, "x", 0), ("save", 0, "", 0), ("load", 1, "", 0), ("set", 0, "x", 1), ("save", 0, "", 0),
          ("set", 1, "y", 0), ("save", 1, "", 0)]
"""The issue's case: the second shell never touched x, and must not write its stale x back."""


def _store(sm: StateManager) -> dict[str, Any]:
    try:
        return sm.load(ENTITY)
    except Exception:  # noqa: BLE001 - nothing saved yet
        return {}


ABSENT = "<absent>"


@pytest.mark.parametrize("auto", [False, True], ids=["explicit", "auto"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops)
@example(steps=REVERT)
def test_saves_never_revert_another_shells_change(tmp_path: Path, auto: bool,
                                                  steps: list[tuple[str, int, str, int]]) -> None:
    url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    sm = StateManager(url)
    pair = [shells.make_shell(url, ENTITY), shells.make_shell(url, ENTITY)]
    for shell in pair:  # both start from the same (empty) store
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_line_magic("state", "auto on")
            if not auto:
                shell.run_line_magic("state", "auto off")
    synced: list[dict[str, Any]] = [{}, {}]  # each shell's values when it last loaded or saved them
    base: list[dict[str, Any]] = [{}, {}]  # the store's values when each shell last loaded or wrote them
    try:
        for op, k, name, v in steps:
            ns = pair[k].user_ns
            before = _store(sm)
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                if op == "set":
                    pair[k].run_cell(f"{name} = [{v}]")  # a new list each time: no two names share an object
                elif op == "append" and name in ns:
                    pair[k].run_cell(f"{name}.append({v})")
                elif op == "del" and name in ns:
                    pair[k].run_cell(f"del {name}")
                elif op == "load":
                    if not before:
                        continue  # nothing saved yet
                    pair[k].run_cell("%state load")
                    synced[k].update(copy.deepcopy(before))
                    base[k] = copy.deepcopy(before)
                elif op == "save":
                    _check_save(sm, pair, k, synced, base)
                    continue
                else:
                    continue
            assert "Traceback" not in out.getvalue(), out.getvalue()
            if auto:
                _check_auto(sm, pair, k, synced, base, before)
    finally:
        for shell in pair:
            magics = shell.magics_manager.registry["StateMagics"]
            magics.auto = False
            magics.close()


def _conflicts(changed: set[str], mine: dict[str, Any], base: dict[str, Any], now: dict[str, Any]) -> set[str]:
    """Changed here, changed in the store since this shell last loaded or wrote it, and not alike."""
    return {n for n in changed if now.get(n, ABSENT) != base.get(n, ABSENT) and now.get(n, ABSENT) != mine[n]}


def _synced(k: int, names: set[str], mine: dict[str, Any], after: dict[str, Any], synced: list[dict[str, Any]],
            base: list[dict[str, Any]]) -> None:
    for n in names:
        if mine[n] is ABSENT:
            synced[k].pop(n, None)
        else:
            synced[k][n] = copy.deepcopy(mine[n])
        base[k][n] = copy.deepcopy(after.get(n, ABSENT))


def _check_auto(sm: StateManager, pair: list[Any], k: int, synced: list[dict[str, Any]],
                base: list[dict[str, Any]], before: dict[str, Any]) -> None:
    """After a cell with auto-checkpoint on: this shell's changes are saved, except true conflicts, which
    keep the other shell's value; nothing else moved."""
    ns = pair[k].user_ns
    after = _store(sm)
    mine = {n: ns.get(n, ABSENT) for n in NAMES}
    changed = {n for n in NAMES if mine[n] != synced[k].get(n, ABSENT)}
    conflicts = _conflicts(changed, mine, base[k], before)
    for n in NAMES:
        expected = mine[n] if n in changed - conflicts else before.get(n, ABSENT)
        assert after.get(n, ABSENT) == expected, (n, "conflict" if n in conflicts else "", before, after, mine)
    _synced(k, changed - conflicts, mine, after, synced, base)


def _check_save(sm: StateManager, pair: list[Any], k: int, synced: list[dict[str, Any]],
                base: list[dict[str, Any]]) -> None:
    before, head = _store(sm), sm.head_version(ENTITY)
    ns = pair[k].user_ns
    mine = {n: copy.deepcopy(ns.get(n, ABSENT)) for n in NAMES}
    changed = {n for n in NAMES if mine[n] != synced[k].get(n, ABSENT)}
    conflicts = _conflicts(changed, mine, base[k], before)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            pair[k].run_line_magic("state", "save")
        except UsageError as exc:
            assert sm.head_version(ENTITY) == head, "a refused save moved the head"
            assert conflicts, f"a false conflict: {exc} (changed {changed})"
            return
    assert not conflicts, ("a conflict saved silently", conflicts, before, mine)
    after = _store(sm)
    for n in NAMES:
        expected = mine[n] if n in changed else before.get(n, ABSENT)
        assert after.get(n, ABSENT) == expected, (n, before, after, mine)
    _synced(k, changed, mine, after, synced, base)
