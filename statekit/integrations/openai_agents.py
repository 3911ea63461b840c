"""An OpenAI Agents SDK session whose every change is a statekit version.

    from statekit.integrations.openai_agents import StatekitSession
    result = await Runner.run(agent, "Hi", session=StatekitSession("user-42"))

A session is the entity ``openai-agents:{session_id}``; each conversation item
is one named value in its state (``000001``, ``000002``… in order), so the
panel and ``sm.diff()`` show which items a turn added. ``add_items``,
``pop_item`` and ``clear_session`` each save one new version and delete
nothing, so ``sm.rollback(session.entity_id)`` undoes any of them.

Appending carries the earlier items over by reference (``merge=True``): only
the new items are encoded. Concurrent writers are safe: every save names the
head it follows (``expected_version``) and retries on a conflict.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

try:
    from agents.memory.session_settings import SessionSettings, resolve_session_limit
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        'statekit.integrations.openai_agents needs the OpenAI Agents SDK; install it with: '
        'pip install "statekit[openai-agents]"'
    ) from exc

from .. import validate
from ..errors import ConflictError, InvalidArgumentError, NotFoundError, StatekitError
from ..models import StateType
from ..snapshot import StateSnapshot
from ..store import StateManager

__all__ = ["SessionClosedError", "SessionSettingsError", "StatekitSession"]

_RETRIES = 50


class SessionClosedError(StatekitError, RuntimeError):
    """The session was closed; like the SDK's own sessions, it refuses every call (a RuntimeError)."""


class SessionSettingsError(InvalidArgumentError, TypeError):
    """``session_settings`` is neither a SessionSettings nor a dict of its fields (a TypeError, as in the SDK)."""


def _settings(value: Any) -> SessionSettings:
    """``value`` as a SessionSettings: a dict is converted field by field; unknown keys and bad values are refused."""
    if value is None:
        return SessionSettings()
    if isinstance(value, SessionSettings):
        return value
    if not isinstance(value, dict):
        raise SessionSettingsError(
            f"session_settings must be a SessionSettings or a dict, not {type(value).__name__}."
        )
    known = {f.name for f in dataclasses.fields(SessionSettings) if f.init}
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise SessionSettingsError(
            f"Unknown session settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})."
        )
    try:
        return SessionSettings(**value)
    except ValueError as exc:  # pydantic's ValidationError
        first = str(exc).splitlines()
        raise SessionSettingsError(f"Invalid session_settings {value!r}: {' '.join(first[1:3]).strip()}") from None


