"""StateAwareAnalyticsSession: a conversation, its analysis results and the user's preferences.

Stored as one SESSION_STATE entity named by the session id, with plain JSON
values that SQL tools can read: ``conversation_history`` (turns, oldest
first), ``analysis_results``, ``user_preferences``, and ``previous_version``,
the version this state was derived from, which is where
:meth:`StateAwareAnalyticsSession.rollback_to_previous_state` goes. Because a
rollback copies a whole earlier state, that earlier state's own
``previous_version`` comes with it, so rolling back twice undoes two changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ..errors import InvalidArgumentError, NotFoundError
from ..models import StateType
from .base import StateAwareObject, StoreLike, check_storable, now_iso, optional_text, replace, text


class StateAwareAnalyticsSession(StateAwareObject):
    """A user's analytics session that survives restarts.

    ``store`` is a StateManager, a URL, or None for the default store. A
    session lives 24 hours after its last change unless ``expires_in`` says
    otherwise; an expired session starts afresh (with a warning). Every change
    is saved at once as one snapshot whose actor is the ``user_id``; when
    another process changed the session meanwhile, this one reloads it and
    applies its change on top, so no turn is lost.
    """

    state_type = StateType.SESSION_STATE
    kind = "session"

    def __init__(self, session_id: str, user_id: str, store: StoreLike = None, *,
                 expires_in: timedelta | float | str | None = None) -> None:
        self.user_id: str = text(user_id, "user_id")
        super().__init__(session_id, store, expires_in, actor=self.user_id)
        self._restore_or_create(f"session created for {self.user_id}")

    @property
    def session_id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return (f"StateAwareAnalyticsSession({self.session_id!r}, {self.user_id!r}, v{self.version}, "
                f"{len(self._state['conversation_history'])} turns)")

    # ------------------------------------------------------------ state

    def _initial_state(self) -> dict[str, Any]:
        now = now_iso()
        return {
            "session_id": self.session_id, "user_id": self.user_id, "created_at": now, "last_activity": now,
            "conversation_history": [], "analysis_results": [], "user_preferences": {},
            "previous_version": None,
        }

    def _adopt(self, stored: dict[str, Any]) -> dict[str, Any]:
        owner = stored.get("user_id")
        if owner != self.user_id:
            raise InvalidArgumentError(
                f"Session {self.session_id!r} belongs to user {owner!r}, not {self.user_id!r}; "
                "use another session_id."
            )
        state = self._initial_state()
        state.update(stored)
        return state

    def _metadata(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": self.user_id, "turns": len(state["conversation_history"]),
                "analysis_results": len(state["analysis_results"])}

    def _derived(self, state: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """The next state: ``changes`` applied, derived from the version this object holds."""
        return replace(state, last_activity=now_iso(), previous_version=self._version or None, **changes)

    # ------------------------------------------------------------ conversation

    def add_conversation_turn(self, query: str, response: Any, agent_id: str | None = None, *,
                              metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record one exchange (the user's query and the response) and save it; returns the turn."""
        text(query, "query")
        optional_text(agent_id, "agent_id")
        fields = {"query": query, "response": check_storable(self._sm, response, "response"),
                  "agent_id": agent_id}
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidArgumentError(f"metadata must be a dict, not {type(metadata).__name__}.")
            fields["metadata"] = check_storable(self._sm, dict(metadata), "metadata")

        def change(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            history = state["conversation_history"]
            turn = {"turn_number": len(history) + 1, "timestamp": now_iso(), **fields}
            return self._derived(state, conversation_history=[*history, turn]), turn

        turn = self._apply(change, "turn added" + (f" (agent {agent_id})" if agent_id else ""))
        return dict(turn)

    def get_conversation_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The turns, oldest first (the last ``limit`` of them when given); copies, safe to edit."""
        history = self._state["conversation_history"]
        if limit is not None:
            history = history[len(history) - min(_limit(limit), len(history)):]
        return [dict(t) for t in history]

    # ------------------------------------------------------------ analysis results

    def add_analysis_result(self, analysis_type: str, result: Any, agent_id: str | None = None) -> dict[str, Any]:
        """Keep one analysis result with the session and save it; returns the stored record."""
        text(analysis_type, "analysis_type")
        optional_text(agent_id, "agent_id")
        value = check_storable(self._sm, result, "result")

        def change(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            record = {"analysis_id": uuid.uuid4().hex, "timestamp": now_iso(), "analysis_type": analysis_type,
                      "result": value, "agent_id": agent_id}
            return self._derived(state, analysis_results=[*state["analysis_results"], record]), record

        return dict(self._apply(change, f"analysis result added ({analysis_type})"))

    def get_analysis_results(self, analysis_type: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The analysis results, oldest first, optionally of one type and only the last ``limit``."""
        results = [r for r in self._state["analysis_results"]
                   if analysis_type is None or r.get("analysis_type") == analysis_type]
        if limit is not None:
            results = results[len(results) - min(_limit(limit), len(results)):]
        return [dict(r) for r in results]

    # ------------------------------------------------------------ preferences

    @property
    def preferences(self) -> dict[str, Any]:
        """The user's preferences (a copy; change them with set_preference)."""
        return dict(self._state["user_preferences"])

    def set_preference(self, key: str, value: Any) -> None:
        """Set one preference and save it."""
        self.update_user_preferences({text(key, "preference key"): value})

    def update_user_preferences(self, preferences: Mapping[str, Any]) -> None:
        """Set several preferences in one change (one snapshot)."""
        if not isinstance(preferences, Mapping) or not preferences:
            raise InvalidArgumentError("preferences must be a non-empty dict of name to value.")
        for k in preferences:
            text(k, "preference key")
        values = check_storable(self._sm, dict(preferences), "preferences")

        def change(state: dict[str, Any]) -> tuple[dict[str, Any], None]:
            return self._derived(state, user_preferences={**state["user_preferences"], **values}), None

        self._apply(change, "preferences set: " + ", ".join(sorted(values)))

    # ------------------------------------------------------------ rollback

    def rollback_to_previous_state(self, reason: str = "User requested rollback") -> bool:
        """Undo the session's last change (a turn, a result, a preference); True when done.

        Makes a new version equal to the previous state, through
        ``StateManager.rollback``, so the history keeps the undone version and
        a rollback transition records the user and ``reason``. Returns False,
        writing nothing, when there is nothing to go back to: a new session,
        or a previous state that has been purged. The session first reloads
        the head, so it undoes the latest change in the store, whoever made it.
        """
        reason = text(reason, "reason")
        self.refresh()
        target = self._state.get("previous_version")
        if not isinstance(target, int) or isinstance(target, bool) or target < 1:
            return False
        try:
            snap = self._sm.rollback(self.session_id, target, reason=reason, actor=self.user_id)
        except NotFoundError:
            return False
        self._version = snap.version
        self._state = self._adopt(self._sm.load(self.session_id, snap.version, include_expired=True))
        return True


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgumentError(f"limit must be a whole number of 0 or more, not {limit!r}.")
    return limit
