"""Tags: a name for one version of an entity, recorded as a ``tag`` transition and never moved.

A tag lives in the audit trail only (``transition_type = 'tag'``, ``metadata.tag`` its name,
``to_snapshot_id`` the version), so backup and restore keep it with no table of its own. Tagging a
name that exists already is a ConflictError: a tag never moves silently. Neither ``retain`` nor
``purge_expired`` removes a tagged version (see :mod:`statekit.removal`); only deleting a LangGraph thread
does (``tags()`` then shows it as gone).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import validate
from .db import utcnow
from .errors import ConflictError, NotFoundError
from .models import MAIN_BRANCH, TransitionType
from .snapshot import StateEvent, StateSnapshot, StateTransition

if TYPE_CHECKING:
    from .store import StateManager

TAG_COLUMNS = ["tag", "version", "branch", "snapshot_id", "actor", "message", "created_at", "present"]


def _rows(sm: StateManager, cur: Any, entity_id: str) -> list[dict[str, Any]]:
    db = sm.db
    meta = "t.metadata" if db.is_sqlite else "t.metadata::text"
    cur.execute(db.sql(
        f"SELECT {meta}, t.to_version, t.branch, t.to_snapshot_id, t.actor, t.reason, t.timestamp, "
        "EXISTS (SELECT 1 FROM state_snapshots s WHERE s.snapshot_id = t.to_snapshot_id) "
        "FROM state_transitions t WHERE t.entity_id = :e AND t.transition_type = 'tag' ORDER BY t.timestamp"),
        {"e": entity_id})
    out = []
    for meta_text, version, branch, sid, actor, reason, ts, present in cur.fetchall():
        try:
            name = json.loads(meta_text).get("tag") if isinstance(meta_text, str) else None
        except (ValueError, AttributeError):
            name = None
        if isinstance(name, str):
            out.append({"tag": name, "version": version, "branch": branch, "snapshot_id": sid, "actor": actor,
                        "message": reason, "created_at": ts, "present": bool(present)})
    return out


def tag(sm: StateManager, entity_id: str, name: str, version: int | None = None, *, actor: str | None = None,
        message: str | None = None) -> StateSnapshot:
    """Name ``version`` (default: the head of main) ``name``; ConflictError if the name is taken."""
    entity_id = validate.identifier(entity_id, "entity_id")
    name = validate.identifier(name, "tag name")
    version = validate.optional_version(version, "version")
    actor = validate.optional_text(actor, "actor") or sm.actor
    message = validate.optional_text(message, "message")
    db, repo = sm.db, sm._repo

    def work(cur: Any, _a: int) -> tuple[StateSnapshot, StateTransition]:
        if not db.is_sqlite:  # taggers of one entity queue here, so a name is taken once
            cur.execute(db.sql("SELECT 1 FROM state_entities WHERE entity_id = :e FOR UPDATE"), {"e": entity_id})
        row = repo.read_snapshot(cur, entity_id, version, MAIN_BRANCH)
        if row is None:
            raise sm._not_found(cur, entity_id, version, MAIN_BRANCH)
        snap = row.snapshot
        for t in _rows(sm, cur, entity_id):
            if t["tag"] == name:
                raise ConflictError(f"{entity_id!r} already has a tag {name!r} (on v{t['version']}); a tag never "
                                    "moves: choose another name.")
        t = StateTransition(
            transition_id=uuid.uuid4().hex, entity_id=entity_id, branch=snap.branch,
            transition_type=TransitionType.TAG, from_snapshot_id=snap.snapshot_id, to_snapshot_id=snap.snapshot_id,
            from_version=snap.version, to_version=snap.version, actor=actor,
            reason=message or f"tag {name!r} on v{snap.version}", timestamp=utcnow(), metadata={"tag": name},
        )
        repo.insert_transition(cur, t)
        return sm._attach(snap), t

    snap, t = db.run_hot(work, write=True)
    sm._notify(StateEvent(TransitionType.TAG, entity_id, snap.state_type, snap, t))
    return snap


def tags(sm: StateManager, entity_id: str) -> pd.DataFrame:
    """One row per tag of ``entity_id``: its name, version, branch, who set it and when; ``present``: not removed."""
    entity_id = validate.identifier(entity_id, "entity_id")
    rows = sm.db.run_hot(lambda cur, _a: _rows(sm, cur, entity_id), write=False)
    frame = pd.DataFrame(rows, columns=TAG_COLUMNS)
    frame["version"] = frame["version"].astype("Int64")
    frame["present"] = frame["present"].astype(bool)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    return frame


def tagged_version(sm: StateManager, entity_id: str, name: Any) -> int:
    """The version tag ``name`` of ``entity_id`` names; NotFoundError for an unknown tag or a removed version."""
    name = validate.identifier(name, "tag")

    def work(cur: Any, _a: int) -> int:
        found = [t for t in _rows(sm, cur, entity_id) if t["tag"] == name]
        if not found:
            known = sorted({t["tag"] for t in _rows(sm, cur, entity_id)})
            raise NotFoundError(f"{entity_id!r} has no tag {name!r}"
                                f"{'; its tags are ' + ', '.join(map(repr, known)) if known else ''}; see tags().")
        t = found[0]
        if not t["present"]:
            raise NotFoundError(f"Tag {name!r} of {entity_id!r} names v{t['version']}, which has expired and been "
                                "purged.")
        return int(t["version"])

    return sm.db.run_hot(work, write=False)


def protected(sm: StateManager, cur: Any, entity_id: str) -> set[str]:
    """The snapshot ids of ``entity_id`` that a tag names."""
    return {t["snapshot_id"] for t in _rows(sm, cur, entity_id) if t["snapshot_id"]}
