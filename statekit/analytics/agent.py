"""StateAwareAgent: an agent's record of analyses, its performance, and its knowledge base.

Stored as one AGENT_STATE entity named by the agent id (no expiry by default):
``analysis_history`` (one record per analysis), ``performance_metrics``
(computed from that history alone, kept in the state so SQL tools can read
it), ``knowledge_base`` (a dict the caller fills) and ``preferences``.

The agent learns nothing it did not record: every metric is a function of
the recorded analyses, so a restored agent reports exactly the same numbers.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..models import StateType
from .base import StateAwareObject, StoreLike, check_storable, now_iso, replace, text

FAILED_STATUSES = frozenset({"failed", "failure", "error", "errored"})


def is_failure(result: Any) -> bool:
    """Whether an analysis result says it failed.

    A result fails when it is a mapping with ``status`` one of failed, failure,
    error or errored (any case), or ``success`` set to False, or an ``error``
    key whose value is not None. Anything else counts as a success.
    """
    if not isinstance(result, Mapping):
        return False
    status = result.get("status")
    if isinstance(status, str) and status.strip().lower() in FAILED_STATUSES:
        return True
    if result.get("success", True) is False:
        return True
    return result.get("error") is not None


def performance_metrics(history: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of an analysis history: counts, success rate and response times in seconds.

    ``p95_response_time`` is numpy's default (linear) percentile. Rates and
    times are None while there are no analyses: nothing was recorded, so
    there is nothing to report.
    """
    times = [float(r["response_time"]) for r in history]
    ok = sum(1 for r in history if r.get("success"))
    n = len(history)
    mean = sum(times) / n if n else None
    return {
        "total_analyses": n,
        "successful_analyses": ok,
        "failed_analyses": n - ok,
        "success_rate": ok / n if n else None,
        "avg_response_time": mean,
        "average_response_time": mean,  # the name the original design used
        "p95_response_time": float(np.percentile(times, 95)) if n else None,
        "min_response_time": min(times) if n else None,
        "max_response_time": max(times) if n else None,
        "total_response_time": sum(times),
        "last_analysis_at": history[-1]["timestamp"] if n else None,
    }


