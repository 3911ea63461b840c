"""The state panel's timeline: history metadata -> plotly traces.

Kept apart from the widget wiring so it can be built and checked without any
widget: it reads only ``history()``, ``transitions()`` and ``branches()``
frames (metadata, never payloads). Time runs along x (UTC), each branch is a
lane on y, each version a marker coloured by its kind. Grey lines join parent
and child (so a branch's first version visibly leaves its base lane), a
diamond marks where a branch was created, and a dashed line runs from a
rollback's target to the version the rollback made.

The traces come in a fixed order, so the panel can refresh a live figure in
place (one message to the browser) and keep the user's zoom (``uirevision``).
"""

from __future__ import annotations

import bisect
import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..formatting import human_bytes
from ..models import MAIN_BRANCH
from . import marks

KIND_COLOURS: dict[str, str] = {
    "create": "#2ca02c",
    "update": "#1f77b4",
    "rollback": "#d62728",
    "branch": "#9467bd",
    "restore": "#17becf",
    "recover": "#8c564b",
    "expire": "#7f7f7f",
    "merge": "#e377c2",
    "tag": "#bcbd22",
    "retain": "#ff7f0e",
}
"""One fixed colour per kind of transition, so colours mean the same in every panel."""
OTHER_COLOUR = "#000000"

GL_THRESHOLD = 500
"""Above this many versions the markers are drawn with WebGL (Scattergl) to stay fluid."""
MAX_LABELS = 30
"""At most about this many ``vN`` labels are written on the chart; hover shows every version."""

ARC_HEIGHT = 0.35
"""How far (in lanes) a rollback's dashed arc rises above its lane."""

EDGES, ROLLBACKS, BRANCH_POINTS, MARKERS, LABELS, MERGES, TAGS, SELECTION = range(8)
"""Trace indexes; legend-only traces for each kind present follow SELECTION. The ``vN``
labels are a trace of their own (always SVG: WebGL text misplaces labels on date axes)."""


def cell_text(v: Any) -> str | None:
    """A cell as text, None for missing values (history has NaN where a message is None)."""
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def utc_naive(ts: Any) -> pd.Timestamp:
    """A naive UTC timestamp: plotly.js reads offsets in date strings badly, so the axis is plain UTC."""
    t = pd.Timestamp(ts)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


@dataclass
class Timeline:
    """Everything the chart shows, as plain lists (easy to check in tests)."""

    x_mode: str = "time"
    lanes: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    times: list[pd.Timestamp] = field(default_factory=list)
    x: list[Any] = field(default_factory=list)
    """The save time (naive UTC) or, with x_mode="version", the version number."""
    y: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    hover: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    """(parent, child) version pairs drawn as solid lines (through a branch point where there is one)."""
    rollbacks: list[tuple[int, int]] = field(default_factory=list)
    """(target, new) version pairs drawn dashed."""
    branch_points: list[dict[str, Any]] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)
    merges: list[tuple[int, int]] = field(default_factory=list)
    """(second parent, merge version) pairs drawn as arcs between lanes."""
    tags: dict[int, list[str]] = field(default_factory=dict)
    """version -> its tags, written beside its marker."""

    @property
    def lane_index(self) -> dict[str, int]:
        """Branch -> its lane's y value (lanes are numbered, labelled with the branch names)."""
        return {b: i for i, b in enumerate(self.lanes)}

    def position(self, version: int) -> tuple[Any, str] | None:
        """Where ``version`` sits: (x, branch)."""
        try:
            i = self.versions.index(version)
        except ValueError:
            return None
        return self.x[i], self.y[i]


X_MODES = ("time", "version")
"""x is the save time (the default), or the version number: evenly spaced, for bursts of saves."""


