"""statekit show --as-of / --tag and statekit retain, through click's runner."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from click.testing import CliRunner

from statekit import StateManager
from statekit.cli import cli


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_show_as_of_and_tag(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    sm.tag("e", "first")
    time.sleep(0.01)
    moment = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    sm.save("e", {"x": 2})
    for option in (["--as-of", moment], ["--tag", "first"]):
        result = run("show", "e", *option, "--url", sm.url, "--json")
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["snapshot"]["version"] == 1 and out["state"] == {"x": 1}
    bad = run("show", "e", "1", "--as-of", moment, "--url", sm.url)
    assert bad.exit_code != 0 and bad.stderr.startswith("statekit: error: ")


def test_retain_dry_run_then_apply(sm: StateManager) -> None:
    for i in range(4):
        sm.save("e", {"x": i})
    dry = run("retain", "e", "--keep-last", "1", "--dry-run", "--url", sm.url)
    assert dry.exit_code == 0 and "Would remove 3 versions" in dry.stdout
    assert len(sm.history("e")) == 4
    done = run("retain", "--keep-last", "1", "--url", sm.url, "--json")
    assert [r["version"] for r in json.loads(done.stdout)] == [1, 2, 3]
    assert list(sm.history("e")["version"]) == [4]
    assert run("retain", "--url", sm.url).exit_code != 0   # no rule: refused


def test_log_changed(sm: StateManager) -> None:
    sm.save("e", {"p": {"lr": 0.1}, "n": 1})
    sm.save("e", {"p": {"lr": 0.1}, "n": 2})
    sm.save("e", {"p": {"lr": 0.2}, "n": 2})
    result = run("log", "e", "--changed", "p.lr", "--url", sm.url, "--json")
    assert [r["version"] for r in json.loads(result.stdout)] == [1, 3]
