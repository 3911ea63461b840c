"""statekit: persist, version and resume notebook and agent state.

Everything users need is importable from here; ``%load_ext statekit`` loads
the ``%state`` magics.
"""

from __future__ import annotations

from typing import Any

from .analytics import StateAwareAgent, StateAwareAnalyticsSession, StateAwareWorkflow, WorkflowStateError
from .db import DatabaseManager
from .errors import (
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    MergeConflictError,
    NotFoundError,
    SchemaVersionError,
    StatekitError,
    UnserializableError,
    UntrustedPayloadError,
)
from .models import SnapshotStatus, StateType, TransitionType
from .snapshot import StateEvent, StateSnapshot, StateTransition
from .store import StateManager

__version__ = "0.1.0"

__all__ = [
    "ConflictError",
    "DatabaseManager",
    "IntegrityError",
    "InvalidArgumentError",
    "MergeConflictError",
    "NotFoundError",
    "SchemaVersionError",
    "SnapshotStatus",
    "StateAwareAgent",
    "StateAwareAnalyticsSession",
    "StateAwareWorkflow",
    "StateEvent",
    "StateManager",
    "StateSnapshot",
    "StateTransition",
    "StateType",
    "StatekitError",
    "TransitionType",
    "UnserializableError",
    "UntrustedPayloadError",
    "WorkflowStateError",
    "__version__",
    "load_ipython_extension",
    "panel",
    "unload_ipython_extension",
]


def panel(store: StateManager | str | None = None, entity: str | None = None, *,
          poll: float | None = None) -> Any:
    """Open the state panel: the version timeline of ``entity`` and the diff of two versions.

    Imports ipywidgets and plotly on first use; see :mod:`statekit.panels`.
    """
    from .panels import panel as _panel

    return _panel(store, entity, poll=poll)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext statekit``: register the ``%state`` and ``%%state`` magics."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext statekit``: remove the magics and the auto-checkpoint hook."""
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
