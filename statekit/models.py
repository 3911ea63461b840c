"""The schema (SQLModel tables) and the enums that name kinds and lifecycles.

Two tables keep the names users' SQL tools know: ``state_snapshots`` and
``state_transitions``. The rest serve the design: ``state_payloads`` holds
content-addressed chunks (sha256 of the bytes is the key), and
``state_snapshot_payloads`` says which snapshot uses which chunk, so expiry and
verification are plain SQL. ``state_entities`` hands out version numbers and
``state_branches`` keeps each branch's head.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, UniqueConstraint, text
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 3
"""Bump when the tables (or what their rows mean) change, and add a migration in ``db.py``.

Schema 2: the stored snapshot checksum covers every column (content hash + row hash, see ``rows.py``).
Schema 3: snapshots record which names changed (``changed``) and where they came from (``lineage``);
merge, tag and retain transitions; the ``statekit_history`` view and the ``state_find_index`` table with
its triggers (see ``history_schema.py``)."""

MAX_ID_LENGTH = 255
MAIN_BRANCH = "main"


class StateType(enum.StrEnum):
    """What a state is about; it decides the default lifetime."""

    SESSION_STATE = "session_state"
    AGENT_STATE = "agent_state"
    WORKFLOW_STATE = "workflow_state"
    SYSTEM_STATE = "system_state"
    MEMORY_STATE = "memory_state"
    COLLABORATION_STATE = "collaboration_state"


class SnapshotStatus(enum.StrEnum):
    """The lifecycle status recorded on a snapshot."""

    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    SUSPENDED = "suspended"
    ARCHIVED = "archived"


class TransitionType(enum.StrEnum):
    """The kind of change a transition records."""

    CREATE = "create"
    UPDATE = "update"
    ROLLBACK = "rollback"
    RESTORE = "restore"
    BRANCH = "branch"
    EXPIRE = "expire"
    RECOVER = "recover"
    MERGE = "merge"
    TAG = "tag"
    RETAIN = "retain"


DEFAULT_LIFETIMES: dict[StateType, timedelta | None] = {
    StateType.SESSION_STATE: timedelta(hours=24),
    StateType.WORKFLOW_STATE: timedelta(hours=72),
    StateType.AGENT_STATE: None,
    StateType.SYSTEM_STATE: None,
    StateType.MEMORY_STATE: None,
    StateType.COLLABORATION_STATE: None,
}
"""How long a snapshot lives unless the save says otherwise (None: forever)."""


def _ts() -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class MetaRecord(SQLModel, table=True):
    """Key/value facts about the store itself, such as its schema version."""

    __tablename__ = "statekit_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str


class EntityRecord(SQLModel, table=True):
    """One row per entity: hands out version numbers under a row lock."""

    __tablename__ = "state_entities"
    entity_id: str = Field(primary_key=True, max_length=MAX_ID_LENGTH)
    state_type: str = Field(max_length=32)
    last_version: int = 0
    created_at: datetime = _ts()


class BranchRecord(SQLModel, table=True):
    """A named head of an entity."""

    __tablename__ = "state_branches"
    entity_id: str = Field(primary_key=True, max_length=MAX_ID_LENGTH)
    name: str = Field(primary_key=True, max_length=MAX_ID_LENGTH)
    head_snapshot_id: str | None = Field(default=None, max_length=32)
    head_version: int | None = None
    base_version: int | None = None
    created_at: datetime = _ts()


class SnapshotRecord(SQLModel, table=True):
    """An immutable version of an entity's state.

    ``state_data`` holds the values that are plain JSON, readable from SQL;
    ``items`` describes the other values (codec and chunk digests). The
    checksum covers every column (see ``rows.py``).
    """

    __tablename__ = "state_snapshots"
    __table_args__ = (
        UniqueConstraint("entity_id", "version", name="uq_state_snapshots_entity_version"),
        # only snapshots that can expire are indexed: every index costs each save a page write
        Index("ix_state_snapshots_expires_at", "expires_at",
              sqlite_where=text("expires_at IS NOT NULL"), postgresql_where=text("expires_at IS NOT NULL")),
    )
    snapshot_id: str = Field(primary_key=True, max_length=32)
    state_type: str = Field(max_length=32)
    entity_id: str = Field(max_length=MAX_ID_LENGTH)
    version: int
    branch: str = Field(max_length=MAX_ID_LENGTH)
    state_data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    items: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    names: list[str] = Field(sa_column=Column(JSON, nullable=False))
    meta: dict[str, Any] = Field(sa_column=Column("metadata", JSON, nullable=False))
    parent_snapshot_id: str | None = Field(default=None, max_length=32)
    parent_version: int | None = None
    checksum: str = Field(max_length=160)
    created_at: datetime = _ts()
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    status: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    actor: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    message: str | None = None
    size_bytes: int = 0
    new_bytes: int = 0
    # schema 3: derived from the content and the parent's (see changes.py); not part of the checksum
    changed: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    lineage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class TransitionRecord(SQLModel, table=True):
    """One audit record per change: who, why, what kind, from which snapshot to which."""

    __tablename__ = "state_transitions"
    __table_args__ = (Index("ix_state_transitions_entity", "entity_id", "timestamp"),)
    transition_id: str = Field(primary_key=True, max_length=32)
    entity_id: str = Field(max_length=MAX_ID_LENGTH)
    branch: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    from_snapshot_id: str | None = Field(default=None, max_length=32)
    to_snapshot_id: str | None = Field(default=None, max_length=32)
    from_version: int | None = None
    to_version: int | None = None
    transition_type: str = Field(max_length=16)
    actor: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    reason: str | None = None
    timestamp: datetime = _ts()
    meta: dict[str, Any] = Field(sa_column=Column("metadata", JSON, nullable=False))


class PayloadRecord(SQLModel, table=True):
    """A content-addressed chunk of payload bytes; ``digest`` is sha256 of ``data``."""

    __tablename__ = "state_payloads"
    digest: str = Field(primary_key=True, max_length=64)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SnapshotPayloadRecord(SQLModel, table=True):
    """Which snapshot uses which chunk (for expiry and verification)."""

    __tablename__ = "state_snapshot_payloads"
    __table_args__ = (Index("ix_state_snapshot_payloads_digest", "digest"),)
    snapshot_id: str = Field(primary_key=True, max_length=32)
    digest: str = Field(primary_key=True, max_length=64)


snapshots_table = SnapshotRecord.__table__  # type: ignore[attr-defined]
transitions_table = TransitionRecord.__table__  # type: ignore[attr-defined]
payloads_table = PayloadRecord.__table__  # type: ignore[attr-defined]
links_table = SnapshotPayloadRecord.__table__  # type: ignore[attr-defined]
branches_table = BranchRecord.__table__  # type: ignore[attr-defined]
entities_table = EntityRecord.__table__  # type: ignore[attr-defined]
meta_table = MetaRecord.__table__  # type: ignore[attr-defined]
