"""Fuzz ``%state``: any line gives a result or a one-line UsageError, nothing else.

Lines are either arbitrary text or built from the real subcommands, options and
a few names and versions that exist, so the fuzzer reaches past the parser
into the commands (save, load, rollback, branch...) on a real SQLite store.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from statekit.notebook.args import COMMANDS
from tests import shells

WORDS = [*COMMANDS, "-m", "--message", "-r", "-b", "-n", "-a", "-f", "--from", "--all", "-h", "on", "off",
         "main", "exp", "a", "df", "nope", "1", "2", "3", "v2", "0", "-1", "99", "''", '"', "'x y'", "--"]

lines = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(WORDS) | st.text(max_size=8), min_size=1, max_size=5).map(" ".join),
    st.tuples(st.sampled_from(COMMANDS), st.lists(st.text(max_size=10).map(shlex.quote), max_size=3)).map(
        lambda t: " ".join([t[0], *t[1]])),
)


def make_shell(url: str) -> InteractiveShell:
    shell = shells.make_shell(url, "fuzz", progress_delay=60.0)
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})\na = {'k': 1}")
    shell.run_line_magic("state", "save")
    shell.run_cell("a['k'] = 2")
    shell.run_line_magic("state", "save")
    return shell


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=lines)
def test_any_line_gives_a_result_or_one_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    line: str) -> None:
    # %state panel builds plotly widgets (seconds each); test_magics.py covers it, here it is "not installed"
    monkeypatch.setitem(sys.modules, "statekit.panels", None)
    shell = _shell(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            shell.run_line_magic("state", line)
        except UsageError as exc:
            message = str(exc)
            assert message and "\n" not in message, repr(message)
            assert "Traceback" not in message
    assert "Traceback" not in out.getvalue()
    magics = shell.magics_manager.registry["StateMagics"]
    magics.auto = False  # the fuzzer may have turned it on; keep later examples independent of it
    magics.entity = "fuzz"


_SHELLS: dict[Path, InteractiveShell] = {}


def _shell(tmp_path: Path) -> InteractiveShell:
    """One shell per test run (hypothesis calls the test many times with the same tmp_path)."""
    if tmp_path not in _SHELLS:
        _SHELLS.clear()
        _SHELLS[tmp_path] = make_shell(f"sqlite:///{tmp_path / 'fuzz.db'}")
    return _SHELLS[tmp_path]
