"""The state panel without a browser: traits, get_state() and the messages a browser would receive.

Written once and run on SQLite and PostgreSQL (the ``sm`` fixture). A click on
the timeline is simulated with the exact message plotly's frontend sends
(``_js2py_pointsCallback``); buttons with ``Button.click()``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nbformat
import pandas as pd
import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.core.interactiveshell import InteractiveShell
from nbconvert import HTMLExporter

import statekit
from statekit import InvalidArgumentError, StateManager
from statekit.panels import ROLLBACK_REASON, StatePanel, panel
from statekit.panels import figure as pf

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def open_panels() -> Any:
    made: list[StatePanel] = []
    yield made
    for p in made:
        p.close()


def make_panel(open_panels: list[StatePanel], *args: Any, **kwargs: Any) -> StatePanel:
    p = panel(*args, **kwargs)
    open_panels.append(p)
    return p


def widget_trace(p: StatePanel, index: int) -> dict[str, Any]:
    """A trace as the browser receives it when the panel is first displayed."""
    return p.figure.get_state()["_widget_data"][index]


def sent_to_browser(fig: Any) -> list[tuple[str, dict[str, Any]]]:
    """Record the update messages the FigureWidget sends to its views."""
    messages: list[tuple[str, dict[str, Any]]] = []
    fig.observe(lambda c: messages.append((c["name"], c["new"])) if c["new"] else None,
                names=["_py2js_update", "_py2js_restyle", "_py2js_relayout", "_py2js_addTraces",
                       "_py2js_deleteTraces"])
    return messages


def click_marker(p: StatePanel, version: int) -> None:
    """What plotly.js sends when the user clicks the marker of ``version``."""
    i = p.timeline.versions.index(version)
    x, y = p.timeline.x[i], p.timeline.y[i]
    p.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [pf.MARKERS], "point_indexes": [i], "xs": [str(x)], "ys": [y]},
        "device_state": {"ctrl": False, "alt": False, "shift": False, "meta": False, "button": 0, "buttons": 1},
        "selector": None,
    }


def segments(trace: dict[str, Any]) -> list[tuple[Any, Any, Any, Any]]:
    """(x0, y0, x1, y1) of each line in a trace whose lines are separated by None."""
    xs, ys = list(trace["x"]), list(trace["y"])
    out, start = [], 0
    for i, x in enumerate([*xs, None]):
        if x is None:
            if i > start:
                out.append((xs[start], ys[start], xs[i - 1], ys[i - 1]))
            start = i + 1
    return out


def test_n_saves_give_n_markers_coloured_by_kind(sm: StateManager, open_panels: list[StatePanel]) -> None:
    for i in range(5):
        sm.save("exp", {"step": i, "params": {"lr": 0.1 * i}}, message=f"step {i}", actor="ana")
    p = make_panel(open_panels, sm, "exp")
    assert isinstance(p, StatePanel) and p.entity == "exp"
    markers = widget_trace(p, pf.MARKERS)
    assert markers["type"] == "scatter" and markers["name"] == "versions"
    assert list(markers["customdata"]) == [1, 2, 3, 4, 5]
    assert len(markers["x"]) == 5 and set(markers["y"]) == {0}
    assert list(p.figure.get_state()["_widget_layout"]["yaxis"]["ticktext"]) == ["main"]
    colours = list(markers["marker"]["color"])
    assert colours[0] == pf.KIND_COLOURS["create"] and set(colours[1:]) == {pf.KIND_COLOURS["update"]}
    hover = markers["hovertext"][2]
    assert "v3" in hover and "step 2" in hover and "ana" in hover and " B" in hover and "UTC" in hover
    legend = [t["name"] for t in p.figure.get_state()["_widget_data"][pf.SELECTION + 1:]]
    assert legend == ["create", "update"]
    # opening shows the latest change: v4 -> v5
    assert (p.version_a.value, p.version_b.value) == (4, 5)
    assert [label for label, _v in p.version_b.options][0].startswith("v5 · main")


def test_one_version_and_a_thousand_stay_readable(store_url: str, open_panels: list[StatePanel]) -> None:
    sm = StateManager(store_url)
    try:
        sm.save("one", {"a": 1})
        p = make_panel(open_panels, sm, "one")
        assert list(widget_trace(p, pf.LABELS)["text"]) == ["v1"]
        assert (p.version_a.value, p.version_b.value) == (None, 1)
        assert p.diff_frame is not None and p.diff_frame["change"].tolist() == ["added"]
        assert "v1 against its parent" in p.diff_view.value

        if "postgresql" in store_url:
            return  # the 1,000-version case checks drawing, not the backend: once is enough
        sm.save_many({f"e{i}": {"i": i} for i in range(3)})  # other entities show in the picker
        for i in range(1000):
            sm.save("many", {"i": i}, message=f"step {i}")
        big = make_panel(open_panels, sm, "many")
        markers = widget_trace(big, pf.MARKERS)
        assert markers["type"] == "scattergl" and len(markers["x"]) == 1000
        labels = list(widget_trace(big, pf.LABELS)["text"])
        assert widget_trace(big, pf.LABELS)["type"] == "scatter"  # SVG text, even over WebGL markers
        assert 10 <= len(labels) <= pf.MAX_LABELS + 2 and labels[0] == "v1" and labels[-1] == "v1000"
        assert len(markers["hovertext"]) == 1000
        layout = big.figure.get_state()["_widget_layout"]
        assert layout["uirevision"] == "many|time" and layout["dragmode"] == "zoom"
        assert {"one", "many", "e0"} <= set(big.entity_picker.options)
    finally:
        sm.close()


def test_a_branch_and_a_rollback_show_as_lanes_and_edges(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1})
    sm.save("exp", {"a": 2})
    sm.save("exp", {"a": 3})
    sm.create_branch("exp", "tuning", 2)
    sm.save("exp", {"a": 20}, branch="tuning")  # v4 on tuning
    sm.rollback("exp", 1)  # v5 on main
    p = make_panel(open_panels, sm, "exp")
    yaxis = p.figure.get_state()["_widget_layout"]["yaxis"]
    names = dict(zip(yaxis["tickvals"], yaxis["ticktext"], strict=True))
    assert names == {0: "main", 1: "tuning"}  # one lane per branch
    markers = widget_trace(p, pf.MARKERS)
    lanes = {v: names[y] for v, y in zip(markers["customdata"], markers["y"], strict=True)}
    assert lanes == {1: "main", 2: "main", 3: "main", 4: "tuning", 5: "main"}
    assert list(markers["marker"]["color"])[4] == pf.KIND_COLOURS["rollback"]
    pos = {v: (x, y) for v, x, y in zip(markers["customdata"], markers["x"], markers["y"], strict=True)}

    branch_points = widget_trace(p, pf.BRANCH_POINTS)
    assert list(branch_points["y"]) == [1] and "from v2" in branch_points["hovertext"][0]
    bp = (branch_points["x"][0], 1)
    edges = segments(widget_trace(p, pf.EDGES))
    assert (*pos[1], *pos[2]) in edges and (*pos[2], *pos[3]) in edges and (*pos[3], *pos[5]) in edges
    assert (*pos[2], *bp) in edges and (*bp, *pos[4]) in edges  # the branch leaves main at v2
    assert len(edges) == 5
    arcs = widget_trace(p, pf.ROLLBACKS)
    assert segments(arcs) == [(*pos[1], *pos[5])]  # dashed: from the target to the version the rollback made
    assert arcs["line"]["dash"] == "dash" and arcs["y"][1] > 0  # an arc above the main lane
    legend = [t["name"] for t in p.figure.get_state()["_widget_data"][pf.SELECTION + 1:]]
    assert legend == ["create", "update", "rollback", "branch"]

    sent = sent_to_browser(p.figure)
    p.x_axis.value = "version"  # evenly spaced: x is the version number
    assert sent and sent[-1][1]["layout_data"]["xaxis.type"] == "linear"
    assert list(p.figure.data[pf.MARKERS].x) == [1, 2, 3, 4, 5]
    assert list(p.figure.data[pf.BRANCH_POINTS].x) == [3.5]  # made after v3 was saved, before v4
    assert segments(p.figure.data[pf.ROLLBACKS].to_plotly_json()) == [(1, 0, 5, 0)]
    assert p.figure.layout.uirevision == "exp|version"


def test_choosing_versions_fills_the_diff_table(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"params": {"lr": 0.1, "depth": 3}, "note": "first"})
    sm.save("exp", {"params": {"lr": 0.05, "depth": 3}, "note": "first"})
    sm.save("exp", {"params": {"lr": 0.05, "depth": 5}, "rows": [1, 2]})
    p = make_panel(open_panels, sm, "exp")

    p.version_a.value = 1  # as the browser sets the dropdown
    p.version_b.value = 3
    expected = sm.diff("exp", 1, 3)
    pd.testing.assert_frame_equal(p.diff_frame, expected)
    assert set(expected["item"]) == {"params.lr", "params.depth", "note", "rows"}
    html = p.diff_view.get_state()["value"]
    assert "Changes from v1 to v3" in html and "params.lr" in html and "removed" in html and "<table" in html
    ring = p.figure.data[pf.SELECTION]
    assert list(ring.text) == ["A", "B"] and list(ring.x) == [p.timeline.x[0], p.timeline.x[2]]

    click_marker(p, 2)  # a click makes v2 the new B; the old B (v3) becomes A
    assert (p.version_a.value, p.version_b.value) == (3, 2)
    pd.testing.assert_frame_equal(p.diff_frame, sm.diff("exp", 3, 2))
    assert "Changes from v3 to v2" in p.diff_view.value
    click_marker(p, 2)  # clicking B again changes nothing
    assert (p.version_a.value, p.version_b.value) == (3, 2)

    p.version_a.value = 2  # the same version on both sides
    assert p.diff_frame is not None and len(p.diff_frame) == 0 and "no differences" in p.diff_view.value
    with pytest.raises(InvalidArgumentError):
        p.select(1, 99)


def test_a_new_save_updates_the_figure(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1})
    sm.save("exp", {"a": 2})
    p = make_panel(open_panels, sm, "exp")
    sent = sent_to_browser(p.figure)
    sm.save("exp", {"a": 3}, message="third")
    assert list(p.figure.data[pf.MARKERS].customdata) == [1, 2, 3]
    updates = [m for name, m in sent if name == "_py2js_update"]
    assert updates, "the browser was not told about the new version"
    style = updates[-1]["style_data"]
    assert [1, 2, 3] in style["customdata"] and pf.MARKERS in updates[-1]["style_traces"]
    assert [v for _l, v in p.version_b.options] == [3, 2, 1]
    assert "3 versions" in p.summary.value
    assert (p.version_a.value, p.version_b.value) == (1, 2)  # the user's choice is kept

    sm.rollback("exp", 1)  # a new kind: the legend grows, traces are replaced, clicks still work
    assert any(name == "_py2js_addTraces" for name, _m in sent)
    assert [t.name for t in p.figure.data[pf.SELECTION + 1:]] == ["create", "update", "rollback"]
    click_marker(p, 4)
    assert p.version_b.value == 4

    sm.save("other", {"x": 1})  # a new entity appears in the picker
    assert "other" in p.entity_picker.options and p.entity == "exp"
    p.entity_picker.value = "other"
    assert p.entity == "other" and list(p.figure.data[pf.MARKERS].customdata) == [1]

    p.close()
    sm.save("other", {"x": 2})  # after close() the panel no longer listens
    assert list(p.figure.data[pf.MARKERS].customdata) == [1]


def test_in_an_event_loop_saves_refresh_once_after_the_cell(sqlite_url: str) -> None:
    """In a kernel, observers run inside the cell: the panel defers its refresh to the event loop."""
    sm = StateManager(sqlite_url)
    sm.save("exp", {"a": 0})
    sm.save("exp", {"a": 1})  # create and update: the legend will not change

    async def cell() -> tuple[list[int], list[int], int]:
        p = panel(sm, "exp")
        try:
            sent = sent_to_browser(p.figure)
            for i in range(2, 5):
                sm.save("exp", {"a": i})
            during = list(p.figure.data[pf.MARKERS].customdata)
            await asyncio.sleep(0)  # the cell ends: the loop runs what was scheduled
            await asyncio.sleep(0)
            return during, list(p.figure.data[pf.MARKERS].customdata), len(sent)
        finally:
            p.close()

    try:
        during, after, messages = asyncio.run(cell())
        assert during == [1, 2] and after == [1, 2, 3, 4, 5] and messages == 1
    finally:
        sm.close()


def test_a_new_panel_on_the_same_entity_closes_the_old_one(sm: StateManager,
                                                           open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1})
    sm.save("other", {"a": 1})
    first = make_panel(open_panels, sm, "exp")
    elsewhere = make_panel(open_panels, sm, "other")
    again = make_panel(open_panels, sm, "exp")  # e.g. the `%state panel` cell run again
    assert first.comm is None and first.figure.comm is None  # closed: its view leaves the page
    assert again.comm is not None and elsewhere.comm is not None
    sm.save("exp", {"a": 2})
    assert list(first.figure.data[pf.MARKERS].customdata) == [1]  # no longer refreshed
    assert list(again.figure.data[pf.MARKERS].customdata) == [1, 2]
    called = statekit.panel(sm, "other")  # the package-level entry point
    open_panels.append(called)
    assert isinstance(called, StatePanel) and called.entity == "other" and elsewhere.comm is None


def test_saves_from_elsewhere_show_after_refresh(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1})
    p = make_panel(open_panels, sm, "exp")
    elsewhere = StateManager(sm.url)  # another StateManager: its observers are not the panel's
    try:
        elsewhere.save("exp", {"a": 2})
        assert list(p.figure.data[pf.MARKERS].customdata) == [1]
        p.refresh_button.click()
        assert list(p.figure.data[pf.MARKERS].customdata) == [1, 2]
    finally:
        elsewhere.close()


def test_polling_notices_saves_from_elsewhere(sqlite_url: str) -> None:
    sm = StateManager(sqlite_url)
    elsewhere = StateManager(sqlite_url)
    sm.save("exp", {"a": 1})

    async def scenario() -> list[int]:
        p = panel(sm, "exp", poll=0.05)
        try:
            elsewhere.save("exp", {"a": 2})
            for _ in range(200):  # up to 10 s on a busy machine
                await asyncio.sleep(0.05)
                if len(p.figure.data[pf.MARKERS].customdata) == 2:
                    break
            return list(p.figure.data[pf.MARKERS].customdata)
        finally:
            p.close()

    try:
        assert asyncio.run(scenario()) == [1, 2]
        outside = panel(sm, "exp", poll=1)  # no event loop here: the panel says so instead of failing
        assert "Refresh" in outside.status.value
        outside.close()
    finally:
        sm.close()
        elsewhere.close()


@pytest.mark.kernel
@pytest.mark.slow
def test_in_a_kernel_the_panel_follows_saves_here_and_elsewhere(sqlite_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A real kernel: polling (kernel idle between cells) sees a save from a separate Python process;
    saves through the panel's StateManager show by the next cell."""
    from nbclient import NotebookClient

    monkeypatch.setenv("STATEKIT_URL", sqlite_url)
    cells = [
        "from statekit import StateManager\nfrom statekit.panels import panel\nsm = StateManager()\n"
        "sm.save('d', {'a': 1})\np = panel(sm, 'd', poll=0.2)\nprint(len(p.figure.data[3].x), repr(p.status.value))",
        "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'from statekit import StateManager; "
        "StateManager().save(\"d\", {\"a\": 2})'], check=True)\nprint(len(p.figure.data[3].x))",
        "print(len(p.figure.data[3].x))",
        "for i in range(3):\n    sm.save('d', {'a': 10 + i})",
        "print(len(p.figure.data[3].x), [v for _l, v in p.version_b.options][:2])",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        assert nb.cells[0].outputs[0]["text"].strip() == "1 ''"
        client.execute_cell(nb.cells[1], 1)
        assert nb.cells[1].outputs[0]["text"].strip() == "1"  # not pushed: another process saved
        for _ in range(60):  # the kernel is idle here; its loop runs the poller
            time.sleep(0.5)
            nb.cells[2].outputs = []
            client.execute_cell(nb.cells[2], 2)
            if nb.cells[2].outputs[0]["text"].strip() == "2":
                break
        assert nb.cells[2].outputs[0]["text"].strip() == "2"
        client.execute_cell(nb.cells[3], 3)  # saves through the panel's own StateManager, in the kernel
        client.execute_cell(nb.cells[4], 4)
        assert nb.cells[4].outputs[0]["text"].strip() == "5 [5, 4]"


def test_rollback_through_the_panel_moves_the_head(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1, "b": "x"})
    sm.save("exp", {"a": 2})
    sm.save("exp", {"a": 3})
    p = make_panel(open_panels, sm, "exp")
    p.version_b.value = 1

    p.rollback_button.click()
    assert p.confirm_box.layout.display == "flex" and "back to v1" in p.confirm_text.value
    p.cancel_button.click()
    assert p.confirm_box.layout.display == "none"
    assert sm.head_version("exp") == 3  # nothing happens without the confirmation

    p.rollback_button.click()
    p.confirm_button.click()
    assert p.confirm_box.layout.display == "none"
    assert sm.head_version("exp") == 4 and sm.load("exp") == {"a": 1, "b": "x"}
    last = sm.transitions("exp").iloc[-1]
    assert last["transition_type"] == "rollback" and last["reason"] == ROLLBACK_REASON
    assert last["metadata"]["target_version"] == 1 and last["to_version"] == 4
    assert "new version v4" in p.status.value
    assert list(p.figure.data[pf.MARKERS].customdata) == [1, 2, 3, 4]
    assert segments(p.figure.data[pf.ROLLBACKS].to_plotly_json()) == [(p.timeline.x[0], 0, p.timeline.x[3], 0)]
    assert (p.version_a.value, p.version_b.value) == (3, 4)  # shows what the rollback undid
    assert set(p.diff_frame["item"]) == {"a", "b"}

    p.rollback_button.click()  # v4 is the head now: nothing to do
    p.confirm_button.click()
    assert sm.head_version("exp") == 4 and "already the head" in p.status.value


