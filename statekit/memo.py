"""Remembering how a DataFrame was encoded, so saving it again unchanged costs no encoding.

The proof that a frame is unchanged is a :class:`statekit.changemark.Mark` (see
there why comparing block identities under copy-on-write is not enough). This
module only keeps the policy: which frames to remember (at least ``min_bytes``
encoded, at most ``max_entries`` of them), keyed by the frame's identity while it
lives. A frame whose mark cannot be sealed is hashed at each lookup, which still
costs far less than encoding it again.

The price: while a frame is remembered, the arrays behind its blocks are read-only
at the numpy level (pandas copies a block before writing it, as for any shared
block), and after an in-place write the old block stays in memory until the frame
is saved again or garbage collected.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from . import changemark


@dataclass
class _Entry:
    ref: weakref.ref[Any]
    mark: changemark.Mark
    descriptor: dict[str, Any]
    size: int


class FrameMemo:
    """id(frame) -> how it was last encoded, while the frame is alive and unchanged."""

    def __init__(self, max_entries: int = 32, min_bytes: int = 1 << 20):
        self.max_entries = max_entries
        self.min_bytes = min_bytes
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0

    def lookup(self, frame: Any) -> tuple[dict[str, Any], int] | None:
        """The descriptor and size of an unchanged frame, or None."""
        with self._lock:
            entry = self._entries.get(id(frame))
        if entry is None or entry.ref() is not frame:
            return None
        if not entry.mark.unchanged(frame):
            self._forget(id(frame))
            return None
        self.hits += 1
        return entry.descriptor, entry.size

    def remember(self, frame: Any, descriptor: dict[str, Any], size: int) -> None:
        if self.max_entries <= 0 or size < self.min_bytes:
            return
        key = id(frame)
        mark = changemark.take(frame)
        if mark is None:
            return
        ref = weakref.ref(frame, self._forgetter(key))
        with self._lock:
            self._entries[key] = _Entry(ref, mark, descriptor, size)
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))

    def _forgetter(self, key: int) -> Any:
        def forget(_ref: Any) -> None:
            self._forget(key)

        return forget

    def _forget(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
