"""Small text formats shared by the magics, the panel and the command line."""

from __future__ import annotations

import math
from typing import Any


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
