"""Lineage: what produced a version (the code run since its parent, the names it read), kept beside it.

``save(..., lineage={...})`` takes any JSON object; the magics can record there the source of the
cells run since the parent version with their execution counts, and the names they read.
It is stored in ``state_snapshots.lineage`` as ``{"sha256": ..., "value": ...}``: the digest covers
the snapshot id and the value, so a damaged or moved lineage is an IntegrityError naming the
snapshot, never a wrong answer. ``snap.lineage`` reads it on first access.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import validate
from .codecs import dumps
from .rows import damaged

if TYPE_CHECKING:
    from .snapshot import StateSnapshot
    from .store import StateManager


def _digest(snapshot_id: str, text: str) -> str:
    return hashlib.sha256(f"{snapshot_id}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()


def encode(snapshot_id: str, lineage: Mapping[str, Any] | None) -> str | None:
    """The column text for ``lineage`` (None when there is none); refuses what is not a JSON object."""
    if lineage is None:
        return None
    value = validate.json_mapping(lineage, "lineage")
    text = dumps(value)
    return dumps({"sha256": _digest(snapshot_id, text), "value": value})


def decode(snap: StateSnapshot, stored: Any) -> dict[str, Any] | None:
    if stored is None:
        return None
    try:
        outer = json.loads(stored) if isinstance(stored, str) else stored
        value = outer["value"]
        ok = isinstance(value, dict) and outer["sha256"] == _digest(snap.snapshot_id, dumps(value))
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise damaged(snap, "its lineage does not match its checksum")
    return value  # type: ignore[no-any-return]


def read(sm: StateManager, snap: StateSnapshot) -> dict[str, Any] | None:
    col = "lineage" if sm.db.is_sqlite else "lineage::text"

    def work(cur: Any, _a: int) -> Any:
        cur.execute(sm.db.sql(f"SELECT {col} FROM state_snapshots WHERE snapshot_id = :s"), {"s": snap.snapshot_id})
        row = cur.fetchone()
        return row[0] if row else None

    return decode(snap, sm.db.run_hot(work, write=False))


def of_entity(sm: StateManager, entity_id: str) -> dict[int, dict[str, Any] | None]:
    """version -> lineage for every version of ``entity_id`` that has one, in one query (no payloads).

    Used by the panel's hover. A lineage whose digest does not match maps to None (the panel says
    so); ``snap.lineage`` still raises IntegrityError for it.
    """
    col = "lineage" if sm.db.is_sqlite else "lineage::text"
    sql = f"SELECT snapshot_id, version, {col} FROM state_snapshots WHERE entity_id = :e AND lineage IS NOT NULL"

    def work(cur: Any, _a: int) -> list[tuple[Any, ...]]:
        cur.execute(sm.db.sql(sql), {"e": entity_id})
        return cur.fetchall()

    out: dict[int, dict[str, Any] | None] = {}
    for sid, version, stored in sm.db.run_hot(work, write=False):
        try:
            outer = json.loads(stored) if isinstance(stored, str) else stored
            value = outer["value"]
            ok = isinstance(value, dict) and outer["sha256"] == _digest(str(sid), dumps(value))
        except (ValueError, TypeError, KeyError):
            ok = False
        if isinstance(version, int):
            out[version] = value if ok else None
    return out
