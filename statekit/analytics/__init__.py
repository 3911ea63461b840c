"""State-aware analytics objects: sessions, agents and workflows that survive restarts.

Each is one entity in a statekit store, restored when it is constructed and
saved at every change (one snapshot and one transition per change).
"""

from __future__ import annotations

from .agent import StateAwareAgent, is_failure, performance_metrics
from .session import StateAwareAnalyticsSession
from .workflow import StateAwareWorkflow, WorkflowStateError

__all__ = [
    "StateAwareAgent",
    "StateAwareAnalyticsSession",
    "StateAwareWorkflow",
    "WorkflowStateError",
    "is_failure",
    "performance_metrics",
]