def build_timeline(history: pd.DataFrame, transitions: pd.DataFrame | None = None,
                   branches: pd.DataFrame | None = None, *, x_mode: str = "time",
                   lineage: dict[int, Any] | None = None) -> Timeline:
    """Turn an entity's history (all branches), transitions, branches and lineage into a Timeline.

    ``lineage``: version -> the lineage recorded with it (``statekit.lineage.of_entity``), shown in the hover.
    """
    if x_mode not in X_MODES:
        raise ValueError(f"x_mode must be one of {X_MODES}, not {x_mode!r}")
    tl = Timeline(x_mode=x_mode)
    hist = history.sort_values("version") if len(history) else history
    branch_rows = branches if branches is not None else pd.DataFrame(
        columns=["branch", "head_version", "base_version", "created_at"])
    lanes = [MAIN_BRANCH] if (MAIN_BRANCH in set(hist.get("branch", [])) or
                              MAIN_BRANCH in set(branch_rows["branch"])) else []
    for b in [*branch_rows["branch"], *hist.get("branch", [])]:
        if b not in lanes:
            lanes.append(b)
    tl.lanes = lanes
    for b, head in zip(branch_rows["branch"], branch_rows["head_version"], strict=True):
        if cell_text(head) is not None:
            tl.heads[b] = int(head)

    n = len(hist)
    every = max(1, math.ceil(n / MAX_LABELS))
    head_versions = set(tl.heads.values())
    tl.tags = marks.tag_names(transitions)
    lineage = lineage or {}
    for i, row in enumerate(hist.itertuples(index=False)):
        v = int(row.version)
        kind = str(row.kind)
        when = utc_naive(row.created_at)
        tl.versions.append(v)
        tl.times.append(when)
        tl.x.append(when if x_mode == "time" else v)
        tl.y.append(str(row.branch))
        tl.kinds.append(kind)
        tl.labels.append(f"v{v}" if (i % every == 0 or i == n - 1 or v in head_versions) else "")
        msg, actor = cell_text(row.message), cell_text(row.actor)
        parts = [
            f"<b>v{v}</b> · {html.escape(str(row.branch))} · {html.escape(kind)}",
            f"{when:%Y-%m-%d %H:%M:%S} UTC",
            html.escape(shorten(msg, 80)) if msg else "<i>no message</i>",
            f"by {html.escape(actor)}" if actor else "by ?",
            f"size {human_bytes(row.size_bytes)} (new {human_bytes(row.new_bytes)})",
        ]
        if v in tl.tags:
            parts.append("tags: " + ", ".join(f"<b>{html.escape(t)}</b>" for t in tl.tags[v]))
        if v in lineage:
            code = marks.code_hover(lineage[v], v) if lineage[v] is not None else "<i>lineage damaged</i>"
            if code:
                parts.append(code)
        tl.hover.append("<br>".join(parts))

    known = set(tl.versions)
    when_of = dict(zip(tl.versions, tl.times, strict=True))
    # where a branch starts: the base version's lane -> a diamond in the branch's own lane
    for b, base, created in zip(branch_rows["branch"], branch_rows["base_version"], branch_rows["created_at"],
                                strict=True):
        if cell_text(base) is None or int(base) not in known:
            continue
        when = max(utc_naive(created), when_of[int(base)])
        if x_mode == "version":  # half a step before the first version saved after the branch was made
            later = bisect.bisect_right(tl.times, when)
            x: Any = (tl.versions[later] - 0.5) if later < len(tl.versions) else tl.versions[-1] + 0.5
            x = max(x, int(base) + 0.5)
        else:
            x = when
        tl.branch_points.append({"branch": b, "base": int(base), "x": x, "y": b,
                                 "hover": f"branch <b>{html.escape(b)}</b> from v{int(base)}<br>"
                                          f"{utc_naive(created):%Y-%m-%d %H:%M:%S} UTC"})
    for row in hist.itertuples(index=False):
        parent = cell_text(row.parent_version)
        if parent is not None and int(parent) in known:
            tl.edges.append((int(parent), int(row.version)))
    if transitions is not None and len(transitions):
        for t in transitions.itertuples(index=False):
            if str(t.transition_type) != "rollback" or not isinstance(t.metadata, dict):
                continue
            target, new = t.metadata.get("target_version"), cell_text(t.to_version)
            if target is not None and new is not None and int(target) in known and int(new) in known:
                tl.rollbacks.append((int(target), int(new)))
    tl.merges = [(a, b) for a, b in marks.merge_pairs(hist, transitions) if a in known and b in known]
    tl.tags = {v: names for v, names in tl.tags.items() if v in known}
    return tl


