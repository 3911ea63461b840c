"""Which of the user's variables are state, and what the notebook's entity is called.

Code is not state: modules, functions and classes are skipped (and reported).
Some names are never saved nor bound by a load (:func:`refused_name`, the one
rule both sides use): ``_``-names (``_``, ``_i3``, ``__builtins__``...), IPython's
own (``In``, ``Out``, ``get_ipython``, ``exit``, ``quit``, whatever IPython put
in the namespace at start-up), and Python's builtins (``print``, ``sum``): a
state written through the API that held one of them would break the kernel.
"""

from __future__ import annotations

import builtins
import functools
import os
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit"})
BUILTIN_NAMES = frozenset(n for n in dir(builtins) if not n.startswith("_"))
FALLBACK_ENTITY = "notebook"
"""The entity when the kernel does not know the notebook's file name (a terminal IPython, an old server)."""

_FUNCTION_TYPES = (
    types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
    types.MethodWrapperType, types.WrapperDescriptorType, functools.partial,
)


def code_kind(value: Any) -> str | None:
    """'module', 'function' or 'class' when ``value`` is code rather than data, else None."""
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, type):
        return "class"
    if isinstance(value, _FUNCTION_TYPES):
        return "function"
    return None


def refused_name(name: str, hidden: Mapping[str, Any]) -> str | None:
    """Why statekit never saves nor loads a variable called ``name``, or None when it may.

    ``hidden`` is the shell's ``user_ns_hidden`` (what IPython put in the namespace).
    """
    if not isinstance(name, str) or not name.isidentifier():
        return "not a Python name"
    if name.startswith("_"):
        return "a _-name"
    if name in IPYTHON_NAMES or name in hidden:
        return "IPython's own name"
    if name in BUILTIN_NAMES:
        return f"shadows the builtin {name}"
    return None


def user_variables(user_ns: dict[str, Any], hidden: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The user's data variables, and those skipped with the reason (module, function, class, a builtin's name).

    IPython's own names and ``_``-names are left out without a reason: they are never reported.
    """
    data: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, value in list(user_ns.items()):
        reason = refused_name(name, hidden)
        if reason is not None and not reason.startswith("shadows"):
            continue
        kind = code_kind(value)
        if kind is not None:
            skipped[name] = kind
        elif reason is not None:
            skipped[name] = reason
        else:
            data[name] = value
    return data, skipped


def split_loadable(state: Mapping[str, Any], hidden: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the values a load may bind, the names it must not: see :func:`refused_name`)."""
    ok: dict[str, Any] = {}
    refused: list[str] = []
    for name, value in state.items():
        if refused_name(name, hidden) is None:
            ok[name] = value
        else:
            refused.append(name)
    return ok, refused


def default_entity(user_ns: dict[str, Any]) -> str:
    """The notebook's file name without its suffix, from ``__session__`` (set by ipykernel) or
    ``$JPY_SESSION_NAME`` (set by Jupyter Server); else ``"notebook"``."""
    for candidate in (user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate.strip():
            stem = Path(candidate.strip()).stem
            if stem and stem.isprintable():
                return stem
    return FALLBACK_ENTITY


def approx_size(value: Any) -> int:
    """A cheap estimate of a value's size in bytes (for progress bars and 'small value' checks)."""
    try:
        if isinstance(value, (pd.DataFrame, pd.Series)):
            usage = value.memory_usage(index=True, deep=False)
            return int(usage.sum()) if isinstance(usage, pd.Series) else int(usage)
        if isinstance(value, np.ndarray):
            return int(value.nbytes)
        if isinstance(value, (str, bytes, bytearray)):
            return len(value)
        return int(sys.getsizeof(value))
    except Exception:  # noqa: BLE001 - an estimate; odd objects count as small
        return 0


def describe_type(value: Any) -> str:
    """A value's type as users know it: ``generator``, ``sqlite3.Connection``, ``pandas.DataFrame``."""
    t = type(value)
    module = t.__module__
    if module == "builtins":
        return t.__qualname__
    return f"{module.split('.')[0] if module.startswith('pandas') else module}.{t.__qualname__}"
