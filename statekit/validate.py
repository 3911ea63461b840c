"""Argument checks shared by the public API: bad input gets one clear error, before anything is written."""

from __future__ import annotations

import enum
import getpass
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from .codecs import is_plain_json
from .errors import InvalidArgumentError
from .models import MAX_ID_LENGTH, StateType

E = TypeVar("E", bound=enum.Enum)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def identifier(value: Any, what: str) -> str:
    """An entity id or branch name: a non-empty string of printable characters, at most 255 long."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}.")
    if not value.strip():
        raise InvalidArgumentError(f"{what} must not be empty.")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgumentError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}.")
    if _CONTROL.search(value):
        raise InvalidArgumentError(f"{what} must not contain control characters: {value!r}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} is not valid Unicode text: {value!r}.") from None
    return value


def item_name(value: Any) -> str:
    """A name inside a state (a variable name, a key): a non-empty string."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"State keys must be strings, not {type(value).__name__} ({value!r}).")
    if not value:
        raise InvalidArgumentError("State keys must not be empty.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"State key {value!r} is not valid Unicode text.") from None
    return value


def item_names(values: Iterable[Any]) -> list[str]:
    if isinstance(values, str):
        values = [values]
    return [item_name(v) for v in values]


def optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}.")
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters.")
    return value


def optional_version(value: Any, what: str, *, allow_zero: bool = False) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{what} must be a whole number, not {type(value).__name__} ({value!r}).")
    if value < (0 if allow_zero else 1):
        raise InvalidArgumentError(f"{what} must be {'0 or more' if allow_zero else '1 or more'}, not {value}.")
    return int(value)


def json_mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a dict, not {type(value).__name__}.")
    out = dict(value)
    if not is_plain_json(out):
        raise InvalidArgumentError(f"{what} must hold plain JSON values (str, int, float, bool, None, lists, dicts).")
    return out


def enum_value(value: Any, cls: type[E], what: str) -> E:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise InvalidArgumentError(f"{what} must be one of {choices}; got {value!r}.") from None


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
