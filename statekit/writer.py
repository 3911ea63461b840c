"""The save transaction, and the plan a save computes before it opens.

``StateManager.save`` (and rollback and recover) build a :class:`SavePlan`
outside any transaction: ids, validated arguments and every value already
encoded, except large frames and arrays, which are checked there and streamed
here. :func:`write_snapshot` then runs inside one write transaction:
take the entity's next version, check the branch head against
``expected_version``, store the streamed values chunk by chunk (so a large
value is never held encoded whole, and a failure part-way rolls back with the
rest), write the chunks the store lacks, the snapshot row, its chunk links, a
transition and the new head.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from . import changes, codecs
from .db import utcnow
from .errors import ConflictError, IntegrityError, InvalidArgumentError, NotFoundError
from .models import DEFAULT_LIFETIMES, SnapshotStatus, StateType, TransitionType
from .repository import SnapshotRow
from .rows import state_checksum, stored_checksum
from .snapshot import StateSnapshot, StateTransition

if TYPE_CHECKING:
    from .store import StateManager

NEVER = "never"
DEFAULT_STATE_TYPE = StateType.MEMORY_STATE
"""A new entity's type when the save names none: it never expires."""


def write_snapshot(sm: StateManager, cur: Any, attempt: int, plan: SavePlan) -> tuple[StateSnapshot, StateTransition]:
    """The save transaction's body: version, head check, chunks, snapshot, links, transition, head."""
    repo = sm._repo
    if attempt and repo.snapshot_exists(cur, plan.snapshot_id):  # the earlier attempt did commit
        row = repo.read_snapshot_by_id(cur, plan.snapshot_id)
        assert row is not None
        return sm._attach(row.snapshot), plan.transition(row.snapshot)
    now = utcnow()
    version, entity_type, head = repo.allocate_version(cur, plan.entity_id, plan.resolved_type(), plan.branch, now)
    if plan.state_type is not None and entity_type != plan.state_type.value:
        raise InvalidArgumentError(
            f"Entity {plan.entity_id!r} holds {entity_type} snapshots, not {plan.state_type.value}; "
            "use another entity id for a different kind of state."
        )
    if head is None and version != 1:
        raise NotFoundError(
            f"Entity {plan.entity_id!r} has no branch {plan.branch!r}; "
            f"create it with create_branch({plan.entity_id!r}, {plan.branch!r})."
        )
    head_id, head_version = head if head else (None, None)
    if plan.expected_version is not None and (head_version or 0) != plan.expected_version:
        raise ConflictError(
            f"{plan.entity_id!r} on {plan.branch!r} is at version {head_version or 0}, not "
            f"{plan.expected_version}: someone else saved first. Load the head and try again.",
            expected=plan.expected_version, actual=head_version or 0,
        )
    state_data: dict[str, Any] = {}
    items: dict[str, Any] = {}
    names: list[str] = []
    if plan.copy_from is not None:  # a rollback: the target's content, by reference
        source = plan.copy_from(cur)
        names.extend(source.snapshot.names)
        state_data.update(source.state_data)
        items.update(source.items)
    elif plan.merge and head_id is not None:
        parent = repo.read_snapshot_by_id(cur, head_id)
        if parent is not None:
            parent.verify()
            given = {e.name for e in plan.encoded} | plan.drop
            for n in parent.snapshot.names:
                if n in given:
                    continue
                names.append(n)
                if n in parent.state_data:
                    state_data[n] = parent.state_data[n]
                else:
                    items[n] = parent.items[n]
    streamed: set[str] = set()
    new_bytes = plan.deduplicated = 0
    locked = any(e.stream is not None for e in plan.encoded)
    if locked:
        sm.db.lock_for_save(cur)  # before any digest is found present: purge must not delete it under us
        for e in plan.encoded:
            if e.stream is not None:  # a large value: each chunk is stored and dropped before the next is encoded
                written, known = repo.write_chunks(cur, e.stream(), streamed)
                new_bytes += written
                plan.deduplicated += known
    chunks: dict[str, bytes] = {}
    for e in plan.encoded:
        names.append(e.name)
        if e.inline:
            state_data[e.name] = e.value
        else:
            items[e.name] = {**e.descriptor, "size": e.size}
            chunks.update(e.chunks)
    plan.has_items = bool(items)
    all_digests = {d for desc in items.values() for d in desc.get("chunks", ())}
    if all_digests:
        if not locked:
            sm.db.lock_for_save(cur)
        have = repo.existing_digests(cur, all_digests)
        absent = all_digests - have - chunks.keys()
        if absent:  # chunks we reference without holding their bytes are gone
            if any(e.reused for e in plan.encoded):
                raise StaleMemo()
            raise IntegrityError(
                f"{len(absent)} payload chunks of {plan.entity_id!r}'s parent version are missing; "
                "run verify() and recover the last intact version first."
            )
        missing = {d: b for d, b in chunks.items() if d not in have}
        repo.write_chunks(cur, missing.items())
        new_bytes += sum(len(b) for b in missing.values())
        plan.deduplicated += sum(len(b) for d, b in chunks.items() if d in have and d not in streamed)
    state_text = codecs.dumps(state_data)
    items_text = codecs.dumps(items)
    # new bytes: chunks this store lacked, plus values stored in the row itself
    new_bytes += len(state_text) + sum(
        e.size for e in plan.encoded if not e.inline and not e.reused and not e.descriptor.get("chunks"))
    size = len(state_text.encode("utf-8")) + sum(int(desc.get("size", 0)) for desc in items.values())
    lifetime = DEFAULT_LIFETIMES.get(StateType(entity_type)) if plan.expires_in is DEFAULT_LIFETIME else plan.expires_in
    expires_at = now + lifetime if lifetime is not None else None
    kind = TransitionType.CREATE if version == 1 else (plan.kind or TransitionType.UPDATE)
    snap = StateSnapshot(
        snapshot_id=plan.snapshot_id, entity_id=plan.entity_id, version=version, branch=plan.branch,
        state_type=StateType(entity_type), parent_snapshot_id=head_id, parent_version=head_version,
        checksum=state_checksum(state_text, items_text), created_at=now, expires_at=expires_at,
        status=plan.status, kind=kind, actor=plan.actor, message=plan.message,
        metadata=dict(plan.metadata), names=tuple(names), size_bytes=size,
        new_bytes=new_bytes,
    )
    meta_text, names_text = codecs.dumps(plan.metadata), codecs.dumps(names)
    checksum = stored_checksum(snap, meta_text, names_text)
    repo.insert_snapshot(cur, {
        "sid": plan.snapshot_id, "e": plan.entity_id, "v": version, "b": plan.branch,
        "t": entity_type, "psid": head_id, "pv": head_version,
        "checksum": checksum, "now": sm.db.ts(now),
        "exp": sm.db.ts(expires_at), "status": plan.status.value, "kind": kind.value,
        "actor": plan.actor, "msg": plan.message, "meta": meta_text,
        "names": names_text, "size": size, "new": new_bytes,
        "data": state_text, "items": items_text,
        "changed": changes.for_save(cur, sm.db, head_id, state_data, items, (plan.snapshot_id, state_text, items_text)),
        "lineage": plan.lineage,
    })
    if all_digests:
        repo.write_links(cur, plan.snapshot_id, all_digests)
    transition = plan.transition(snap)
    repo.insert_transition(cur, transition)
    repo.set_head(cur, plan.entity_id, plan.branch, plan.snapshot_id, version,
                  create=head is None, base=None, now=now)
    plan.inline_text = state_text
    return sm._attach(snap), transition