def shorten(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _segments(pairs: list[tuple[Any, Any, Any, Any]]) -> tuple[list[Any], list[Any]]:
    """Line segments as one trace: x/y lists with None between segments."""
    xs: list[Any] = []
    ys: list[Any] = []
    for x0, y0, x1, y1 in pairs:
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    return xs, ys


def _arcs(pairs: list[tuple[Any, float, Any, float]]) -> tuple[list[Any], list[Any]]:
    """Rollback edges as arcs above the lanes (a spline through a raised midpoint), so they do
    not hide under the parent -> child line that runs along the same lane."""
    xs: list[Any] = []
    ys: list[Any] = []
    for x0, y0, x1, y1 in pairs:
        xs += [x0, x0 + (x1 - x0) / 2, x1, None]
        ys += [y0, max(y0, y1) + ARC_HEIGHT, y1, None]
    return xs, ys


def _merge_arcs(pairs: list[tuple[Any, float, Any, float]]) -> tuple[list[Any], list[Any]]:
    """Merge edges: from the second parent to the merge, bowed away from the straight line between lanes."""
    xs: list[Any] = []
    ys: list[Any] = []
    for x0, y0, x1, y1 in pairs:
        xs += [x0, x0 + (x1 - x0) / 2, x1, None]
        ys += [y0, (y0 + y1) / 2 + ARC_HEIGHT / 2, y1, None]
    return xs, ys


def timeline_traces(tl: Timeline, selected: tuple[int | None, int | None] = (None, None)) -> list[dict[str, Any]]:
    """The traces, in the fixed order EDGES, ROLLBACKS, BRANCH_POINTS, MARKERS, LABELS, MERGES, TAGS, SELECTION,
    then the legend."""
    lane = tl.lane_index
    pos = {v: (x, lane[y]) for v, x, y in zip(tl.versions, tl.x, tl.y, strict=True)}
    bp = {(p["branch"], p["base"]): p for p in tl.branch_points}
    segments = []
    for parent, child in tl.edges:
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        point = bp.get((tl.lanes[int(y1)], parent)) if y0 != y1 else None
        if point is not None:  # route the branch's first version through its branch point
            segments.append((point["x"], lane[point["y"]], x1, y1))
        else:
            segments.append((x0, y0, x1, y1))
    for p in tl.branch_points:
        x0, y0 = pos[p["base"]]
        segments.append((x0, y0, p["x"], lane[p["y"]]))
    ex, ey = _segments(segments)
    rx, ry = _arcs([(*pos[a], *pos[b]) for a, b in tl.rollbacks])
    mx, my = _merge_arcs([(*pos[a], *pos[b]) for a, b in tl.merges])
    tagged = [v for v in tl.versions if v in tl.tags]
    marker_type = "scattergl" if len(tl.versions) > GL_THRESHOLD else "scatter"
    small = len(tl.versions) > 200
    ring = selection_points(tl, selected)
    traces: list[dict[str, Any]] = [
        {"type": "scatter", "name": "parent → child", "x": ex, "y": ey, "mode": "lines",
         "line": {"color": "#9a9a9a", "width": 1.5}, "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "name": "rollback to", "x": rx, "y": ry, "mode": "lines",
         "line": {"color": KIND_COLOURS["rollback"], "width": 1.5, "dash": "dash", "shape": "spline"},
         "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "name": "branch point", "x": [p["x"] for p in tl.branch_points],
         "y": [lane[p["y"]] for p in tl.branch_points], "mode": "markers",
         "marker": {"symbol": "diamond", "size": 11, "color": KIND_COLOURS["branch"]},
         "hovertext": [p["hover"] for p in tl.branch_points], "hoverinfo": "text", "showlegend": False},
        {"type": marker_type, "name": "versions", "x": list(tl.x), "y": [lane[b] for b in tl.y],
         "mode": "markers", "customdata": list(tl.versions),
         "marker": {"size": 7 if small else 12, "color": [KIND_COLOURS.get(k, OTHER_COLOUR) for k in tl.kinds],
                    "line": {"width": 0 if small else 1, "color": "#ffffff"}},
         "hovertext": list(tl.hover), "hoverinfo": "text", "showlegend": False},
        {"type": "scatter", "name": "labels", "x": [x for x, t in zip(tl.x, tl.labels, strict=True) if t],
         "y": [lane[b] for b, t in zip(tl.y, tl.labels, strict=True) if t], "text": [t for t in tl.labels if t],
         "mode": "markers+text", "textposition": "top center", "textfont": {"size": 10, "color": "#444444"},
         # an invisible marker as big as a version's, so the label sits above it, not on it
         "marker": {"size": 7 if small else 14, "opacity": 0}, "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "name": "merged from", "x": mx, "y": my, "mode": "lines",
         "line": {"color": KIND_COLOURS["merge"], "width": 2, "shape": "spline"},
         "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "name": "tags", "x": [pos[v][0] for v in tagged], "y": [pos[v][1] for v in tagged],
         "text": [html.escape(", ".join(tl.tags[v])) for v in tagged], "mode": "markers+text", "textposition": "bottom center",
         "textfont": {"size": 10, "color": "#6b6b00"},
         "marker": {"symbol": "star", "size": 9, "color": KIND_COLOURS["tag"], "line": {"width": 0}},
         "hovertext": [f"tag{'s' if len(tl.tags[v]) > 1 else ''} <b>{html.escape(', '.join(tl.tags[v]))}</b> on v{v}"
                       for v in tagged], "hoverinfo": "text", "showlegend": False},
        {"type": "scatter", "name": "selected", **ring, "mode": "markers+text",
         "textposition": "bottom center", "textfont": {"size": 12, "color": "#000000"},
         "marker": {"symbol": "circle-open", "size": 20, "color": "#000000", "line": {"width": 2}},
         "hoverinfo": "skip", "showlegend": False},
    ]
    present = list(dict.fromkeys(tl.kinds + (["branch"] if tl.branch_points else [])
                                 + (["tag"] if tagged else [])))
    for kind in sorted(present, key=lambda k: list(KIND_COLOURS).index(k) if k in KIND_COLOURS else 99):
        traces.append({"type": "scatter", "name": kind, "x": [None], "y": [None], "mode": "markers",
                       "marker": {"size": 10, "color": KIND_COLOURS.get(kind, OTHER_COLOUR),
                                  "symbol": {"branch": "diamond", "tag": "star"}.get(kind, "circle")},
                       "hoverinfo": "skip", "showlegend": True})
    return traces


def timeline_layout(tl: Timeline, entity: str | None, *, title: bool = False) -> dict[str, Any]:
    """Axes, legend and size; ``uirevision`` keeps the user's zoom when the data is refreshed.

    Lanes are numbered on y and labelled with branch names (a numeric axis,
    so rollback arcs can rise between lanes). ``title`` names the entity, for
    the static figure; the live panel says it in its summary line.
    """
    lanes = tl.lanes or [MAIN_BRANCH]
    n = len(tl.versions)
    layout: dict[str, Any] = {
        "height": min(600, 200 + 50 * len(lanes)),
        "autosize": True,
        "margin": {"l": 80, "r": 20, "t": 40 if title else 30, "b": 45},
        "xaxis": ({"title": {"text": "time (UTC)"}, "type": "date", "showgrid": True, **_x_range(tl)}
                  if tl.x_mode == "time" else
                  {"title": {"text": "version"}, "type": "linear", "showgrid": True, "autorange": True,
                   "tickformat": "d"}),
        "yaxis": {"type": "linear", "tickmode": "array", "tickvals": list(range(len(lanes))),
                  "ticktext": [html.escape(b) for b in lanes], "range": [-0.6, len(lanes) - 0.4],
                  "zeroline": False, "showgrid": True},
        "hovermode": "closest",
        "dragmode": "zoom",
        "showlegend": True,
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom",
                   "title": {"text": "kind"}},
        "uirevision": f"{entity or ''}|{tl.x_mode}",  # a new entity or x axis resets the zoom
        "template": "plotly_white",
    }
    if title:
        text = f"{entity}: {n} version{'s' if n != 1 else ''}" if entity else "no entity"
        layout["title"] = {"text": html.escape(text), "x": 0.01, "y": 0.98, "font": {"size": 14}}
    return layout


