"""The history checks of ``verify()``: what schema 3 added beside each version, and the merge graph.

- ``lineage_mismatch``: a lineage that is not ``{"sha256": ..., "value": {...}}`` with the digest of its
  snapshot id and value (see :mod:`statekit.lineage`); ``snap.lineage`` would refuse it.
- ``changed_malformed``: a ``changed`` column that is not a JSON object of name -> null or a list of
  item paths (see :mod:`statekit.changes`); ``history(changed=...)`` would misread it.
- ``missing_merge_parent``: a merge whose second parent (``merged_from`` in its metadata) is not in the
  store, or belongs to another entity; its history, diff and a future merge base are lost.

All are errors. A store or backup of an older schema (no ``changed`` / ``lineage`` columns) has none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .codecs import dumps
from .lineage import _digest

Add = Callable[..., None]


def _json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, (str, bytes)) else text


def lineage_ok(snapshot_id: Any, stored: Any) -> bool:
    try:
        outer = _json(stored)
        value = outer["value"]
        return isinstance(value, dict) and outer["sha256"] == _digest(str(snapshot_id), dumps(value))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeError):
        return False


def changed_problem(stored: Any) -> str | None:
    """Why a ``changed`` column is malformed, or None (NULL is fine: a version older than schema 3)."""
    try:
        value = _json(stored)
    except (ValueError, TypeError, UnicodeError):
        return "it is not JSON"
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"it is a JSON {type(value).__name__}, not an object of names"
    for name, paths in value.items():
        if paths is None:
            continue
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return f"name {str(name)[:60]!r} maps to {str(paths)[:60]}, not a list of item paths or null"
    return None


def _has_columns(src: Any) -> bool:
    if src.postgres:
        return True  # a PostgreSQL store is upgraded when it is opened
    try:
        src.rows("SELECT changed, lineage FROM state_snapshots LIMIT 0")
    except Exception:  # noqa: BLE001 - an older backup file: sqlite3 says the column is missing
        return False
    return True


def history_problems(src: Any, entity_id: str | None, add: Add) -> None:
    scope = "entity_id = :e" if entity_id is not None else ""
    p = {"e": entity_id} if entity_id is not None else {}
    if _has_columns(src):
        cols = "snapshot_id, entity_id, version, " + ("lineage::text, changed::text" if src.postgres
                                                      else "lineage, changed")
        where = "(lineage IS NOT NULL OR changed IS NOT NULL)" + (f" AND {scope}" if scope else "")
        for page in src.pages(cols, "state_snapshots", "snapshot_id", where, p):
            for sid, e, v, lineage, changed in page:
                if lineage is not None and not lineage_ok(sid, lineage):
                    add(e, v, sid, "lineage_mismatch", "its lineage does not match its digest")
                why = changed_problem(changed)
                if why:
                    add(e, v, sid, "changed_malformed", f"its changed column is malformed: {why}")
    meta = "metadata::text" if src.postgres else "metadata"
    where = "kind = 'merge'" + (f" AND {scope}" if scope else "")
    merges: list[tuple[Any, Any, Any, str]] = []
    for page in src.pages(f"snapshot_id, entity_id, version, {meta}", "state_snapshots", "snapshot_id", where, p):
        for sid, e, v, text in page:
            try:
                second = _json(text)["merged_from"]["snapshot_id"]
            except (ValueError, TypeError, KeyError, UnicodeError):
                continue  # unreadable metadata: its checksum check reports it
            if isinstance(second, str):
                merges.append((sid, e, v, second))
    for start in range(0, len(merges), 500):
        part = merges[start : start + 500]
        marks = ", ".join(f":m{i}" for i in range(len(part)))
        found = dict(src.rows(f"SELECT snapshot_id, entity_id FROM state_snapshots WHERE snapshot_id IN ({marks})",
                              {f"m{i}": m[3] for i, m in enumerate(part)}))
        for sid, e, v, second in part:
            if second not in found:
                add(e, v, sid, "missing_merge_parent", f"its second parent {second} is not in the store")
            elif found[second] != e:
                add(e, v, sid, "missing_merge_parent", f"its second parent {second} belongs to {found[second]!r}")
