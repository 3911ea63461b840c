"""Observers: callbacks run after a change has been committed.

An observer that raises never breaks the save that triggered it: the error is
counted in the metrics and reported as a warning.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidArgumentError
from .models import StateType
from .snapshot import StateEvent

Callback = Callable[[StateEvent], object]


@dataclass(frozen=True)
class _Subscription:
    callback: Callback
    state_type: StateType | None
    entity_id: str | None


class ObserverRegistry:
    def __init__(self) -> None:
        self._subs: list[_Subscription] = []
        self._lock = threading.Lock()

    def subscribe(
        self, callback: Callback, state_type: StateType | str | None = None, entity_id: str | None = None
    ) -> Callable[[], None]:
        if not callable(callback):
            raise InvalidArgumentError(f"subscribe() needs a callable, not {type(callback).__name__}.")
        st = StateType(state_type) if state_type is not None else None
        sub = _Subscription(callback, st, entity_id)
        with self._lock:
            self._subs.append(sub)

        def unsubscribe() -> None:
            with self._lock:
                if sub in self._subs:
                    self._subs.remove(sub)

        return unsubscribe

    def notify(self, event: StateEvent) -> int:
        """Call the matching observers; return how many raised."""
        with self._lock:
            subs = list(self._subs)
        failures = 0
        for sub in subs:
            if sub.state_type is not None and sub.state_type != event.state_type:
                continue
            if sub.entity_id is not None and sub.entity_id != event.entity_id:
                continue
            try:
                sub.callback(event)
            except Exception as exc:  # noqa: BLE001 - an observer must never break a save
                failures += 1
                warnings.warn(
                    f"statekit observer {getattr(sub.callback, '__name__', sub.callback)!r} raised {exc!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return failures

    def __len__(self) -> int:
        return len(self._subs)
