"""What sessions, agents and workflows share: finding the store, restoring, and saving one change.

Each object is one entity in the store. Constructing it reads the head of the
entity; when there is none (or it has expired) the object writes its initial
state, so even a brand-new object has a version to come back to. Every later
change is exactly one ``StateManager.save`` (one snapshot, one transition with
actor and reason), made with ``expected_version`` so that two processes
updating the same entity never silently overwrite each other.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ..codecs import encode_item
from ..db import resolve_url
from ..errors import ConflictError, InvalidArgumentError, NotFoundError, UnserializableError
from ..models import SnapshotStatus, StateType
from ..snapshot import StateSnapshot
from ..store import StateManager

MAX_REAPPLY = 20
"""How often an append-style change is re-applied on a fresher head before giving up."""

_SHARED: dict[tuple[str, str], StateManager] = {}
_SHARED_LOCK = threading.Lock()

StoreLike = StateManager | str | None


def shared_store(store: StoreLike) -> StateManager:
    """The StateManager for ``store``: itself, or one per URL shared by this process.

    ``None`` means the default store (``$STATEKIT_URL``, else ``.statekit/state.db``
    under the current directory). Sharing one manager per URL means a process
    that builds many sessions or agents opens one engine, not one each.
    """
    if isinstance(store, StateManager):
        return store
    if store is not None and not isinstance(store, str):
        raise InvalidArgumentError(
            f"store must be a StateManager, a database URL or None (the default store), "
            f"not {type(store).__name__}."
        )
    url = resolve_url(store)
    key = (url, os.getcwd() if url.startswith("sqlite") else "")  # a relative SQLite path depends on the cwd
    with _SHARED_LOCK:
        sm = _SHARED.get(key)
        if sm is None:
            sm = _SHARED[key] = StateManager(url)
        return sm


def now_iso() -> str:
    """The time stamps stored in turns and records: ISO 8601 in UTC, readable from SQL."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def text(value: Any, what: str) -> str:
    """A non-empty string argument."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}.")
    if not value.strip():
        raise InvalidArgumentError(f"{what} must not be empty.")
    return value


def optional_text(value: Any, what: str) -> str | None:
    """None, or a non-empty string argument."""
    return None if value is None else text(value, what)


def _no_key() -> Any:
    raise UnserializableError("pickling is off for this check")  # never called: allow_pickle=False


def check_storable(sm: StateManager, value: Any, what: str) -> Any:
    """A private copy of ``value`` after checking it can be stored, naming ``what`` if not.

    Values nested in a conversation or an analysis history are stored as JSON
    (tagged JSON for dates, tuples, numpy scalars...). Checking each new value
    on its own gives an error that names the argument, not the whole history.
    With a pickle-enabled store anything picklable goes (the history is then
    pickled whole), and the save itself reports what cannot be.
    """
    if not sm.allow_pickle:
        encode_item(what, value, allow_pickle=False, key=_no_key)
    return copy.deepcopy(value)


class StateAwareObject:
    """Base of the state-aware analytics objects: one entity, restored on construction.

    Subclasses say how to build their initial state, how to read a stored one,
    and what to record as snapshot metadata. ``version`` is the head version
    this object reflects.
    """

    state_type: ClassVar[StateType]
    kind: ClassVar[str]  # "session", "agent", "workflow": used in messages

    def __init__(self, entity_id: str, store: StoreLike, expires_in: timedelta | float | str | None,
                 actor: str) -> None:
        self._id = text(entity_id, f"{self.kind}_id")
        self._sm = shared_store(store)
        self._expires_in = expires_in
        self._actor = actor
        self._version = 0
        self._state: dict[str, Any] = {}

    # ------------------------------------------------------------ what subclasses provide

    def _initial_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _adopt(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Check a stored state belongs to this object and return it in memory form."""
        raise NotImplementedError

    def _metadata(self, state: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _status(self, state: dict[str, Any]) -> SnapshotStatus:
        return SnapshotStatus.ACTIVE

    # ------------------------------------------------------------ public

    @property
    def store(self) -> StateManager:
        """The StateManager this object saves to."""
        return self._sm

    @property
    def version(self) -> int:
        """The store version this object reflects (0 before anything was saved)."""
        return self._version

    def refresh(self) -> None:
        """Re-read the head from the store, taking in what other processes saved."""
        version, stored = self._read_head()
        if stored is None:
            self._version, self._state = version, self._initial_state()
        else:
            self._state = self._adopt(stored)
            self._version = version

    def history(self) -> Any:
        """The entity's versions as a DataFrame (see ``StateManager.history``)."""
        return self._sm.history(self._id)

    def transitions(self) -> Any:
        """The entity's audit trail as a DataFrame (see ``StateManager.transitions``)."""
        return self._sm.transitions(self._id)

    # ------------------------------------------------------------ restore and save

    def _restore_or_create(self, message: str) -> None:
        """Adopt the stored head, or write the initial state as the first (or a fresh) version."""
        version, stored = self._read_head()
        if stored is not None:
            self._state = self._adopt(stored)
            self._version = version
            return
        self._version = version
        initial = self._initial_state()
        try:
            self._save(initial, message=message)
        except ConflictError:  # another process created it at the same moment: take theirs
            version, stored = self._read_head()
            if stored is None:
                raise
            self._state = self._adopt(stored)
            self._version = version
            return
        self._state = initial

    def _read_head(self) -> tuple[int, dict[str, Any] | None]:
        """(head version, its state) — the state is None when there is none or it has expired."""
        try:
            snap = self._sm.get(self._id, include_expired=True)
        except NotFoundError:
            return 0, None
        if snap.state_type != self.state_type:
            raise InvalidArgumentError(
                f"{self._id!r} holds {snap.state_type.value} snapshots, not {self.state_type.value}: "
                f"it is not a {self.kind}. Use another {self.kind}_id."
            )
        if snap.expires_at is not None and snap.expires_at <= datetime.now(UTC):
            warnings.warn(
                f"The stored {self.kind} {self._id!r} (v{snap.version}) expired at "
                f"{snap.expires_at:%Y-%m-%d %H:%M} UTC; starting a fresh one. Pass expires_in='never' "
                "to keep it longer.",
                stacklevel=4,
            )
            return snap.version, None
        try:
            return snap.version, self._sm.load(self._id, snap.version, include_expired=True)
        except NotFoundError:  # purged between the two reads
            return snap.version, None

    def _save(self, state: dict[str, Any], *, message: str, merge: bool = False) -> StateSnapshot:
        """One snapshot and one transition, following exactly ``self._version``."""
        snap = self._sm.save(
            self._id, state, self.state_type, message=message, actor=self._actor,
            metadata=self._metadata(state), expected_version=self._version,
            expires_in=self._expires_in, status=self._status(state), merge=merge,
        )
        self._version = snap.version
        return snap

    def _apply(self, change: Callable[[dict[str, Any]], tuple[dict[str, Any], Any]], message: str) -> Any:
        """Save ``change(state)`` on top of the head; on a conflict, reload and apply it again.

        ``change`` returns ``(new_state, result)`` and must not modify its
        argument, so that a failed save leaves this object as it was. Used for
        changes that commute (appending a turn, setting a preference): a turn
        added by another process is kept, and so is ours.
        """
        for _ in range(MAX_REAPPLY):
            new_state, result = change(self._state)
            try:
                self._save(new_state, message=message)
            except ConflictError:
                self.refresh()
                continue
            self._state = new_state
            return result
        raise ConflictError(
            f"{self._id!r} kept changing under this {self.kind} ({MAX_REAPPLY} attempts); try again."
        )


def replace(state: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A new top-level dict: ``state`` with ``changes``; nested values are shared, never modified."""
    out = dict(state)
    out.update(changes)
    return out
