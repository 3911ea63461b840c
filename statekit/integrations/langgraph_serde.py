"""How StatekitSaver stores channel values, and which stored types loading may rebuild.

LangGraph's serializer writes a non-JSON value as msgpack in which each object
is ``(module, class name, arguments)``; loading it back imports that module and
calls that class. Whoever can write to the database chooses those names, so a
loader that rebuilds whatever it reads runs code an attacker picked (LangGraph's
default, with a warning). Rebuilding nothing instead turns the graph's own
pydantic models, dataclasses and enums into dicts.

The trust rule, in the spirit of statekit's signed pickles:

- **A value written by this saver class with the default serializer, in a
  process holding your statekit signing key** (``~/.config/statekit/key`` or
  ``$STATEKIT_KEY``) carries the list of the classes in it and an HMAC over that
  list and its bytes. When the HMAC checks with your key, those classes are
  rebuilt, exactly as SqliteSaver's default would: it is your own program's
  value. A copied, altered or foreign value fails the check.
- **Any other value** is loaded in LangGraph's strict mode: its built-in safe
  types (datetimes, UUIDs, sets, langchain messages, Send...), the types
  LangGraph hands over from the graph's schema (``with_allowlist``, under
  ``LANGGRAPH_STRICT_MSGPACK``), and the classes this saver itself wrote in this
  process. Anything else comes back as its fields (a dict), never constructed.

Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

import ormsgpack

from .. import codecs
from ..signing import SigningKey

try:  # LangGraph's own list of types its strict mode always rebuilds
    from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_TYPES as _SAFE
except ImportError:  # pragma: no cover - an older langgraph-checkpoint: record every type
    _SAFE = frozenset()

SERDE_TAG = "__lg_serde__"
"""Marks a value stored as LangGraph serializer output: ``{SERDE_TAG: type, "data": bytes[, "types", "sig"]}``."""

_CONSTRUCTOR_EXTS = {0, 1, 2, 4, 5}  # JsonPlusSerializer's ext codes whose payload starts with (module, name, ...)
_DERIVED_MAX = 64


def classes_in(data: bytes) -> set[tuple[str, str]]:
    """The (module, class) pairs a msgpack payload of LangGraph's serializer would construct, outside its safe set.

    Walks the ext records without constructing anything.
    """
    found: set[tuple[str, str]] = set()

    def hook(code: int, payload: bytes) -> None:
        inner = ormsgpack.unpackb(payload, ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
        if code in _CONSTRUCTOR_EXTS and isinstance(inner, list | tuple) and len(inner) >= 2:
            key = (str(inner[0]), str(inner[1]))
            if key not in _SAFE:
                found.add(key)
        return None

    ormsgpack.unpackb(data, ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
    return found


class ValueCodec:
    """Packs channel values for the store and unpacks them under the trust rule of this module.

    ``sign`` is False when the saver was given its own serializer: the
    caller chose that serializer's trust rules, and its format is not
    LangGraph's msgpack, so no class list is recorded.
    """

    def __init__(self, *, sign: bool) -> None:
        self.sign = sign
        self._key: SigningKey | None = None
        self._lock = threading.Lock()
        self._written: set[tuple[str, str]] = set()
        self._derived: OrderedDict[tuple[Any, frozenset[tuple[str, str]]], Any] = OrderedDict()

    def pack(self, serde: Any, value: Any) -> Any:
        """Plain JSON as it is (readable in the panel and from SQL); anything else through LangGraph's serializer."""
        if codecs.is_plain_json(value):
            return value
        type_, data = serde.dumps_typed(value)
        data = bytes(data)
        out: dict[str, Any] = {SERDE_TAG: type_, "data": data}
        if self.sign and type_ == "msgpack":
            classes = classes_in(data)
            if classes:
                with self._lock:
                    self._written |= classes
                listed = sorted([m, n] for m, n in classes)
                out["types"] = listed
                out["sig"] = self._signing_key().sign(_signed_bytes(type_, listed, data))
        return out

    def unpack(self, serde: Any, stored: Any) -> Any:
        """The inverse of :meth:`pack` (plain JSON never holds bytes, so the tag cannot be forged by a value)."""
        if not (type(stored) is dict and SERDE_TAG in stored and type(stored.get("data")) is bytes):
            return stored
        type_, data = stored[SERDE_TAG], stored["data"]
        trusted = self._verified_classes(type_, data, stored)
        with self._lock:
            written = frozenset(self._written)
        return self._serde_for(serde, trusted | written).loads_typed((type_, data))

    # ---- helpers

    def _signing_key(self) -> SigningKey:
        with self._lock:
            if self._key is None:
                self._key = SigningKey.load()
            return self._key

    def _verified_classes(self, type_: str, data: bytes, stored: dict[str, Any]) -> frozenset[tuple[str, str]]:
        listed, sig = stored.get("types"), stored.get("sig")
        if not (isinstance(listed, list) and isinstance(sig, str) and type_ == "msgpack"):
            return frozenset()
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in listed):
            return frozenset()
        if not self._signing_key().verify(_signed_bytes(type_, listed, data), sig):
            return frozenset()  # not written with this reader's key: strict
        return frozenset((m, n) for m, n in listed)

    def _serde_for(self, serde: Any, classes: frozenset[tuple[str, str]]) -> Any:
        """``serde`` with ``classes`` added to its msgpack allowlist (cached), or ``serde`` itself."""
        widen = getattr(serde, "with_msgpack_allowlist", None)
        if not classes or widen is None:
            return serde
        key = (serde, classes)
        with self._lock:
            found = self._derived.get(key)
            if found is not None:
                self._derived.move_to_end(key)
                return found
        found = widen(sorted(classes))
        with self._lock:
            self._derived[key] = found
            while len(self._derived) > _DERIVED_MAX:
                self._derived.popitem(last=False)
        return found


def _signed_bytes(type_: str, listed: list[list[str]], data: bytes) -> bytes:
    head = json.dumps([type_, listed], separators=(",", ":")).encode("utf-8")
    return b"statekit-langgraph-value\0" + hashlib.sha256(head).digest() + data