def _x_range(tl: Timeline) -> dict[str, Any]:
    """Autorange, except around a single moment, where plotly would zoom to milliseconds."""
    if tl.x_mode == "time" and tl.x and min(tl.x) == max(tl.x):
        pad = pd.Timedelta(minutes=1)
        return {"autorange": False, "range": [tl.x[0] - pad, tl.x[0] + pad]}
    return {"autorange": True}


def build_figure(tl: Timeline, entity: str | None, selected: tuple[int | None, int | None] = (None, None),
                 *, widget: bool = True) -> go.Figure:
    """A new FigureWidget (or, with ``widget=False``, a static Figure) for the timeline."""
    if not widget:
        return go.Figure(data=timeline_traces(tl, selected), layout=timeline_layout(tl, entity, title=True))
    fig = go.FigureWidget(data=timeline_traces(tl, selected), layout=timeline_layout(tl, entity))
    fig._config = {**fig._config, "responsive": True, "displaylogo": False}  # fill the panel's width
    return fig


def update_figure(fig: go.FigureWidget, tl: Timeline, entity: str | None,
                  selected: tuple[int | None, int | None] = (None, None)) -> bool:
    """Bring a live figure up to date; returns True when the traces had to be replaced.

    When the traces keep their types and names (the usual case: one more
    version) they are updated in place in one batch; otherwise (a new kind in
    the legend, or the switch to WebGL past GL_THRESHOLD versions) they are
    replaced, and the caller must re-register its click handler.
    """
    traces = timeline_traces(tl, selected)
    same = len(traces) == len(fig.data) and all(
        t["type"] == f.type and t["name"] == f.name for t, f in zip(traces, fig.data, strict=True)
    )
    with fig.batch_update():
        fig.layout.update(timeline_layout(tl, entity))
        if same:
            for spec, trace in zip(traces, fig.data, strict=True):
                trace.update({k: v for k, v in spec.items() if k != "type"})
    if not same:
        fig.data = ()
        fig.add_traces(traces)
    return not same


def update_selection(fig: go.BaseFigure, tl: Timeline, selected: tuple[int | None, int | None]) -> None:
    """Move the A/B rings to the chosen versions (a small update: only the SELECTION trace)."""
    fig.data[SELECTION].update(selection_points(tl, selected))


def selection_points(tl: Timeline, selected: tuple[int | None, int | None]) -> dict[str, list[Any]]:
    """x, y and the A/B labels of the rings drawn around the chosen versions."""
    xs, ys, texts = [], [], []
    for tag, v in zip(("A", "B"), selected, strict=True):
        p = tl.position(v) if v is not None else None
        if p is not None:
            xs.append(p[0])
            ys.append(tl.lane_index[p[1]])
            texts.append(tag)
    return {"x": xs, "y": ys, "text": texts}
