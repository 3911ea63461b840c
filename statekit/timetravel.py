"""Time travel: which version was the head of a branch at a given moment, and which version a tag names.

The head at a moment is read from the audit trail, not from snapshot times: every change of a head
leaves a transition (a save, rollback, recover or merge on the branch; the branch's creation; a purge
that moved the head back; a restore that moved it forward), so the newest such transition at or
before the moment says where the head was. A rollback or a branch move is therefore seen as it
happened. Before the branch's first transition the version does not exist (NotFoundError), and a
version that was the head then but has since been removed (expired or retained) is a NotFoundError
that says so.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from . import validate
from .errors import InvalidArgumentError, NotFoundError
from .models import MAIN_BRANCH, TransitionType

if TYPE_CHECKING:
    from .store import StateManager

HEAD_MOVES = {TransitionType.CREATE.value, TransitionType.UPDATE.value, TransitionType.ROLLBACK.value,
              TransitionType.RECOVER.value, TransitionType.MERGE.value, TransitionType.BRANCH.value}
FIRST_PAGE = 8
PAGE = 500


def parse_when(when: Any) -> datetime:
    """A datetime (naive means UTC), a date (its midnight UTC) or an ISO 8601 text, as an aware UTC datetime."""
    if isinstance(when, str):
        text = when.strip()
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise InvalidArgumentError(
                f"as_of={when!r} is not a time; use a datetime or an ISO text such as '2026-11-30 17:00'.") from None
    elif isinstance(when, date) and not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day)
    if not isinstance(when, datetime) or when != when:  # noqa: PLR0124 - pandas' NaT is a datetime unequal to itself
        raise InvalidArgumentError(f"as_of must be a datetime or an ISO text, not {when!r}.")
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _meta(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def head_at(sm: StateManager, cur: Any, entity_id: str, branch: str, when: datetime) -> tuple[str | None, int | None]:
    """(snapshot id or None, version) of ``branch``'s head at ``when``; NotFoundError when it had none."""
    db = sm.db
    meta = "metadata" if db.is_sqlite else "metadata::text"
    sql = db.sql(f"SELECT transition_type, branch, to_snapshot_id, to_version, {meta} FROM state_transitions "
                 "WHERE entity_id = :e AND timestamp <= :t ORDER BY timestamp DESC, to_version DESC "
                 "LIMIT :n OFFSET :o")
    offset, page = 0, FIRST_PAGE  # the newest transition usually answers: read a few first
    while True:
        cur.execute(sql, {"e": entity_id, "t": db.ts(when), "n": page, "o": offset})
        rows = cur.fetchall()
        for kind, b, to_sid, to_version, metadata in rows:
            if kind in HEAD_MOVES and b == branch:
                return to_sid, to_version
            if kind == TransitionType.EXPIRE.value:
                for note in _meta(metadata).get("branches", ()):
                    if isinstance(note, dict) and note.get("branch") == branch:
                        if note.get("removed") or note.get("head_version") is None:
                            raise _none_then(sm, cur, entity_id, branch, when, "its versions had expired")
                        return None, int(note["head_version"])
            if kind == TransitionType.RESTORE.value:
                moved = _meta(metadata).get("heads", {})
                if isinstance(moved, dict) and isinstance(moved.get(branch), list) and len(moved[branch]) == 2:
                    return None, int(moved[branch][1])
        if len(rows) < page:
            raise _none_then(sm, cur, entity_id, branch, when, None)
        offset += page
        page = PAGE


def _none_then(sm: StateManager, cur: Any, entity_id: str, branch: str, when: datetime,
               why: str | None) -> NotFoundError:
    cur.execute(sm.db.sql("SELECT 1 FROM state_entities WHERE entity_id = :e"), {"e": entity_id})
    if cur.fetchone() is None:
        return NotFoundError(f"No entity {entity_id!r} in this store; see StateManager.entities().")
    return NotFoundError(f"{entity_id!r} had no version on branch {branch!r} at {when:%Y-%m-%d %H:%M:%S} UTC"
                         f"{' (' + why + ')' if why else ' (it is older than the first one)'}; see history().")


def version_at(sm: StateManager, entity_id: str, branch: str | None, when: Any) -> int:
    """The version that was the head of ``branch`` (default main) at ``when``."""
    moment = parse_when(when)
    b = validate.identifier(branch or MAIN_BRANCH, "branch")

    def work(cur: Any, _a: int) -> int:
        sid, version = head_at(sm, cur, entity_id, b, moment)
        if sid is not None:
            cur.execute(sm.db.sql("SELECT version FROM state_snapshots WHERE snapshot_id = :s"), {"s": sid})
        else:
            cur.execute(sm.db.sql("SELECT version FROM state_snapshots WHERE entity_id = :e AND version = :v"),
                        {"e": entity_id, "v": version})
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"{entity_id!r} v{version} was the head of {b!r} at {moment:%Y-%m-%d %H:%M:%S} UTC "
                                "but has since been removed (expired or retained); see transitions().")
        return int(row[0])

    return sm.db.run_hot(work, write=False)


def resolve(sm: StateManager, entity_id: str, version: Any, branch: str | None, as_of: Any,
            tag: Any) -> int:
    """The version that ``as_of`` or ``tag`` names (for load() and get()); refuses them combined with a version."""
    if as_of is not None and tag is not None:
        raise InvalidArgumentError("Give as_of= or tag=, not both.")
    if version is not None:
        raise InvalidArgumentError(f"Give a version or {'as_of=' if as_of is not None else 'tag='}, not both.")
    entity_id = validate.identifier(entity_id, "entity_id")
    if as_of is not None:
        return version_at(sm, entity_id, branch, as_of)
    from .tags import tagged_version

    return tagged_version(sm, entity_id, tag)
