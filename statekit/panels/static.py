"""The state panel as plain HTML, for places where widgets cannot run.

nbconvert's HTML export shows an output's ``text/html`` when the notebook
carries no saved widget state, and GitHub's viewer never runs widgets. So the
panel's display bundle also holds this view: the timeline as a static plotly
figure (plotly.js from its CDN), the diff of the chosen versions and a table
of the latest versions. Where no scripts run at all (GitHub) the figure stays
blank but both tables still show.
"""

from __future__ import annotations

import pandas as pd

from ..formatting import human_bytes
from . import figure as pf

DIFF_ROWS_SHOWN = 200
"""The diff table shows at most this many rows; ``panel.diff_frame`` has them all."""
RECENT_ROWS = 10

TABLE_STYLE = (
    "<style>.statekit-table{border-collapse:collapse;font-size:12px;margin:2px 0 8px 0}"
    ".statekit-table th,.statekit-table td{border-bottom:1px solid #ddd;padding:2px 10px;text-align:left;"
    "vertical-align:top;max-width:420px;overflow-wrap:anywhere}.statekit-table th{background:#f3f3f3}</style>"
)


def diff_html(frame: pd.DataFrame, a: int | None, b: int | None) -> str:
    """A diff DataFrame as a titled HTML table (pandas escapes the values)."""
    title = f"Changes from v{a} to v{b}" if a is not None else f"v{b} against its parent"
    if not len(frame):
        return f"<p><b>{title}</b>: no differences.</p>"
    more = (f" (showing {DIFF_ROWS_SHOWN} of {len(frame)}; all are in <code>panel.diff_frame</code>)"
            if len(frame) > DIFF_ROWS_SHOWN else "")
    table = frame.head(DIFF_ROWS_SHOWN).to_html(index=False, border=0, classes="statekit-table", na_rep="")
    return (f"<p><b>{title}</b>: {len(frame)} change{'s' if len(frame) != 1 else ''}{more}</p>"
            f'{TABLE_STYLE}<div style="max-height:360px;overflow:auto">{table}</div>')


def recent_html(history: pd.DataFrame, n: int = RECENT_ROWS, tags: dict[int, list[str]] | None = None) -> str:
    """The newest ``n`` versions as an HTML table (metadata only), with their tags."""
    recent = history.tail(n).iloc[::-1]
    tags = tags or {}
    table = pd.DataFrame({
        "version": recent["version"], "branch": recent["branch"], "kind": recent["kind"],
        "created (UTC)": [f"{pf.utc_naive(t):%Y-%m-%d %H:%M:%S}" for t in recent["created_at"]],
        "actor": [pf.cell_text(a) or "" for a in recent["actor"]],
        "message": [pf.cell_text(m) or "" for m in recent["message"]],
        "size": [human_bytes(s) for s in recent["size_bytes"]],
        "tags": [", ".join(tags.get(int(v), ())) for v in recent["version"]],
    })
    return (f"<p><b>Latest versions</b></p>{TABLE_STYLE}"
            f"{table.to_html(index=False, border=0, classes='statekit-table')}")


def static_html(tl: pf.Timeline, entity: str | None, selected: tuple[int | None, int | None], *,
                summary: str, history: pd.DataFrame, diff_frame: pd.DataFrame | None) -> str:
    """The whole static view: summary line, figure, diff table, latest versions."""
    fig = pf.build_figure(tl, entity, selected, widget=False)
    parts = [f'<div class="statekit-panel-static"><p>{summary}</p>',
             fig.to_html(include_plotlyjs="cdn", full_html=False)]
    if diff_frame is not None:
        parts.append(diff_html(diff_frame, *selected))
    if len(history):
        parts.append(recent_html(history, tags=tl.tags))
    parts.append("</div>")
    return "\n".join(parts)