class SavePlan:
    """Everything a save needs, computed before the transaction opens."""

    def __init__(self, *, entity_id: str, branch: str, state_type: StateType | None,
                 encoded: list[codecs.EncodedItem], message: str | None, actor: str,
                 metadata: dict[str, Any], expected_version: int | None, expires_in: Any,
                 status: SnapshotStatus, merge: bool, snapshot_id: str, transition_id: str):
        self.entity_id = entity_id
        self.branch = branch
        self.state_type = state_type
        self.encoded = encoded
        self.message = message
        self.actor = actor
        self.metadata = metadata
        self.expected_version = expected_version
        self.status = status
        self.merge = merge
        self.snapshot_id = snapshot_id
        self.transition_id = transition_id
        self.kind: TransitionType | None = None
        self.copy_from: Callable[[Any], SnapshotRow] | None = None
        self.reason: str | None = None
        self.transition_meta: dict[str, Any] = {}
        self.deduplicated = 0
        self.inline_text: str | None = None
        self.expires_in = expires_in  # DEFAULT_LIFETIME: the entity's type decides
        self.has_items = False
        self.drop: set[str] = set()
        self.lineage: str | None = None  # JSON text of save(lineage=...)

    def resolved_type(self) -> str:
        return (self.state_type or DEFAULT_STATE_TYPE).value

    def transition(self, snap: StateSnapshot) -> StateTransition:
        return StateTransition(
            transition_id=self.transition_id, entity_id=snap.entity_id, branch=snap.branch,
            transition_type=snap.kind, from_snapshot_id=snap.parent_snapshot_id,
            to_snapshot_id=snap.snapshot_id, from_version=snap.parent_version, to_version=snap.version,
            actor=snap.actor, reason=self.reason if self.reason is not None else snap.message,
            timestamp=snap.created_at, metadata=dict(self.transition_meta),
        )


