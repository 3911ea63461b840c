"""The statekit error hierarchy: one base class, a few precise subclasses.

Every message says what went wrong and what to do next, so a notebook user
can act on it without reading a traceback.
"""

from __future__ import annotations


class StatekitError(Exception):
    """Base class of every error statekit raises on purpose."""


class NotFoundError(StatekitError, LookupError):
    """An entity, version, branch or snapshot does not exist (or has expired)."""


class ConflictError(StatekitError):
    """Someone else moved the head: the save's ``expected_version`` did not match.

    ``expected`` and ``actual`` hold the two versions, so a caller can reload
    and retry.
    """

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class IntegrityError(StatekitError):
    """Stored bytes do not match their checksum, or a payload is missing.

    ``snapshot_id``, ``entity_id`` and ``version`` name the damaged snapshot.
    """

    def __init__(
        self,
        message: str,
        *,
        snapshot_id: str | None = None,
        entity_id: str | None = None,
        version: int | None = None,
    ):
        super().__init__(message)
        self.snapshot_id = snapshot_id
        self.entity_id = entity_id
        self.version = version


class UntrustedPayloadError(IntegrityError):
    """A pickled payload is not signed with this reader's key; it is never unpickled."""


class UnserializableError(StatekitError, TypeError):
    """A value cannot be stored. ``name`` is its key in the state, ``type_name`` its type."""

    def __init__(self, message: str, *, name: str | None = None, type_name: str | None = None):
        super().__init__(message)
        self.name = name
        self.type_name = type_name


class InvalidArgumentError(StatekitError, ValueError):
    """An argument has the wrong type or an unusable value (empty id, bad version...)."""


class MergeConflictError(ConflictError):
    """A merge found the same item changed differently on both sides; nothing was written.

    ``conflicts`` is a DataFrame with one row per conflict: name, item, base, ours, theirs.
    Settle them with ``merge(..., resolve={"name": "ours" | "theirs"})``.
    """

    def __init__(self, message: str, conflicts: object):
        super().__init__(message)
        self.conflicts = conflicts


class SchemaVersionError(StatekitError):
    """The database was written by a newer statekit than this one."""


__all__ = [
    "ConflictError",
    "IntegrityError",
    "InvalidArgumentError",
    "MergeConflictError",
    "NotFoundError",
    "SchemaVersionError",
    "StatekitError",
    "UnserializableError",
    "UntrustedPayloadError",
]