def test_rollback_is_refused_when_someone_else_moved_the_head(sm: StateManager,
                                                               open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1})
    sm.save("exp", {"a": 2})
    p = make_panel(open_panels, sm, "exp")
    with StateManager(sm.url) as colleague:  # unseen by the panel (no poll, no refresh)
        colleague.save("exp", {"a": 3})
    p.version_b.value = 1
    p.rollback_button.click()
    p.confirm_button.click()
    assert "ConflictError" in p.status.value and "someone else saved first" in p.status.value
    assert sm.head_version("exp") == 3 and len(sm.history("exp")) == 3  # nothing was written
    p.refresh_button.click()
    p.version_b.value = 1
    p.rollback_button.click()
    p.confirm_button.click()
    assert sm.head_version("exp") == 4 and sm.load("exp") == {"a": 1}


def test_rollback_on_a_branch_stays_on_that_branch(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"a": 1})
    sm.create_branch("exp", "alt")
    sm.save("exp", {"a": 2}, branch="alt")  # v2
    sm.save("exp", {"a": 3}, branch="alt")  # v3
    p = make_panel(open_panels, sm, "exp")
    p.select(None, 2)
    p.rollback_button.click()
    p.confirm_button.click()
    assert sm.head_version("exp", "alt") == 4 and sm.head_version("exp") == 1
    assert sm.load("exp", branch="alt") == {"a": 2}


