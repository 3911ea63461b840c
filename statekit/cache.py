"""A bounded in-memory LRU of decoded states, keyed by snapshot id.

Snapshots are immutable, so a cached state never goes stale. A load that
decodes hands out the decoded objects themselves (nobody else holds them);
the cache keeps its own copies and hands out copies of those, so a caller's
edits never reach it. Only exact copies are made (frames, arrays, JSON-like
values: :func:`statekit.codecs.copy_value`): a state holding any other value
(an unpickled object, whose ``__deepcopy__`` may not be faithful) is not
cached, and every load decodes it again from its stored bytes.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .codecs import copy_value


@dataclass
class CachedState:
    snapshot: Any  # the StateSnapshot (metadata only)
    names: tuple[str, ...]
    inline_text: str  # the JSON text of the inline values: json.loads gives a fresh copy
    values: dict[str, Any]  # decoded non-inline values
    nbytes: int
    shared: bool = False  # the cache's own copy: hand out copies; else fresh from decoding: hand out as is

    def materialize(self, only: set[str] | None = None) -> dict[str, Any]:
        inline = json.loads(self.inline_text)
        if not self.values and only is None:
            return inline  # inline values are stored in name order
        out: dict[str, Any] = {}
        for n in self.names:
            if only is not None and n not in only:
                continue
            if n in inline:
                out[n] = inline[n]
            elif n in self.values:
                out[n] = copy_value(self.values[n]) if self.shared else self.values[n]
        return out

    def kept(self) -> CachedState | None:
        """The cache's own copy of this state, or None when some value cannot be copied exactly."""
        try:
            values = {n: copy_value(v, exact_only=True) for n, v in self.values.items()}
        except TypeError:
            return None
        return CachedState(self.snapshot, self.names, self.inline_text, values, self.nbytes, shared=True)


class StateCache:
    def __init__(self, max_entries: int = 256, max_bytes: int = 512 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, CachedState] = OrderedDict()
        self._by_version: dict[tuple[str, int], str] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, snapshot_id: str) -> CachedState | None:
        with self._lock:
            entry = self._data.get(snapshot_id)
            if entry is None:
                self.misses += 1
                return None
            self._data.move_to_end(snapshot_id)
            self.hits += 1
            return entry

    def lookup_version(self, entity_id: str, version: int) -> str | None:
        return self._by_version.get((entity_id, version))

    def put(self, entry: CachedState) -> None:
        """Keep a copy of ``entry`` (``entry`` itself stays the caller's), if it can be copied exactly."""
        snap = entry.snapshot
        snapshot_id, entity_id, version = snap.snapshot_id, snap.entity_id, snap.version
        if self.max_entries <= 0 or entry.nbytes > self.max_bytes:
            return
        own = entry.kept() if not entry.shared else entry
        if own is None:
            return
        entry = own
        with self._lock:
            old = self._data.pop(snapshot_id, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[snapshot_id] = entry
            self._by_version[(entity_id, version)] = snapshot_id
            self._bytes += entry.nbytes
            while self._data and (len(self._data) > self.max_entries or self._bytes > self.max_bytes):
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.nbytes
            if len(self._by_version) > 4 * max(self.max_entries, 1):
                live = set(self._data)
                self._by_version = {k: v for k, v in self._by_version.items() if v in live}

    def discard(self, snapshot_ids: set[str]) -> None:
        with self._lock:
            for sid in snapshot_ids:
                old = self._data.pop(sid, None)
                if old is not None:
                    self._bytes -= old.nbytes
            self._by_version = {k: v for k, v in self._by_version.items() if v not in snapshot_ids}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._by_version.clear()
            self._bytes = 0

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": (self.hits / total) if total else 0.0,
            "entries": len(self._data),
            "bytes": self._bytes,
        }
