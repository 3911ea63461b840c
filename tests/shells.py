"""A test shell with statekit loaded: history off, errors raised (the jupysql / storemagic model)."""

from __future__ import annotations

import atexit
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


def make_shell(url: str | None, entity: str | None = None, *, progress_delay: float | None = None) -> InteractiveShell:
    """A fresh shell with ``%load_ext statekit`` done and the store and entity configured."""
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    atexit.unregister(shell.atexit_operations)
    shell.run_line_magic("load_ext", "statekit")
    if url is not None:
        shell.run_line_magic("config", f"StateMagics.url = {url!r}")
    if entity is not None:
        shell.run_line_magic("config", f"StateMagics.entity = {entity!r}")
    if progress_delay is not None:
        shell.run_line_magic("config", f"StateMagics.progress_delay = {progress_delay!r}")
    return shell


def run(ip: InteractiveShell, code: str) -> Any:
    """Run a cell that must succeed; returns its result value."""
    result = ip.run_cell(code)
    result.raise_error()
    return result.result


def state(ip: InteractiveShell, line: str) -> Any:
    return ip.run_line_magic("state", line)


def usage_error(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str, *, quiet: bool = True) -> str:
    """Run a cell that must fail with one UsageError line and no traceback; returns the message.

    ``quiet``: the cell must also print nothing on stdout.
    """
    capsys.readouterr()
    result = ip.run_cell(code)
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, UsageError), (out, err, result.error_in_exec)
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), err
    if quiet:
        assert out.strip() == ""
    return lines[0][len("UsageError: "):]