def test_load_through_the_panel(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"df": pd.DataFrame({"x": [1, 2]}), "k": 1})
    sm.save("exp", {"k": 2}, merge=True)
    p = make_panel(open_panels, sm, "exp")
    p.version_b.value = 1
    p.load_button.click()
    assert p.loaded is None and "df, k" in p.confirm_text.value
    p.confirm_button.click()
    assert p.loaded is not None and p.loaded["k"] == 1 and p.loaded["df"]["x"].tolist() == [1, 2]
    assert "panel.loaded" in p.status.value

    shell = InteractiveShell.instance()
    try:
        p.version_b.value = 2
        p.load_button.click()
        assert "namespace" in p.confirm_text.value
        p.confirm_button.click()
        assert shell.user_ns["k"] == 2 and shell.user_ns["df"]["x"].tolist() == [1, 2]
        assert "into the namespace" in p.status.value
    finally:
        InteractiveShell.clear_instance()


class Opaque:
    """A value only a signed pickle can store."""

    def __init__(self, n: int):
        self.n = n


def test_a_snapshot_someone_else_pickled_is_refused_in_the_panel(
        store_url: str, open_panels: list[StatePanel], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateManager(store_url, allow_pickle=True) as writer:
        writer.save("exp", {"a": 1})
        writer.save("exp", {"a": 2, "obj": Opaque(1)})
    monkeypatch.setenv("STATEKIT_KEY_FILE", str(tmp_path / "other-key"))  # another user's key
    reader = StateManager(store_url)
    try:
        p = make_panel(open_panels, reader, "exp")  # the timeline needs no payload
        assert list(p.figure.data[pf.MARKERS].customdata) == [1, 2]
        assert p.diff_frame is None and "Cannot diff v1 and v2" in p.status.value
        assert "not signed with your key" in p.status.value
        p.load_button.click()
        p.confirm_button.click()
        assert p.loaded is None and "UntrustedPayloadError" in p.status.value  # nothing loaded, said why
        p.version_b.value = 1  # the panel keeps working for the versions it can read
        assert p.diff_frame is not None and p.status.value == ""
    finally:
        reader.close()


def test_static_fallback_carries_the_figure_and_the_table(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"price": 10, "items": ["a"]}, message="first <cut>")
    sm.save("exp", {"price": 12, "items": ["a"]})
    p = make_panel(open_panels, sm, "exp")
    data, _meta = DisplayFormatter().format(p)  # what IPython sends to the frontend
    assert data[WIDGET_VIEW]["model_id"] == p.model_id
    html = data["text/html"]
    assert "cdn.plot.ly" in html and "Plotly.newPlot" in html and '"customdata":[1,2]' in html
    assert "Changes from v1 to v2" in html and "price" in html and "<table" in html
    assert "Latest versions" in html and "first &lt;cut&gt;" in html

    # nbconvert shows the static view when no widget state was saved with the notebook
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("statekit.panel()")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nb.cells.append(cell)
    body, _res = HTMLExporter().from_notebook_node(nb)
    assert "Changes from v1 to v2" in body and "Plotly.newPlot" in body


def test_an_empty_store_and_bad_arguments(sqlite_url: str, open_panels: list[StatePanel],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match="StateManager, a store URL or None"):
        panel(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="entity"):
        panel(sqlite_url, entity="")
    with pytest.raises(InvalidArgumentError, match="poll"):
        panel(sqlite_url, poll=-1)

    p = make_panel(open_panels, sqlite_url)  # a URL: the panel opens (and later closes) its own store
    assert p.entity is None and "No entities" in p.summary.value
    assert len(p.figure.data[pf.MARKERS].x) == 0 and p.load_button.disabled and p.rollback_button.disabled
    p.sm.save("first", {"a": 1})  # a save through the panel's own store: it shows at once
    assert p.entity == "first" and list(p.figure.data[pf.MARKERS].customdata) == [1]
    assert not p.load_button.disabled

    monkeypatch.setenv("STATEKIT_URL", sqlite_url)
    default = make_panel(open_panels)  # None: the default store
    assert default.entity == "first"
    unknown = make_panel(open_panels, sqlite_url, entity="notebook.ipynb")  # not saved yet
    assert unknown.entity == "notebook.ipynb" and "no versions yet" in unknown.summary.value
    assert unknown.diff_frame is None
