"""Small text formats shared by the magics, the panel and the command line."""

from __future__ import annotations

import enum
import json
import math
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd


def human_bytes(n: Any) -> str:
    """Bytes as people read them, in decimal units: ``512 B``, ``1.2 kB``, ``3.4 MB`` (``?`` if unknown)."""
    try:
        value = float(n)
    except (TypeError, ValueError):
        return "?"
    if math.isnan(value):
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Cn"})


def terminal_safe(text: Any) -> str:
    r"""``text`` with every control, format, bidi, zero-width, surrogate, private-use or unassigned
    character written as an escape (``\x1b``, ``\u202e``), so stored text cannot move the cursor,
    recolour, retitle or reorder what a terminal shows. Printable text passes unchanged."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch == " " or unicodedata.category(ch) not in _HIDDEN:
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


JSON_MAX_BITS = 14_000
"""Integers longer than this (about 4,200 digits) are written as hex text: Python refuses to print ones past
4,300 digits."""


def json_safe(v: Any, _depth: int = 0) -> Any:
    """``v`` as values ``json.dumps(..., allow_nan=False)`` writes, for ``--json`` output.

    Containers become lists and dicts with string keys (``repr`` of other keys); NaN and
    infinities become null; bytes become hex; times ISO text; numpy scalars Python ones;
    anything else its ``repr``. Never raises.
    """
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int) and not isinstance(v, enum.Enum):
        return v if v.bit_length() <= JSON_MAX_BITS else hex(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if _depth > 100:
        return repr(v)[:200]
    if isinstance(v, Mapping):
        return {_json_key(k): json_safe(x, _depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [json_safe(x, _depth + 1) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, enum.Enum):
        return json_safe(v.value, _depth + 1)
    if isinstance(v, np.generic):
        item = v.item()
        return json_safe(item, _depth + 1) if type(item) is not type(v) else str(v)
    if isinstance(v, np.ndarray) and v.size <= 1000:
        return json_safe(v.tolist(), _depth + 1)
    try:
        return str(v) if isinstance(v, (Decimal, complex, timedelta, pd.Timedelta)) else repr(v)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the output
        return f"<{type(v).__name__}>"


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    safe = json_safe(k)
    return safe if isinstance(safe, str) else json.dumps(safe, ensure_ascii=True)