class StateAwareAgent(StateAwareObject):
    """An analytics agent whose analyses, metrics and knowledge survive restarts.

    ``store`` is a StateManager, a URL, or None for the default store. Every
    change is saved at once as one snapshot whose actor is the ``agent_id``;
    when another process changed the agent meanwhile, this one reloads it and
    applies its change on top, so no analysis is lost.
    """

    state_type = StateType.AGENT_STATE
    kind = "agent"

    def __init__(self, agent_id: str, specialty: str, store: StoreLike = None, *,
                 expires_in: timedelta | float | str | None = None) -> None:
        self.specialty: str = text(specialty, "specialty")
        super().__init__(agent_id, store, expires_in, actor=text(agent_id, "agent_id"))
        self._restore_or_create(f"agent created ({self.specialty})")

    @property
    def agent_id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return (f"StateAwareAgent({self.agent_id!r}, {self.specialty!r}, v{self.version}, "
                f"{len(self._state['analysis_history'])} analyses)")

    # ------------------------------------------------------------ state

    def _initial_state(self) -> dict[str, Any]:
        now = now_iso()
        return {
            "agent_id": self.agent_id, "specialty": self.specialty, "created_at": now, "last_activity": now,
            "analysis_history": [], "performance_metrics": performance_metrics([]),
            "knowledge_base": {}, "preferences": {},
        }

    def _adopt(self, stored: dict[str, Any]) -> dict[str, Any]:
        specialty = stored.get("specialty")
        if specialty != self.specialty:
            raise InvalidArgumentError(
                f"Agent {self.agent_id!r} is stored with specialty {specialty!r}, not {self.specialty!r}; "
                "use another agent_id."
            )
        state = self._initial_state()
        state.update(stored)
        state["performance_metrics"] = performance_metrics(state["analysis_history"])
        return state

    def _metadata(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"specialty": self.specialty, "total_analyses": len(state["analysis_history"]),
                "knowledge_items": len(state["knowledge_base"])}

    # ------------------------------------------------------------ analyses

    def record_analysis(self, analysis_request: Any, analysis_result: Any, response_time: float, *,
                        success: bool | None = None) -> dict[str, Any]:
        """Record one analysis and save it; returns the stored record.

        ``response_time`` is in seconds. ``success`` overrides the rule of
        :func:`is_failure` when the caller knows better.
        """
        if isinstance(response_time, bool) or not isinstance(response_time, (int, float, np.integer, np.floating)):
            raise InvalidArgumentError(
                f"response_time must be a number of seconds, not {type(response_time).__name__}."
            )
        seconds = float(response_time)
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidArgumentError(f"response_time must be a finite number of seconds >= 0, not {response_time!r}.")
        if success is not None and not isinstance(success, bool):
            raise InvalidArgumentError(f"success must be True, False or None, not {success!r}.")
        request = check_storable(self._sm, analysis_request, "analysis_request")
        result = check_storable(self._sm, analysis_result, "analysis_result")
        ok = not is_failure(result) if success is None else success

        def change(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            record = {"analysis_id": uuid.uuid4().hex, "timestamp": now_iso(), "request": request,
                      "result": result, "response_time": seconds, "success": ok}
            history = [*state["analysis_history"], record]
            return replace(state, analysis_history=history, performance_metrics=performance_metrics(history),
                           last_activity=record["timestamp"]), record

        return dict(self._apply(change, f"analysis recorded ({'ok' if ok else 'failed'}, {seconds:.3g}s)"))

    def get_performance_metrics(self) -> dict[str, Any]:
        """total_analyses, successful/failed_analyses, success_rate, avg/p95/min/max_response_time..."""
        return dict(self._state["performance_metrics"])

    def get_analysis_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The recorded analyses, oldest first (the last ``limit`` of them when given)."""
        history = self._state["analysis_history"]
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise InvalidArgumentError(f"limit must be a whole number of 0 or more, not {limit!r}.")
            history = history[len(history) - min(limit, len(history)):]
        return [dict(r) for r in history]

    # ------------------------------------------------------------ knowledge

    @property
    def knowledge_base(self) -> dict[str, Any]:
        """What the agent was told to know (a copy; add to it with add_knowledge)."""
        return dict(self._state["knowledge_base"])

    def add_knowledge(self, key: str, value: Any) -> None:
        """Add (or replace) one entry of the knowledge base and save it."""
        self.update_knowledge({text(key, "knowledge key"): value})

    def update_knowledge(self, entries: Mapping[str, Any]) -> None:
        """Add several knowledge entries in one change (one snapshot)."""
        self._update_mapping("knowledge_base", entries, "knowledge")

    def get_knowledge(self, key: str, default: Any = None) -> Any:
        return self._state["knowledge_base"].get(key, default)

    @property
    def preferences(self) -> dict[str, Any]:
        return dict(self._state["preferences"])

    def update_preferences(self, preferences: Mapping[str, Any]) -> None:
        """Set several agent preferences in one change (one snapshot)."""
        self._update_mapping("preferences", preferences, "preferences")

    def _update_mapping(self, name: str, entries: Mapping[str, Any], what: str) -> None:
        if not isinstance(entries, Mapping) or not entries:
            raise InvalidArgumentError(f"{what} must be a non-empty dict of name to value.")
        for k in entries:
            text(k, f"{what} key")
        values = check_storable(self._sm, dict(entries), what)

        def change(state: dict[str, Any]) -> tuple[dict[str, Any], None]:
            return replace(state, **{name: {**state[name], **values}}, last_activity=now_iso()), None

        self._apply(change, f"{what} updated: " + ", ".join(sorted(values)))
