"""Noticing saves the store's observers cannot report: another process, another StateManager.

A StateManager's observers fire only for changes made through that same
object. To see changes made elsewhere (a colleague on the shared PostgreSQL
store, a script, another kernel), the panel can poll: every few seconds, while
the kernel is idle, it reads the entity's branch heads (one small query) and
refreshes when they moved. The polling runs as a task on the kernel's asyncio
loop, so it never runs while a cell is executing and needs no thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..store import StateManager


def heads_fingerprint(branches: pd.DataFrame) -> tuple[tuple[str, Any], ...]:
    """What changes whenever a version is saved, rolled back or branched: each branch's head."""
    return tuple(zip(branches["branch"].astype(str), branches["head_version"].astype(object), strict=True))


class HeadPoller:
    """Calls ``on_change()`` when the heads of ``entity()`` differ from ``last`` (set by the caller's refresh)."""

    def __init__(self, sm: StateManager, seconds: float, entity: Callable[[], str | None],
                 on_change: Callable[[], None], on_error: Callable[[Exception], None]):
        self.sm = sm
        self.seconds = seconds
        self.entity = entity
        self.on_change = on_change
        self.on_error = on_error
        self.last: tuple[tuple[str, Any], ...] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> bool:
        """Start polling on the running event loop; False when there is none (plain Python, no kernel)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._task = loop.create_task(self._run())
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            entity = self.entity()
            if entity is None:
                continue
            try:
                if heads_fingerprint(self.sm.branches(entity)) != self.last:
                    self.on_change()
            except Exception as exc:  # noqa: BLE001 - keep polling; the panel shows what failed
                self.on_error(exc)
