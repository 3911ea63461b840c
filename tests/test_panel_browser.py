"""The state panel for real: JupyterLab in headless Debian Chromium, driven by Python Playwright.

The test writes a notebook that saves a few versions (two branches and a
rollback) and opens the panel, runs it in JupyterLab, then checks in the DOM
that plotly drew one marker per version, that choosing version B in the
dropdown ``<select>`` and clicking a marker both update the diff table
through the kernel, that a rollback through the confirmation step redraws the
timeline, that the x axis switches to version numbers, and saves screenshots
to ``test-artifacts/`` (``panel.png``, ``panel-time.png``, ``panel-page.png``).

Without ``/usr/bin/chromium`` it skips with the reason, except under
CI=true, where it fails: CI installs Chromium (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """\
from statekit import StateManager
from statekit.panels import panel
sm = StateManager()  # $STATEKIT_URL, set by the test
sm.save("demo", {"price": 10, "params": {"lr": 0.1}}, message="first", actor="ana")
sm.save("demo", {"price": 12, "params": {"lr": 0.1}}, message="raise the price", actor="ana")
sm.create_branch("demo", "tuning", 1)
sm.save("demo", {"price": 10, "params": {"lr": 0.05}}, branch="tuning", message="lower lr", actor="bo")
sm.save("demo", {"price": 15, "params": {"lr": 0.1}, "note": "final"}, message="final price", actor="ana")
sm.rollback("demo", 2, reason="15 was too much")
"""
SHOW = "p = panel(sm, 'demo')\np"

READY_AND_RUN = """
async () => {
  const app = window.jupyterapp;
  await app.restored;
  let nb = null;
  for (let i = 0; i < 1200 && !nb; i++) {
    const w = app.shell.currentWidget;
    if (w && w.sessionContext && w.content && w.content.widgets) { nb = w; break; }
    await new Promise(r => setTimeout(r, 100));
  }
  if (!nb) { throw new Error("the notebook did not open"); }
  await nb.context.ready;
  await nb.sessionContext.ready;
  let kernel = null;
  for (let i = 0; i < 1200 && !kernel; i++) {
    kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
    if (!kernel) { await new Promise(r => setTimeout(r, 100)); }
  }
  if (!kernel) { throw new Error("no kernel started"); }
  await kernel.info;
  await app.commands.execute("notebook:run-all-cells");
  return kernel.name;
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "api/status", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on a free port of 127.0.0.1, token off, its own dirs; killed afterwards."""
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"{reason}: CI must run the browser test")
        pytest.skip(reason)
    root = tmp_path / "lab"
    root.mkdir()
    settings = tmp_path / "settings"
    notify = settings / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)
    (notify / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {
        **os.environ,
        "STATEKIT_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1", f"--ServerApp.port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.port_retries=0",
           "--ServerApp.open_browser=False", "--LabApp.expose_app_in_browser=True",
           f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_server(url, proc, log)
        yield url, root
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_panel_in_jupyterlab(jupyterlab: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, root = jupyterlab
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(SHOW)]
    nbformat.write(nb, root / "panel.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
        )
        page = context.new_page()
        page.set_default_timeout(120_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(url + "lab/tree/panel.ipynb", wait_until="domcontentloaded")
            page.wait_for_function("() => window.jupyterapp !== undefined")
            assert page.evaluate(READY_AND_RUN) == "python3"

            panel = page.locator(".statekit-panel")
            expect(panel).to_be_visible()
            # plotly draws one path.point per marker; trace 4 (0-based 3) holds the versions
            versions = panel.locator(".scatterlayer .trace").nth(3).locator("path.point")
            expect(versions).to_have_count(5)
            expect(panel.locator(".scatterlayer .trace").nth(2).locator("path.point")).to_have_count(1)
            expect(panel.locator(".legend .traces")).to_have_count(4)  # create, update, rollback, branch

            diff = panel.locator(".widget-html", has_text="Changes from")
            expect(diff).to_contain_text("Changes from v4 to v5")  # opening shows the latest change
            expect(diff).to_contain_text("note")

            # choose B = v3 (the tuning branch) in the dropdown: the kernel computes the new diff
            b_select = panel.locator(".widget-dropdown", has=page.locator("label", has_text="B (to)")).locator(
                "select")
            texts = [t.replace("\xa0", " ") for t in b_select.locator("option").all_text_contents()]
            assert [t.split(" ")[0] for t in texts] == ["v5", "v4", "v3", "v2", "v1"], texts
            b_select.select_option(index=2)  # v3
            expect(diff).to_contain_text("Changes from v4 to v3")
            expect(diff).to_contain_text("params.lr")
            expect(diff).to_contain_text("0.05")

            # click the marker of v2: it becomes B and the previous B (v3) becomes A
            box = versions.nth(1).bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_timeout(300)  # plotly decides what a click hits from the hover
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            expect(diff).to_contain_text("Changes from v3 to v2")
            assert b_select.evaluate("s => s.selectedIndex") == 3  # the dropdown follows: v2

            # roll main back to v1, through the confirmation step
            b_select.select_option(index=4)  # v1
            expect(diff).to_contain_text("Changes from v3 to v1")  # the dropdown changes only B
            confirm = panel.locator("button", has_text="Confirm")
            expect(confirm).to_be_hidden()
            panel.locator("button", has_text="Roll back to B").click()
            expect(panel).to_contain_text("Roll main back to v1?")
            confirm.click()
            expect(versions).to_have_count(6)  # the kernel's observer redrew the timeline
            expect(panel).to_contain_text("Rolled main back to v1: new version v6")
            expect(diff).to_contain_text("Changes from v5 to v6")
            expect(confirm).to_be_hidden()

            page.mouse.move(5, 5)  # no hover label in the picture
            page.wait_for_timeout(300)
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(ARTIFACTS / "panel-time.png"))

            # these saves came in a burst: spread them out by version number
            panel.locator("button", has_text="version").click()
            expect(panel.locator(".xtitle")).to_have_text("version")
            expect(versions).to_have_count(6)
            page.mouse.move(5, 5)
            page.wait_for_timeout(500)
            ticks = [t.strip() for t in panel.locator(".xtick text").all_text_contents()]
            assert ticks and all(t.isdigit() for t in ticks), ticks
            panel.screenshot(path=str(ARTIFACTS / "panel.png"))
            page.screenshot(path=str(ARTIFACTS / "panel-page.png"))
            assert not [e for e in errors if "plotly" in e.lower() or "widget" in e.lower()], errors
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"))
            raise
        finally:
            context.close()
