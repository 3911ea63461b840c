"""The ``statekit`` command over stores that hold anything: hostile text and awkward values.

Anyone who can save can put text in a store that a teammate later prints with
``statekit log`` or ``show``: escape sequences must reach the terminal as
visible escapes (``\\x1b``), never as controls, even when the output is piped.
``--json`` output must parse as JSON. And every command over every storable
value exits with a documented code (0-5) and one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from awkward_values import CONTROL, awkward_values
from click.testing import CliRunner, Result

from statekit import StatekitError, StateManager
from statekit.cli import cli

RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")
"""Characters that must never reach a terminal raw (newline and tab only as layout)."""
DOCUMENTED = {0, 1, 2, 3, 4, 5}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def check_output(result: Result, args: tuple[str, ...]) -> None:
    """A documented exit code, no traceback, no raw control character, valid JSON under --json."""
    where = f"statekit {' '.join(args)!r}"
    assert result.exit_code in DOCUMENTED, (where, result.exit_code, result.stderr[-2000:])
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text and "internal error" not in text, (where, text[-2000:])
        found = RAW_CONTROLS.search(text)
        if "--json" not in args or text is result.stderr:
            assert found is None, (where, repr(text[max(0, found.start() - 40): found.end() + 40]) if found else "")
    if result.exit_code != 0:
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("statekit: error: "), where
    elif "--json" in args:
        assert result.stdout.isascii(), where
        json.loads(result.stdout)


def test_escape_sequences_in_messages_actors_names_and_values_are_shown_escaped(sm: StateManager) -> None:
    sm.save("e", {"v" + CONTROL: CONTROL, "d": {CONTROL: [CONTROL]}}, message="m" + CONTROL, actor="a" + CONTROL,
            metadata={"k" + CONTROL: CONTROL})
    sm.save("e", {"v" + CONTROL: CONTROL + "2", "d": {CONTROL: []}}, message=CONTROL)
    sm.create_branch("e", "b", reason="r" + CONTROL)
    for args in (("log", "e"), ("show", "e", "1"), ("show", "e"), ("diff", "e", "1", "2"), ("entities",),
                 ("verify",), ("verify", "e"), ("recover", "e", "--reason", CONTROL)):
        result = run("--url", sm.url, *args)
        check_output(result, args)
        assert "\\x1b[31m" in result.stdout or args[0] in ("entities", "verify", "recover"), (args, result.stdout)
        if args[0] in ("log", "show"):
            assert "\\u202e" in result.stdout and "\\x07" in result.stdout
    log = json.loads(run("--url", sm.url, "--json", "log", "e").stdout)
    assert [r["message"] for r in log] == ["m" + CONTROL, CONTROL, f"recover: {CONTROL}"] or \
        [r["message"] for r in log][:2] == ["m" + CONTROL, CONTROL]  # JSON gives the exact text back
    shown = json.loads(run("--url", sm.url, "--json", "show", "e", "1").stdout)
    assert shown["snapshot"]["actor"] == "a" + CONTROL
    assert shown["state"]["v" + CONTROL] == CONTROL and shown["snapshot"]["metadata"] == {"k" + CONTROL: CONTROL}


def test_errors_that_echo_an_argument_escape_it(sm: StateManager) -> None:
    sm.save("e", {"a": 1})
    for args in (("show", "e" + CONTROL), ("log", "nope" + CONTROL), ("diff", "e", "1", "--branch", CONTROL),
                 ("show", "e", "--branch", "x" + CONTROL), ("show", CONTROL, "99999999999999999999999")):
        result = run("--url", sm.url, *args)
        assert result.exit_code in (2, 4), (args, result.stderr)
        check_output(result, args)


def test_versions_and_limits_past_64_bits_are_usage_errors(sm: StateManager) -> None:
    sm.save("e", {"a": 1})
    for args in (("show", "e", str(2**63)), ("diff", "e", "1", str(2**64)), ("log", "e", "-n", str(2**63)),
                 ("show", "e", "-1"), ("log", "e", "-n", "0")):
        result = run("--url", sm.url, *args)
        assert result.exit_code == 2, (args, result.stderr)
        check_output(result, args)


def _fill(sm: StateManager) -> list[str]:
    """Save each awkward value (and a changed version) as its own entity; return the entities saved."""
    saved = []
    for name, value, changed in awkward_values():
        try:
            sm.save(name, {"value": value})
            sm.save(name, {"value": changed})
        except StatekitError:
            continue  # refused at save time, as the rule allows; any other error fails the test
        saved.append(name)
    return saved


def test_show_diff_and_log_over_every_awkward_value(store_url: str) -> None:
    sm = StateManager(store_url, allow_pickle=True)
    saved = _fill(sm)
    assert len(saved) >= 60, saved  # most of them are storable
    started = time.perf_counter()
    for name in saved:
        for args in (("show", name), ("show", name, "1", "--json"), ("diff", name, "1", "2"),
                     ("diff", name, "1", "2", "--json"), ("log", name, "--json")):
            check_output(run("--url", sm.url, *args), args)
    assert time.perf_counter() - started < 120
    sm.close()


def test_the_real_command_over_awkward_values_in_a_pipe(tmp_path: Path) -> None:
    """The real entry point in a subprocess, output piped (what a shell script sees), over one entity that holds
    every storable awkward value."""
    url = f"sqlite:///{tmp_path / 'awkward.db'}"
    sm = StateManager(url, allow_pickle=True)
    names = _fill(sm)
    values = {name: (value, changed) for name, value, changed in awkward_values() if name in names}
    sm.save("all", {n: v for n, (v, _c) in values.items()}, message=CONTROL)
    sm.save("all", {n: c for n, (_v, c) in values.items()})
    sm.close()
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for args in (("show", "all", "1"), ("diff", "all", "1", "2"), ("show", "all", "--json"), ("log", "all"),
                 ("diff", "all", "1", "2", "--json")):
        proc = subprocess.run([sys.executable, "-m", "statekit", "--url", url, *args], capture_output=True,
                              env=env, timeout=120, check=False)
        fake = Result(runner=CliRunner(), stdout_bytes=proc.stdout, stderr_bytes=proc.stderr,
                      output_bytes=proc.stdout + proc.stderr, return_value=None, exit_code=proc.returncode,
                      exception=None)
        check_output(fake, args)  # exit 3 is allowed: a value the codecs cannot read back yet is reported as damage
        assert proc.returncode == 0 or "does not decode" in fake.stderr, (args, fake.stderr)


def test_the_real_command_in_an_ascii_locale_does_not_fail_on_unicode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with StateManager(url) as sm:
        sm.save("e", {"données": "実験 ✓"}, message="café ☕")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    for args in (("log", "e"), ("show", "e")):
        proc = subprocess.run([sys.executable, "-m", "statekit", "--url", url, *args], capture_output=True, env=env,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert b"Traceback" not in proc.stderr and proc.stdout.isascii()
        assert b"caf\\xe9" in proc.stdout or b"caf" in proc.stdout


def _preview_only_reads_head(sm: StateManager) -> Any:
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({"n": np.arange(200_000), "x": np.linspace(0, 1, 200_000)})
    sm.save("big", {"df": df})
    return df


def test_show_reads_only_the_rows_it_prints(sm: StateManager) -> None:
    """A preview needs the first Arrow chunk of each row group: with the later chunks gone it still shows the head,
    while a full load (which needs every row) reports the damage."""
    _preview_only_reads_head(sm)
    import sqlalchemy as sa

    row = sm.history("big").iloc[-1]
    engine = sa.create_engine(sm.url)
    with engine.begin() as conn:
        items = conn.execute(sa.text("SELECT items FROM state_snapshots WHERE snapshot_id = :s"),
                             {"s": row["snapshot_id"]}).scalar_one()
        desc = (json.loads(items) if isinstance(items, str) else items)["df"]
        # chunk groups whose leaves run along the rows: [first leaf, leaves, length, one chunk per 65,536 rows]
        later = [d for group in desc["groups"] if group[2] == desc["rows"] for d in group[3][1:]]
        assert len(later) == 6
        for d in later:
            conn.execute(sa.text("DELETE FROM state_payloads WHERE digest = :d"), {"d": d})
    engine.dispose()
    result = run("--url", sm.url, "show", "big", "--rows", "3")
    check_output(result, ("show",))
    assert result.exit_code == 0 and "200000 rows x 2 columns" in result.stdout
    assert "first 3 of 200000 rows" in result.stdout
    shown = json.loads(run("--url", sm.url, "--json", "show", "big").stdout)["state"]["df"]
    assert shown["shape"] == [200000, 2] and shown["data"][:2] == [[0, 0.0], [1, 1 / 199_999]]
    assert shown["truncated"] is True
    fresh = StateManager(sm.url)
    with pytest.raises(StatekitError, match="missing"):
        fresh.load("big")
    fresh.close()
