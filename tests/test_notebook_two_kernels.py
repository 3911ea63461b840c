"""Two real kernels on one entity, and one kernel across a restart (SQLite and PostgreSQL).

A save from a notebook writes only what that kernel changed since it last loaded
or saved, on top of the current head: another kernel's changes (values,
deletions, in-place appends) are never reverted by a kernel that did not touch
them, and when both changed the same variable the save says so and nothing is lost.

A value the store refuses (it needs pickle) is dropped from the new version,
never kept there with an older value, so a restart does not restore it stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from statekit import StateManager

pytestmark = pytest.mark.kernel

ENTITY = "shared"


class Kernel:
    """A real python3 kernel (it inherits this process's environment: PYTHONPATH, signing key)."""

    def __init__(self, cwd: Path, url: str):
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.run(f"%load_ext statekit\n%config StateMagics.url = {url!r}\n%config StateMagics.entity = {ENTITY!r}")

    def run(self, code: str) -> str:
        """Run one cell; its text output (stdout, stderr, errors as 'Name: message', results)."""
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append(f"{content['ename']}: {content['evalue']}\n")
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")

        self.kc.execute_interactive(code, output_hook=hook, timeout=120)
        return "".join(out)

    def value(self, expr: str) -> str:
        return self.run(f"print(repr({expr}))").strip()

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernels(store_url: str, tmp_path: Path) -> Any:
    started: list[Kernel] = []

    def start() -> Kernel:
        k = Kernel(tmp_path, store_url)
        started.append(k)
        return k

    yield start
    for k in started:
        k.close()


def test_auto_checkpoint_in_two_kernels_keeps_each_others_changes(kernels: Any, store_url: str) -> None:
    a, b = kernels(), kernels()
    sm = StateManager(store_url)
    a.run("%state auto on")
    assert "auto-saved v1" in a.run("x = 1\ny = [1]\nz = 'a'")
    b.run("%state auto on")
    assert "loaded v1" in b.run("%state load")
    assert "auto-saved v2" in a.run("x = 2")

    # B never touched x: its change to w is written on top of A's x, and says so
    out = b.run("w = 0")
    assert "auto-saved v3" in out and "on top of v2" in out, out
    assert sm.load(ENTITY) == {"x": 2, "y": [1], "z": "a", "w": 0}

    # a deletion in A stays deleted when B saves something else
    assert "auto-saved v4" in a.run("del z")
    assert "auto-saved v5" in b.run("w = 1")
    assert sm.load(ENTITY) == {"x": 2, "y": [1], "w": 1}

    # an in-place append in A is not reverted by B's stale list
    assert "auto-saved v6" in a.run("y.append(2)")
    assert "auto-saved v7" in b.run("w = 2")
    assert sm.load(ENTITY) == {"x": 2, "y": [1, 2], "w": 2}

    # both change y: B's auto-save reports the conflict in one line and loses neither value
    out = b.run("y.append(99)")
    assert "also changed by another writer" in out and "y" in out, out
    assert "Traceback" not in out
    assert sm.load(ENTITY)["y"] == [1, 2] and b.value("y") == "[1, 99]"
    # an explicit save is refused with one line; --overwrite keeps B's value on purpose
    out = b.run("%state save")
    assert out.startswith("UsageError: not saved: y also changed by another writer"), out
    assert sm.load(ENTITY)["y"] == [1, 2]
    out = b.run("%state save --overwrite")
    assert "y (changed, over another writer's)" in out, out
    assert sm.load(ENTITY) == {"x": 2, "y": [1, 99], "w": 2}
    assert sm.history(ENTITY)["version"].tolist()[-1] == 8


def test_explicit_saves_in_two_kernels(kernels: Any, store_url: str) -> None:
    a, b = kernels(), kernels()
    sm = StateManager(store_url)
    a.run("x = 1\ny = 2\nz = 3")
    assert "saved v1" in a.run("%state save")
    b.run("%state load")
    a.run("x = 10\ndel z")
    assert "saved v2" in a.run("%state save")
    b.run("y = 20")
    out = b.run("%state save")
    assert "saved v3 on main on top of v2" in out and "y (changed)" in out, out
    assert sm.load(ENTITY) == {"x": 10, "y": 20}
    # B deletes x, which A changed since B last loaded: refused, nothing written
    b.run("del x")
    out = b.run("%state save")
    assert "not saved: x also changed by another writer" in out, out
    assert sm.load(ENTITY) == {"x": 10, "y": 20} and sm.history(ENTITY)["version"].tolist()[-1] == 3
    # taking theirs: B loads x and the namespace matches the head
    b.run("%state load x")
    assert b.value("x") == "10"
    assert "namespace: matches v3" in b.run("%state status")
    # both set the same value: not a conflict
    a.run("y = 7")
    a.run("%state save")
    b.run("y = 7")
    out = b.run("%state save")
    assert "UsageError" not in out and sm.load(ENTITY) == {"x": 10, "y": 7}, out


def test_a_value_that_needs_pickle_is_dropped_not_restored_stale(kernels: Any, store_url: str) -> None:
    k = kernels()
    sm = StateManager(store_url)
    k.run("%state auto on")
    assert "auto-saved v1" in k.run("import numpy as np\nresults = []\nother = 1")
    out = k.run("results.append(np.zeros(3))")
    assert "auto-saved v2" in out and "results (dropped: list: needs pickle, which is off)" in out, out
    assert sm.load(ENTITY) == {"other": 1}
    assert "results (not saved: list: needs pickle, which is off)" in k.run("%state status")
    k.close()

    after_restart = kernels()
    out = after_restart.run("%state load")
    assert "loaded v2: other" in out and "results" not in out, out
    assert after_restart.value("'results' in globals()") == "False"
    after_restart.close()

    k = kernels()  # a new session that enables pickle and saves the current value
    k.run("import numpy as np\n%state load\nresults = [np.zeros(3)]")
    k.run("%config StateMagics.allow_pickle = True")
    out = k.run("%state save")
    assert "saved v3" in out and "results (new)" in out, out
    again = kernels()
    again.run("%config StateMagics.allow_pickle = True")
    again.run("%state load")
    assert again.value("[type(r).__name__ for r in results]") == "['ndarray']"


def test_two_fresh_kernels_with_auto_on_do_not_overwrite_each_other(kernels: Any, store_url: str) -> None:
    a, b = kernels(), kernels()
    sm = StateManager(store_url)
    a.run("%state auto on")
    b.run("%state auto on")  # nothing saved yet: B's base is "before the first version"
    assert "auto-saved v1" in a.run("x = 1")
    out = b.run("x = 5")  # B never saw A's x: a conflict, reported, and A's x kept
    assert "x also changed by another writer" in out and "auto-saved" not in out, out
    assert sm.load(ENTITY) == {"x": 1}
    assert "auto-saved v2" in b.run("y = 2")  # B's other work is saved on top of A's
    assert sm.load(ENTITY) == {"x": 1, "y": 2}
