"""The %state commands for history as data: tag, tags, merge, log NAME, load --as-of."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from statekit import StateManager
from tests import shells


@pytest.fixture
def ip(store_url: str) -> Iterator[InteractiveShell]:
    shell = shells.make_shell(store_url, "nb")
    yield shell
    m = shell.magics_manager.registry["StateMagics"]
    m.auto = False
    m.close()
    shell.user_ns.clear()


def line(ip: InteractiveShell, text: str) -> object:
    return ip.run_line_magic("state", text)


def test_tag_merge_log_and_as_of(ip: InteractiveShell, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns.update(params={"lr": 0.1, "depth": 4}, n=1)
    line(ip, "save -m first")
    line(ip, "tag baseline")
    time.sleep(0.01)
    moment = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    time.sleep(0.01)
    line(ip, "branch side")
    ip.user_ns["params"] = {"lr": 0.1, "depth": 8}
    line(ip, "save")
    line(ip, "checkout main")
    ip.user_ns["n"] = 2
    line(ip, "save")
    assert line(ip, "merge side") is None
    assert ip.user_ns["params"] == {"lr": 0.1, "depth": 8} and ip.user_ns["n"] == 2
    assert "merged side into main" in capsys.readouterr().out
    log = line(ip, "log params.depth")
    assert isinstance(log, pd.DataFrame) and list(log["version"]) == [1, 2, 4]
    tags = line(ip, "tags")
    assert list(tags["tag"]) == ["baseline"]
    full = line(ip, "log")  # the log names each version's tags
    assert dict(zip(full["version"], full["tags"], strict=True))[1] == "baseline"
    assert set(full.loc[full["version"] != 1, "tags"]) == {""}
    line(ip, f'load --as-of "{moment}"')
    assert ip.user_ns["n"] == 1
    with pytest.raises(UsageError, match="never moves"):
        line(ip, "tag baseline")
    with pytest.raises(UsageError):
        line(ip, f'load 1 --as-of "{moment}"')


def test_merge_conflicts_are_a_table_and_write_nothing(ip: InteractiveShell, store_url: str) -> None:
    ip.user_ns.update(x=1)
    line(ip, "save")
    line(ip, "branch side")
    ip.user_ns["x"] = 2
    line(ip, "save")
    line(ip, "checkout main")
    ip.user_ns["x"] = 3
    line(ip, "save")
    conflicts = line(ip, "merge side")
    assert isinstance(conflicts, pd.DataFrame) and list(conflicts["item"]) == ["x"]
    with StateManager(store_url) as sm:
        assert sm.head_version("nb") == 3
    line(ip, "merge side --theirs x")
    assert ip.user_ns["x"] == 2


def test_saves_from_the_magics_record_their_code(ip: InteractiveShell, store_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def cell(code: str) -> None:
        result = ip.run_cell(code, store_history=True)
        result.raise_error()

    cell("import math\nraw = [3, 1, 2]")
    cell("total = sum(raw) + math.floor(0.5)")
    cell("%state save")
    cell("doubled = [2 * x for x in raw]")
    cell("%state save -m doubled")
    with StateManager(store_url) as sm:
        first, second = sm.get("nb", version=1).lineage, sm.get("nb", version=2).lineage
    assert [c["source"] for c in first["cells"]] == ["import math\nraw = [3, 1, 2]",
                                                     "total = sum(raw) + math.floor(0.5)", "%state save"]
    assert [c["execution_count"] for c in first["cells"]] == [1, 2, 3]
    assert first["reads"] == ["raw"]            # not math (a module), not sum (a builtin)
    assert [c["source"] for c in second["cells"]] == ["doubled = [2 * x for x in raw]", "%state save -m doubled"]
    assert second["reads"] == ["raw"]
    log = line(ip, "log --code")
    assert "# In[4]\ndoubled = [2 * x for x in raw]" in log["code"].iloc[1]
    capsys.readouterr()
    line(ip, "show 1 --code")
    out = capsys.readouterr().out
    assert out.startswith("v1 on main: create by ") and "# In[2]\ntotal = sum(raw) + math.floor(0.5)" in out
    assert out.rstrip().endswith("# read: raw")