class StatekitSession:
    """The Agents SDK's ``Session`` protocol on a statekit store.

    ``store`` is a :class:`~statekit.StateManager`, a store URL, or None for the
    default store. ``session_settings`` (a ``SessionSettings``, or a dict of its
    fields) gives the default ``get_items`` limit, as in the SDK's own sessions.
    After :meth:`close` every call raises :class:`SessionClosedError` (a RuntimeError).
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        store: StateManager | str | None = None,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        prefix: str = "openai-agents",
        actor: str = "openai-agents",
        state_type: StateType | str = StateType.AGENT_STATE,
    ) -> None:
        self.session_id = session_id
        self.entity_id = validate.identifier(f"{prefix}:{session_id}", "session entity id")
        self.session_settings = _settings(session_settings)
        self._owns_store = not isinstance(store, StateManager)
        self.sm = store if isinstance(store, StateManager) else StateManager(store)
        self.actor = actor
        self.state_type = StateType(state_type)
        self._lock = threading.Lock()
        self._head: tuple[int, tuple[str, ...]] | None = None  # (version, item names) after our last change
        self._closed = False

    def close(self) -> None:
        """Close the session (later calls raise SessionClosedError); release the store if this session opened it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_store:
            self.sm.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(f"StatekitSession {self.session_id!r} is closed.")

    # ------------------------------------------------------------------ the Session protocol

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The conversation, oldest first; with ``limit``, only the latest ``limit`` items."""
        self._check_open()
        return await asyncio.to_thread(self._get_items, resolve_session_limit(limit, self.session_settings))

    async def add_items(self, items: list[Any]) -> None:
        """Append ``items`` as one new version."""
        self._check_open()
        if items:
            await _finish(asyncio.to_thread(self._add_items, list(items)))

    async def pop_item(self) -> Any | None:
        """Remove the latest item (one new version) and return it; None when the session is empty."""
        self._check_open()
        return await _finish(asyncio.to_thread(self._pop_item))

    async def clear_session(self) -> None:
        """Empty the session (one new version: ``sm.rollback`` brings the items back)."""
        self._check_open()
        await _finish(asyncio.to_thread(self._clear_session))

    # ------------------------------------------------------------------ sync implementations

    def _get_items(self, limit: int | None) -> list[Any]:
        try:
            state = self.sm.load(self.entity_id)
        except NotFoundError:
            return []
        items = list(state.values())
        if limit is None or limit < 0:  # a negative limit means all, as in the SDK's SQLiteSession
            return items
        return items[-limit:] if limit > 0 else []

    def _current(self) -> tuple[int, tuple[str, ...]]:
        """The head version and item names: from our last change, else read (0 for a new session)."""
        with self._lock:
            if self._head is not None:
                return self._head
        try:
            snap = self.sm.get(self.entity_id)
        except NotFoundError:
            return 0, ()
        return snap.version, snap.names

    def _commit(self, change: Callable[[int, tuple[str, ...]], StateSnapshot | None]) -> None:
        """Run ``change(head_version, names)``, re-reading the head and retrying when someone saved first."""
        for _ in range(_RETRIES):
            version, names = self._current()
            try:
                snap = change(version, names)
            except ConflictError:
                with self._lock:
                    self._head = None
                continue
            if snap is not None:
                with self._lock:
                    self._head = (snap.version, snap.names)
            return
        raise ConflictError(f"Session {self.session_id!r} kept changing under this writer; try again.")

    def _add_items(self, items: list[Any]) -> None:
        def change(version: int, names: tuple[str, ...]) -> StateSnapshot:
            start = 1 + max((int(n) for n in names if n.isdigit()), default=0)
            state = {f"{start + i:06d}": item for i, item in enumerate(items)}
            return self.sm.save(self.entity_id, state, self.state_type, merge=True, expected_version=version,
                                actor=self.actor, message=f"add_items: {_describe(items)}")

        self._commit(change)

    def _pop_item(self) -> Any | None:
        popped: list[Any] = []

        def change(version: int, names: tuple[str, ...]) -> StateSnapshot | None:
            popped.clear()
            if not names:
                return None
            last = names[-1]
            item = self.sm.load(self.entity_id, version, names=[last])[last]
            popped.append(item)
            return self.sm.save(self.entity_id, {}, self.state_type, merge=True, drop=[last],
                                expected_version=version, actor=self.actor,
                                message=f"pop_item: removed {last} ({_role(item)})")

        self._commit(change)
        return popped[0] if popped else None

    def _clear_session(self) -> None:
        def change(version: int, names: tuple[str, ...]) -> StateSnapshot | None:
            if version == 0:
                return None  # nothing stored yet: no version to add
            return self.sm.save(self.entity_id, {}, self.state_type, expected_version=version, actor=self.actor,
                                message=f"clear_session: removed {len(names)} items")

        self._commit(change)


async def _finish(work: Any) -> Any:
    """Let a started change finish even when the caller is cancelled (as the SDK's sessions do)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


def _role(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("role") or item.get("type") or "item")
    return type(item).__name__


def _describe(items: list[Any]) -> str:
    roles = [_role(i) for i in items]
    shown = ", ".join(roles[:6]) + (", …" if len(roles) > 6 else "")
    return f"{len(items)} item{'s' if len(items) != 1 else ''} ({shown})"
