"""Which names (and key paths inside plain-JSON dicts) a version changed relative to its parent.

Computed at save time from what the save writes and the parent row holds, without decoding any
payload: inline JSON values are compared value by value (dicts key by key), other values by their
descriptors (codec and chunk digests). Stored in ``state_snapshots.changed`` as a JSON object
``{name: [paths] | null}``: each path is the deepest item whose value changed as a whole (in
``diff()``'s notation: ``params.lr``, ``params['a b']``); ``null`` means the name changed in more
than :data:`MAX_PATHS` places, so a query on a path inside it compares the stored values instead.

A query ``changed="params.lr"`` matches a version when it changed ``params.lr`` itself or something
inside it (``params.lr.x``); when a whole value around it changed (``params`` added, removed, or
replaced by a non-dict), the two inline values at ``params.lr`` are compared. So
``history(entity, changed=...)`` lists exactly the versions where that item differs from the
parent's (a key path inside a value stored as chunks counts as changed whenever the value does).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any
from weakref import WeakKeyDictionary

from .codecs import dumps
from .diff import _path

MAX_PATHS = 256
"""Past this many changed paths in one name, only the name is recorded (``null``)."""


def _canon(value: Any) -> str:
    """A strict JSON text: 1, 1.0 and true differ, key order does not."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _strip(desc: Any) -> Any:
    return {k: v for k, v in desc.items() if k != "size"} if isinstance(desc, dict) else desc


def same(a: Any, b: Any) -> bool:
    """Strict equality of JSON values: 1, 1.0 and true differ; key order does not matter."""
    t = type(a)
    if t is not type(b):
        return False
    if t is dict:
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if t is list:
        if len(a) != len(b):
            return False
        if a != b:  # == is looser than same() (1 == 1.0 == True), never stricter
            return False
        types = list(map(type, a))
        if types != list(map(type, b)):
            return False
        if dict in types or list in types:
            return all(same(x, y) for x, y in zip(a, b, strict=True) if type(x) in _NESTED)
        return True
    return bool(a == b)


_NESTED = (dict, list)


def _walk(prefix: str, a: Any, b: Any, out: list[str]) -> bool:
    """Append the paths where ``a`` and ``b`` differ; False once there are more than MAX_PATHS."""
    if type(a) is dict and type(b) is dict:
        for key in dict.fromkeys([*a, *b]):
            path = _path(prefix, key)
            if key not in a or key not in b:
                out.append(path)
            elif not _walk(path, a[key], b[key], out):
                return False
            if len(out) > MAX_PATHS:
                return False
        return True
    if not same(a, b):
        out.append(prefix)
    return len(out) <= MAX_PATHS


def changed(old_data: dict[str, Any], old_items: dict[str, Any], new_data: dict[str, Any],
            new_items: dict[str, Any]) -> dict[str, list[str] | None]:
    """``{name: [paths] | None}`` for every name whose stored value differs between the two versions."""
    out: dict[str, list[str] | None] = {}
    for name in dict.fromkeys([*old_data, *old_items, *new_data, *new_items]):
        if name in old_data and name in new_data:
            paths: list[str] = []
            whole = _walk(name, old_data[name], new_data[name], paths)
            if paths:
                out[name] = paths if whole else None
        elif name in old_items and name in new_items:
            if _strip(old_items[name]) != _strip(new_items[name]):
                out[name] = [name]
        else:  # added, removed, or moved between inline and chunked storage
            out[name] = [name]
    return out


def _loads(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parent_content(cur: Any, db: Any, parent_id: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parent's inline values and item descriptors ({} and {} for none, or an unreadable row)."""
    if parent_id is None:
        return {}, {}
    cols = "state_data, items" if db.is_sqlite else "state_data::text, items::text"
    cur.execute(db.sql(f"SELECT {cols} FROM state_snapshots WHERE snapshot_id = :sid"), {"sid": parent_id})
    row = cur.fetchone()
    return (_loads(row[0]), _loads(row[1])) if row else ({}, {})


_WRITTEN: WeakKeyDictionary[Any, OrderedDict[str, tuple[str, str]]] = WeakKeyDictionary()
"""Per database, the content text of the last snapshots this process wrote: the next save's parent, mostly."""
_KEEP = 64
_LOCK = threading.Lock()


def for_save(cur: Any, db: Any, parent_id: str | None, state_data: dict[str, Any], items: dict[str, Any],
             written: tuple[str, str, str] | None = None) -> str:
    """The ``changed`` column of a snapshot about to be written after ``parent_id``.

    ``written`` is (snapshot id, state text, items text) of the snapshot being written: remembered,
    so that the next save after it needs no query to read its parent.
    """
    with _LOCK:
        memo = _WRITTEN.setdefault(db, OrderedDict())
        known = memo.get(parent_id) if parent_id is not None else None
        if written is not None:
            memo[written[0]] = (written[1], written[2])
            while len(memo) > _KEEP:
                memo.popitem(last=False)
    if known is not None:
        old_data, old_items = _loads(known[0]), _loads(known[1])
    else:
        old_data, old_items = parent_content(cur, db, parent_id)
    return dumps(changed(old_data, old_items, state_data, items))


# ------------------------------------------------------------------ queries


def split_path(query: str) -> list[str]:
    """The prefixes of ``query`` that could be a top-level name, shortest first (``a.b[1]`` -> a, a.b, a.b[1])."""
    cuts = [i for i, ch in enumerate(query) if ch in ".[" and i > 0]
    return [query[:i] for i in cuts] + [query]


def matches(entry: dict[str, Any], query: str) -> bool | None:
    """Whether a ``changed`` entry covers ``query``; None when only the stored values can tell.

    That is when the name is recorded as ``null``, or when a whole value around the item changed
    (``params`` went from 5 to a dict: ``params.lr`` changed only if the new dict has it).
    """
    unsure = False
    for name in split_path(query):
        if name not in entry:
            continue
        paths = entry[name]
        if paths is None:
            if name == query:
                return True
            unsure = True
            continue
        for p in paths:
            if p == query or p.startswith((query + ".", query + "[")):
                return True
            if query.startswith((p + ".", p + "[")):
                unsure = True  # a whole value around it changed: the item itself may not have
    return None if unsure else False


def value_at(state_data: dict[str, Any], name: str, query: str) -> Any:
    """The inline value at ``query`` below ``name`` (a sentinel when absent), for the ``null`` case."""
    missing = _MISSING
    if name not in state_data:
        return missing
    value = state_data[name]
    rest = query[len(name):]
    while rest:
        if type(value) is not dict:
            return missing
        for key in value:
            p = _path("", key)
            if rest.startswith(p) and (len(rest) == len(p) or rest[len(p)] in ".["):
                value, rest = value[key], rest[len(p):]
                break
        else:
            return missing
    return _canon(value)


_MISSING = object()
