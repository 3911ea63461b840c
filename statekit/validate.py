"""Argument checks shared by the public API: bad input gets one clear error, before anything is written.

Every bound the database has (column lengths, 64-bit integers, valid UTF-8) is
checked here, so both backends refuse the same inputs with the same message
instead of one of them raising a driver error.
"""

from __future__ import annotations

import enum
import getpass
import json
import math
import numbers
import operator
import os
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

from .codecs import dumps, is_plain_json
from .errors import InvalidArgumentError
from .models import MAIN_BRANCH, MAX_ID_LENGTH, StateType

E = TypeVar("E", bound=enum.Enum)
MAX_INT = 2**63 - 1
"""Versions, limits and counts are 64-bit signed integers in both databases."""
MAX_TEXT = 1_000_000
"""Messages and reasons longer than this are refused (they are meant to be read by people)."""
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
"""Unicode categories that render as nothing or move text: controls, format (bidi, zero-width), surrogates,
private use, line and paragraph separators. Identifiers holding them look like other identifiers."""


def shown(value: Any, limit: int = 80) -> str:
    """A value for an error message: escaped (never raw control characters), short, and never failing
    (an int of 5,000 digits or an object whose repr raises still gets a description)."""
    try:
        text = ascii(value) if isinstance(value, str) else ascii(repr(value))[1:-1]
    except Exception:  # noqa: BLE001 - e.g. ValueError for ints past 4,300 digits
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def identifier(value: Any, what: str) -> str:
    """An entity id or branch name: printable text, at most 255 characters, no surrounding whitespace.

    Characters that are invisible or reorder text (bidi overrides, zero-width
    spaces, controls, surrogates) are refused: two ids that print alike must be equal.
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}.")
    if not value.strip():
        raise InvalidArgumentError(f"{what} must not be empty.")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgumentError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}.")
    if value != value.strip():
        raise InvalidArgumentError(f"{what} must not start or end with whitespace: {shown(value)}.")
    for ch in value:
        if unicodedata.category(ch) in _HIDDEN:
            raise InvalidArgumentError(
                f"{what} must not contain control characters or other invisible characters "
                f"(U+{ord(ch):04X} in {shown(value)})."
            )
    return value


def entity_ids(values: Any) -> list[str]:
    """A list of entity ids. A single string is refused, not read as its characters ("abc" is not a, b, c)."""
    if isinstance(values, (str, bytes, bytearray, Mapping)) or not isinstance(values, Iterable):
        raise InvalidArgumentError(
            f"entity_ids must be a list of entity ids, not {type(values).__name__} ({shown(values)})."
        )
    return [identifier(v, "entity_id") for v in values]


def branch(value: Any, what: str = "branch") -> str:
    """A branch name, ``main`` when None (and only None: a value whose truth is ambiguous is not a default)."""
    return MAIN_BRANCH if value is None else identifier(value, what)


def item_name(value: Any) -> str:
    """A name inside a state (a variable name, a key): a non-empty string."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"State keys must be strings, not {type(value).__name__} ({shown(value)}).")
    if not value:
        raise InvalidArgumentError("State keys must not be empty.")
    if not _utf8(value):
        raise InvalidArgumentError(f"State key {shown(value)} is not valid Unicode text (a lone surrogate).")
    return value


def item_names(values: Any, what: str = "names") -> list[str]:
    """A list of state keys; a single string counts as one name, anything not iterable is refused."""
    if isinstance(values, str):
        values = [values]
    if isinstance(values, (bytes, bytearray, Mapping)) or not isinstance(values, Iterable):
        raise InvalidArgumentError(f"{what} must be a list of names, not {type(values).__name__}.")
    return [item_name(v) for v in values]


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_text(value: Any, what: str, *, limit: int = MAX_TEXT) -> str | None:
    """Free text (a message, a reason): any printable or not, but valid Unicode, no NUL, bounded."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}.")
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters.")
    if not _utf8(value):
        raise InvalidArgumentError(f"{what} is not valid Unicode text (it holds a lone surrogate): {shown(value)}.")
    if len(value) > limit:
        raise InvalidArgumentError(f"{what} is {len(value):,} characters long; the limit is {limit:,}.")
    return value


def actor(value: Any, what: str = "actor") -> str | None:
    """Who made a change: free text that fits the 255-character actor column of both databases."""
    return optional_text(value, what, limit=MAX_ID_LENGTH)


def whole(value: Any, what: str) -> int:
    """A Python or numpy integer (never a bool, a float or a string) as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be a whole number, not {type(value).__name__} ({shown(value)}).")
    return operator.index(value)


