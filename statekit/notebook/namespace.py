"""Which of the user's variables are state, and what the notebook's entity is called.

Code is not state: modules, functions and classes are skipped (and reported),
and so are IPython's own names (``In``, ``Out``, ``get_ipython``, ``exit``,
``quit``, whatever IPython put in the namespace at start-up) and ``_``-names
(``_``, ``_i3``, ``_5``...), which are never reported.
"""

from __future__ import annotations

import functools
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit"})
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


def is_ipython_name(name: str, value: Any, hidden: dict[str, Any]) -> bool:
    """True for names IPython owns: ``_``-names, In/Out/exit..., and start-up names still bound as IPython left them."""
    if name.startswith("_") or name in IPYTHON_NAMES:
        return True
    return name in hidden and hidden[name] is value


def user_variables(user_ns: dict[str, Any], hidden: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The user's data variables, and the code-like ones skipped with the reason (module, function, class)."""
    data: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, value in list(user_ns.items()):
        if is_ipython_name(name, value, hidden):
            continue
        kind = code_kind(value)
        if kind is None:
            data[name] = value
        else:
            skipped[name] = kind
    return data, skipped


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
