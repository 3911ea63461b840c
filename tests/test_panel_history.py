"""The panel shows history as data: merge arcs between lanes, tags, and the code behind a version in the hover.

Checked on the figure's traces as the browser receives them (``get_state()``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from statekit import StateManager
from statekit.lineage import of_entity
from statekit.panels import StatePanel, marks, panel
from statekit.panels import figure as pf


@pytest.fixture
def open_panels() -> Any:
    made: list[StatePanel] = []
    yield made
    for p in made:
        p.close()


def trace(p: StatePanel, index: int) -> dict[str, Any]:
    return p.figure.get_state()["_widget_data"][index]


def lines(t: dict[str, Any]) -> list[tuple[Any, Any, Any, Any]]:
    """(x0, y0, x1, y1) of each None-separated line of a trace."""
    xs, ys = list(t["x"]), list(t["y"])
    out, start = [], 0
    for i, x in enumerate([*xs, None]):
        if x is None:
            if i > start:
                out.append((xs[start], ys[start], xs[i - 1], ys[i - 1]))
            start = i + 1
    return out


def merged_store(sm: StateManager) -> None:
    sm.save("exp", {"a": 1, "b": 1})  # v1 main
    sm.create_branch("exp", "side", 1)
    sm.save("exp", {"a": 1, "b": 2}, branch="side")  # v2 side
    sm.save("exp", {"a": 5, "b": 1})  # v3 main
    sm.save("exp", {"a": 1, "b": 3}, branch="side")  # v4 side
    sm.merge("exp", "side")  # v5 main, second parent v4


def test_a_merge_is_an_arc_from_its_second_parent(sm: StateManager, open_panels: list[StatePanel]) -> None:
    merged_store(sm)
    p = panel(sm, "exp")
    open_panels.append(p)
    markers = trace(p, pf.MARKERS)
    pos = {v: (x, y) for v, x, y in zip(markers["customdata"], markers["x"], markers["y"], strict=True)}
    assert pos[4][1] == 1 and pos[5][1] == 0  # side lane, main lane
    arcs = trace(p, pf.MERGES)
    assert lines(arcs) == [(*pos[4], *pos[5])]  # from v4 (side) to the merge v5 (main), not from v2
    assert arcs["line"]["color"] == pf.KIND_COLOURS["merge"] and arcs["line"]["shape"] == "spline"
    assert 0 < arcs["y"][1] < 1 + pf.ARC_HEIGHT  # bowed between the lanes
    assert list(markers["marker"]["color"])[4] == pf.KIND_COLOURS["merge"]
    legend = [t["name"] for t in p.figure.get_state()["_widget_data"][pf.SELECTION + 1:]]
    assert "merge" in legend
    # the first parent stays a plain edge along main: v3 -> v5
    assert (*pos[3], *pos[5]) in lines(trace(p, pf.EDGES))
    # in version mode the arc still joins v4 and v5
    p.x_axis.value = "version"
    assert lines(p.figure.data[pf.MERGES].to_plotly_json()) == [(4, 1, 5, 0)]


def test_tags_are_marked_and_in_the_hover(sm: StateManager, open_panels: list[StatePanel]) -> None:
    for i in range(4):
        sm.save("exp", {"step": i})
    sm.tag("exp", "baseline", 1)
    sm.tag("exp", "best", 3)
    sm.tag("exp", "<paper>", 3)
    p = panel(sm, "exp")
    open_panels.append(p)
    tags = trace(p, pf.TAGS)
    markers = trace(p, pf.MARKERS)
    x_of = dict(zip(markers["customdata"], markers["x"], strict=True))
    assert list(tags["x"]) == [x_of[1], x_of[3]] and list(tags["y"]) == [0, 0]
    assert list(tags["text"]) == ["baseline", "best, &lt;paper&gt;"]  # escaped: plotly reads HTML in text
    assert tags["marker"]["symbol"] == "star" and tags["marker"]["color"] == pf.KIND_COLOURS["tag"]
    assert "baseline" in markers["hovertext"][0] and "tags" not in markers["hovertext"][1]
    legend = [t["name"] for t in p.figure.get_state()["_widget_data"][pf.SELECTION + 1:]]
    assert legend == ["create", "update", "tag"]
    # a tag set while the panel is open shows after the refresh its event triggers
    sm.tag("exp", "later", 4)
    assert list(p.figure.data[pf.TAGS].text)[-1] == "later"
    static = p.static_html()
    assert "<td>later</td>" in static and "<td>best, &lt;paper&gt;</td>" in static  # the latest-versions table


def test_the_hover_shows_the_code_that_made_a_version(sm: StateManager, open_panels: list[StatePanel]) -> None:
    sm.save("exp", {"x": 1})
    sm.save("exp", {"x": 2}, lineage={"cells": [{"execution_count": 7, "source": "x = f(df)\nif x:\n    y = '<b>'"}],
                                      "reads": ["df"]})
    long_cell = "\n".join(f"step_{i} = {i}" for i in range(100)) + "\n" + "z = '" + "w" * 500 + "'"
    sm.save("exp", {"x": 3}, lineage={"cells": [{"execution_count": 8, "source": long_cell}], "reads": []})
    p = panel(sm, "exp")
    open_panels.append(p)
    hover = list(trace(p, pf.MARKERS)["hovertext"])
    assert "In [" not in hover[0]  # no lineage recorded
    assert "In [7]:" in hover[1] and "x = f(df)" in hover[1] and "&nbsp;" * 4 + "y = '&lt;b&gt;'" in hover[1]
    assert "read: df" in hover[1]
    assert "In [8]:" in hover[2] and "step_0 = 0" in hover[2] and "step_99" not in hover[2]
    assert "more lines: %state show 3 --code" in hover[2] and len(hover[2]) < 2_000


def test_lineage_is_read_for_the_whole_entity_at_once(sm: StateManager) -> None:
    sm.save("a", {"x": 1}, lineage={"cells": [{"execution_count": 1, "source": "x = 1"}]})
    sm.save("a", {"x": 2})
    sm.save("a", {"x": 3}, lineage={"cells": [{"execution_count": 2, "source": "x = 3"}]})
    sm.save("b", {"x": 1}, lineage={"cells": [{"execution_count": 9, "source": "other"}]})
    found = of_entity(sm, "a")
    assert found == {1: {"cells": [{"execution_count": 1, "source": "x = 1"}]},
                     3: {"cells": [{"execution_count": 2, "source": "x = 3"}]}}
    assert found[3] == sm.get("a", 3).lineage


def test_damaged_lineage_is_named_in_the_hover_not_shown(sm: StateManager, open_panels: list[StatePanel]) -> None:
    snap = sm.save("exp", {"x": 1}, lineage={"cells": [{"execution_count": 1, "source": "secret = 1"}]})
    stored = '{"sha256": "0", "value": {"cells": [{"execution_count": 1, "source": "forged = 1"}]}}'
    with sm.db.write() as conn:
        conn.exec_driver_sql("UPDATE state_snapshots SET lineage = %s WHERE snapshot_id = %s"
                             if not sm.db.is_sqlite else "UPDATE state_snapshots SET lineage = ? WHERE snapshot_id = ?",
                             (stored, snap.snapshot_id))
    p = panel(sm, "exp")
    open_panels.append(p)
    hover = trace(p, pf.MARKERS)["hovertext"][0]
    assert "lineage damaged" in hover and "forged" not in hover


def test_code_hover_on_odd_lineage_values() -> None:
    assert marks.code_hover({}, 1) == ""
    assert marks.code_hover({"cells": "not a list"}, 1) == ""
    assert marks.code_hover({"cells": [None, {"source": "a\tb"}]}, 2) == "<b>code</b><br>In [?]:<br>a   b"
