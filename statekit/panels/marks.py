"""What the timeline adds to the versions: merge arcs, tags, and the code behind a version (for the hover).

All from metadata the panel already reads: a merge's second parent is in the merge version's
``metadata.merged_from`` (and in its ``merge`` transition), a tag is a ``tag`` transition, and
the lineage comes from one query over the entity's ``lineage`` column (no payloads).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

CODE_LINES = 12
"""At most this many lines of code in a hover; the rest is in ``%state show VERSION --code``."""
CODE_WIDTH = 90
"""Longer code lines are cut at this many characters."""


def _int(v: Any) -> int | None:
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def merge_pairs(history: pd.DataFrame, transitions: pd.DataFrame | None) -> list[tuple[int, int]]:
    """(second parent, merge version) for each merge: from the version's metadata, else its transition."""
    pairs: dict[int, int] = {}
    if "metadata" in history:
        for version, kind, meta in zip(history["version"], history["kind"], history["metadata"], strict=True):
            if str(kind) == "merge" and isinstance(meta, Mapping) and isinstance(meta.get("merged_from"), Mapping):
                source = _int(meta["merged_from"].get("version"))
                if source is not None:
                    pairs[int(version)] = source
    if transitions is not None and len(transitions):
        for t in transitions.itertuples(index=False):
            if str(t.transition_type) != "merge" or not isinstance(t.metadata, Mapping):
                continue
            source = t.metadata.get("merged_from")
            new = _int(t.to_version)
            if new is not None and new not in pairs and isinstance(source, Mapping):
                v = _int(source.get("version"))
                if v is not None:
                    pairs[new] = v
    return sorted((source, merged) for merged, source in pairs.items())


def tag_names(transitions: pd.DataFrame | None) -> dict[int, list[str]]:
    """version -> its tags, in the order they were set."""
    out: dict[int, list[str]] = {}
    if transitions is None or not len(transitions):
        return out
    for t in transitions.itertuples(index=False):
        if str(t.transition_type) != "tag" or not isinstance(t.metadata, Mapping):
            continue
        name, v = t.metadata.get("tag"), _int(t.to_version)
        if isinstance(name, str) and v is not None:
            out.setdefault(v, []).append(name)
    return out


def code_hover(lineage: Mapping[str, Any] | None, version: int) -> str:
    """The recorded cells of a version as hover HTML: ``In [n]`` headers, at most CODE_LINES lines."""
    if lineage is None:
        return ""
    cells = lineage.get("cells") if isinstance(lineage, Mapping) else None
    lines: list[str] = []
    for cell in cells if isinstance(cells, list) else ():
        if not isinstance(cell, Mapping):
            continue
        lines.append(f"In [{cell.get('execution_count', '?')}]:")
        lines += [ln for ln in str(cell.get("source", "")).splitlines() if ln.strip()]
    reads = lineage.get("reads") if isinstance(lineage, Mapping) else None
    if not lines and not reads:
        return ""
    shown = [_code_line(ln) for ln in lines[:CODE_LINES]]
    if len(lines) > CODE_LINES:
        shown.append(f"<i>… {len(lines) - CODE_LINES} more lines: %state show {version} --code</i>")
    if isinstance(reads, list) and reads:
        names = ", ".join(str(r) for r in reads[:10]) + (" …" if len(reads) > 10 else "")
        shown.append(f"<i>read: {html.escape(names)}</i>")
    return "<b>code</b><br>" + "<br>".join(shown)


def _code_line(line: str) -> str:
    line = line.rstrip().expandtabs(4)
    if len(line) > CODE_WIDTH:
        line = line[: CODE_WIDTH - 1] + "…"
    stripped = line.lstrip(" ")
    # plotly collapses leading spaces: keep the indentation visible
    return "&nbsp;" * (len(line) - len(stripped)) + html.escape(stripped, quote=False)
