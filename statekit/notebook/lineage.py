"""What the magics record as a version's lineage: the cells run since the parent version, and the names they read.

``collect`` returns ``{"cells": [{"execution_count": n, "source": ...}], "reads": [...]}`` for the
cells executed after the last save or load of this notebook (at most MAX_CELLS, MAX_CHARS of source),
and the user variables those cells read (names loaded in their code that hold data in the namespace).
``save(..., lineage=...)`` stores it; ``snap.lineage`` and ``%state log --code`` show it.
"""

from __future__ import annotations

import ast
import builtins
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..magics import StateMagics

MAX_CELLS = 50
MAX_CHARS = 64_000
_MARK = "_statekit_lineage_from"


def _inputs(ip: Any) -> list[Any]:
    """The cells' sources by prompt number (index 0 is empty); the cell running now is the last."""
    return list(getattr(getattr(ip, "history_manager", None), "input_hist_raw", None) or [])


def mark(magics: StateMagics) -> None:
    """The next save's lineage starts after the cell running now."""
    setattr(magics, _MARK, max(len(_inputs(magics.ip)) - 1, 0))


def _reads(ip: Any, source: str) -> set[str]:
    try:
        tree = ast.parse(ip.transform_cell(source))
    except (SyntaxError, ValueError, TypeError):
        return set()
    ns = ip.user_ns
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and not node.id.startswith("_") \
                and node.id in ns and not hasattr(builtins, node.id):
            value = ns[node.id]
            if not (inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value)):
                out.add(node.id)
    return out


def collect(magics: StateMagics) -> dict[str, Any] | None:
    """The lineage of a save made now, or None outside a shell with a history."""
    ip = magics.ip
    raw = _inputs(ip)
    now = len(raw) - 1
    if now < 1:
        return None
    start = max(int(getattr(magics, _MARK, 0)) + 1, 1, now - MAX_CELLS + 1)
    cells: list[dict[str, Any]] = []
    reads: set[str] = set()
    budget = MAX_CHARS
    for n in range(now, start - 1, -1):  # newest first, so the budget keeps the most recent cells
        source = raw[n]
        if not isinstance(source, str) or not source.strip() or len(source) > budget:
            continue
        budget -= len(source)
        cells.append({"execution_count": n, "source": source})
        reads |= _reads(ip, source)
    cells.reverse()
    return {"cells": cells, "reads": sorted(reads)}


def code_of(lineage: dict[str, Any] | None) -> str:
    """The recorded cells as one text, each under an ``# In[n]`` line."""
    if not lineage:
        return ""
    return "\n".join(f"# In[{c.get('execution_count')}]\n{c.get('source', '')}" for c in lineage.get("cells", ()))