DEFAULT_LIFETIME: Any = object()
"""expires_in not given: the entity's state type decides."""


class StaleMemo(Exception):
    """A remembered frame's chunks were purged after it was remembered."""


MAX_LIFETIME = timedelta(days=1000 * 365)
"""The longest finite lifetime: now + lifetime must stay a date both databases (and Python) can hold."""


def lifetime(expires_in: Any) -> Any:
    """``expires_in`` as a timedelta, None (never), or DEFAULT_LIFETIME (the state type decides).

    Accepts a timedelta, a number of seconds (Python or numpy, infinity meaning
    never) or ``"never"``. A finite lifetime longer than MAX_LIFETIME is refused
    rather than overflowing the expiry date; pass ``"never"`` for values that must stay.
    """
    from .validate import shown

    if expires_in is None:
        return DEFAULT_LIFETIME
    if expires_in is False or (isinstance(expires_in, str) and expires_in.strip().lower() == NEVER):
        return None
    if isinstance(expires_in, np.timedelta64):
        try:
            seconds = float(expires_in / np.timedelta64(1, "s"))  # NaT gives NaN, refused below
        except (TypeError, ValueError, OverflowError):  # e.g. years and months, which have no fixed length
            seconds = math.nan
    elif isinstance(expires_in, timedelta):
        seconds = expires_in.total_seconds()
    elif isinstance(expires_in, numbers.Real) and not isinstance(expires_in, (bool, np.bool_)):
        try:
            seconds = float(expires_in)
        except (OverflowError, ValueError, TypeError):
            seconds = math.nan
    else:
        raise InvalidArgumentError(
            f"expires_in must be a timedelta, a number of seconds or 'never', not {type(expires_in).__name__}."
        )
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgumentError(f"expires_in must not be negative (or NaN), got {shown(expires_in)}.")
    if math.isinf(seconds):
        return None
    if seconds > MAX_LIFETIME.total_seconds():
        raise InvalidArgumentError(
            f"expires_in is longer than {MAX_LIFETIME.days // 365} years ({shown(expires_in)}); "
            "pass expires_in='never' for a value that must never expire."
        )
    return timedelta(seconds=seconds)


def alive(snap: StateSnapshot, now: datetime | None = None) -> bool:
    return snap.expires_at is None or snap.expires_at > (now or utcnow())