def optional_version(value: Any, what: str, *, allow_zero: bool = False) -> int | None:
    """A version number: 1 or more (0 too where it means 'empty'), at most 2**63 - 1."""
    if value is None:
        return None
    n = whole(value, what)
    if n < (0 if allow_zero else 1):
        raise InvalidArgumentError(f"{what} must be {'0 or more' if allow_zero else '1 or more'}, not {shown(n)}.")
    if n > MAX_INT:
        raise InvalidArgumentError(f"{what} must be at most {MAX_INT} (2**63 - 1), not {shown(n)}.")
    return n


def count(value: Any, what: str, *, minimum: int = 0, optional: bool = False) -> int | None:
    """A count or limit: a whole number from ``minimum`` to 2**63 - 1."""
    if value is None and optional:
        return None
    n = whole(value, what)
    if not minimum <= n <= MAX_INT:
        raise InvalidArgumentError(f"{what} must be a whole number from {minimum} to {MAX_INT}, not {shown(n)}.")
    return n


def seconds(value: Any, what: str, *, optional: bool = False) -> float | None:
    """A finite, non-negative number of seconds (Python or numpy)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{what} must be a number of seconds, not {type(value).__name__}.")
    try:
        s = float(value)
    except (OverflowError, ValueError, TypeError):
        raise InvalidArgumentError(f"{what} is not a usable number of seconds: {shown(value)}.") from None
    if not math.isfinite(s) or s < 0:
        raise InvalidArgumentError(f"{what} must be a finite number of seconds, 0 or more, not {shown(value)}.")
    return s


def path(value: Any, what: str) -> str | os.PathLike[str]:
    """A file path: text or a path object, without NUL characters or lone surrogates."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(f"{what} must be a file path, not {type(value).__name__} ({shown(value)}).")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or "\x00" in text or not _utf8(text):
        raise InvalidArgumentError(f"{what} is not a usable file path: {shown(value)}.")
    return value


def url(value: Any) -> Any:
    """A store URL or SQLite file path: text (or a path object) without NUL characters or lone surrogates."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str) or "\x00" in text or not _utf8(text):
        raise InvalidArgumentError(
            f"url must be a SQLAlchemy URL or a SQLite file path (text without NUL characters), not {shown(value)}."
        )
    return value


def flag(value: Any, what: str) -> bool:
    """A yes/no argument: True, False (or numpy's bools). Anything else is a mistake, not a truth value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidArgumentError(f"{what} must be True or False, not {type(value).__name__} ({shown(value)}).")


def json_mapping(value: Any, what: str) -> dict[str, Any]:
    """Plain JSON metadata that both databases store and give back exactly."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a dict, not {type(value).__name__}.")
    out = dict(value)
    try:
        plain = not _too_big(out) and is_plain_json(out)
    except RecursionError:
        plain = False
    if not plain:
        raise InvalidArgumentError(
            f"{what} must hold plain JSON values (str, int, float, bool, None, lists, dicts); "
            "integers must fit in 64 bits."
        )
    try:
        same = json.loads(dumps(out)) == out
    except (ValueError, RecursionError, OverflowError):
        same = False
    if not same:
        raise InvalidArgumentError(
            f"{what} must hold plain JSON values that round-trip exactly; integers must fit in 64 bits."
        )
    return out


def _too_big(value: Any, depth: int = 0) -> bool:
    """True when an integer inside ``value`` is outside the 64-bit range: other JSON readers turn such
    numbers into inexact floats, and Python refuses to print one of more than 4,300 digits."""
    if depth > 200:
        raise RecursionError
    if type(value) is int:
        return not -(2**63) <= value < 2**64
    if type(value) is dict:
        return any(_too_big(v, depth + 1) for v in value.values())
    if type(value) is list:
        return any(_too_big(v, depth + 1) for v in value)
    return False


def enum_value(value: Any, cls: type[E], what: str) -> E:
    try:
        return cls(value)
    except (ValueError, TypeError):
        choices = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise InvalidArgumentError(f"{what} must be one of {choices}; got {shown(value)}.") from None


def state_type(value: Any) -> StateType | None:
    if value is None:
        return None
    if isinstance(value, str) and not isinstance(value, StateType):
        upper = value.upper()
        if upper in StateType.__members__:
            return StateType[upper]
    return enum_value(value, StateType, "state_type")


def default_actor() -> str:
    """Who is making changes: ``$STATEKIT_ACTOR``, else the login name."""
    env = os.environ.get("STATEKIT_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"
