"""Adapters that put agent frameworks' own persistence on top of a statekit store.

- :mod:`statekit.integrations.langgraph`: ``StatekitSaver``, a LangGraph
  checkpointer (``pip install "statekit[langgraph]"``);
- :mod:`statekit.integrations.openai_agents`: ``StatekitSession``, an OpenAI
  Agents SDK session (``pip install "statekit[openai-agents]"``).

This package imports neither framework: each adapter module imports its own,
and says what to install when it is missing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StatekitSaver", "StatekitSession"]


def __getattr__(name: str) -> Any:
    """Import an adapter only when it is asked for, so ``import statekit.integrations`` stays light."""
    if name == "StatekitSaver":
        from .langgraph import StatekitSaver

        return StatekitSaver
    if name == "StatekitSession":
        from .openai_agents import StatekitSession

        return StatekitSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
