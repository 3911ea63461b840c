"""Public value objects: a snapshot (metadata now, payload on first access) and a transition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .models import SnapshotStatus, StateType, TransitionType


@dataclass(frozen=True, eq=False)
class StateSnapshot:
    """One immutable version of an entity's state.

    Every field is read from the snapshot row; the payload is not. ``state``
    loads it (checksums verified) on first access and keeps it.
    """

    snapshot_id: str
    entity_id: str
    version: int
    branch: str
    state_type: StateType
    parent_snapshot_id: str | None
    parent_version: int | None
    checksum: str
    created_at: datetime
    expires_at: datetime | None
    status: SnapshotStatus
    kind: TransitionType
    actor: str | None
    message: str | None
    metadata: dict[str, Any]
    names: tuple[str, ...]
    size_bytes: int
    new_bytes: int
    _loader: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def state(self) -> dict[str, Any]:
        """The stored values, loaded and verified on first access."""
        cached = self.__dict__.get("_state")
        if cached is None:
            if self._loader is None:
                raise RuntimeError("this snapshot is not attached to a store")
            cached = self._loader()
            object.__setattr__(self, "_state", cached)
        return cached

    @property
    def lineage(self) -> dict[str, Any] | None:
        """Where this version came from, as saved with ``save(..., lineage=...)``; None when not recorded."""
        if "_lineage" not in self.__dict__:
            loader = self.__dict__.get("_lineage_loader")
            object.__setattr__(self, "_lineage", loader() if loader is not None else None)
        return self.__dict__["_lineage"]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        from .formatting import human_bytes

        message = f" {self.message!r}" if self.message else ""
        return (f"<StateSnapshot {self.entity_id!r} v{self.version} on {self.branch}: {self.kind.value}"
                f" by {self.actor}{message}, {human_bytes(self.size_bytes)}, {self.snapshot_id[:12]}>")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateSnapshot) and other.snapshot_id == self.snapshot_id

    def __hash__(self) -> int:
        return hash(self.snapshot_id)


@dataclass(frozen=True)
class StateTransition:
    """One audit record: who changed what, why, and how."""

    transition_id: str
    entity_id: str
    branch: str | None
    transition_type: TransitionType
    from_snapshot_id: str | None
    to_snapshot_id: str | None
    from_version: int | None
    to_version: int | None
    actor: str | None
    reason: str | None
    timestamp: datetime
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StateEvent:
    """What an observer receives after a change has been committed."""

    kind: TransitionType
    entity_id: str
    state_type: StateType
    snapshot: StateSnapshot | None
    transition: StateTransition
