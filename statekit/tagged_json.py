"""Tagged JSON: exact storage for simple Python values that plain JSON would change.

Tuples, sets, bytes, dates and times (with their zone), Decimals, UUIDs, NaN and
infinities, complex numbers, numpy scalars and dicts with non-string keys are
written as ``{"__sk__": tag, "v": ...}`` objects. Decoding builds only these
known types, so a stored value can never make the reader run code.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import math
import uuid
import zoneinfo
from typing import Any

import numpy as np
import pandas as pd

from .errors import IntegrityError

TAG = "__sk__"


def utf8_ok(s: str) -> bool:
    """False for strings with lone surrogates, which cannot be stored as text."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


BIG_INT_BITS = 4000
"""Larger ints are stored in hex: Python refuses to turn ints of over 4,300 digits into decimal text."""
MAX_DEPTH = 200


def encode(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    t = type(v)
    if v is None or t is bool:
        return v
    if t is int:
        return v if v.bit_length() <= BIG_INT_BITS else {TAG: "int", "v": hex(v)}
    if t is str:
        if utf8_ok(v):
            return v
        return {TAG: "str", "v": base64.b64encode(v.encode("utf-8", "surrogatepass")).decode()}
    if t is float:
        return v if math.isfinite(v) else {TAG: "float", "v": repr(v)}
    if t is list:
        return [encode(x, depth + 1) for x in v]
    if t is dict:
        if all(type(k) is str and k != TAG and utf8_ok(k) for k in v):
            return {k: encode(x, depth + 1) for k, x in v.items()}
        return {TAG: "dict", "v": [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]}
    if t is tuple:
        return {TAG: "tuple", "v": [encode(x, depth + 1) for x in v]}
    if t is set or t is frozenset:
        return {TAG: t.__name__, "v": [encode(x, depth + 1) for x in v]}
    if t is bytes:
        return {TAG: "bytes", "v": base64.b64encode(v).decode()}
    if t is complex:
        return {TAG: "complex", "v": [repr(v.real), repr(v.imag)]}
    if t is decimal.Decimal:
        return {TAG: "decimal", "v": str(v)}
    if t is uuid.UUID:
        return {TAG: "uuid", "v": str(v)}
    if t is dt.datetime:
        key = _tz_key(v.tzinfo)
        if key:  # wall time, fold and zone name: exact even inside a DST gap or overlap
            return {TAG: "datetime", "v": v.replace(tzinfo=None).isoformat(), "tz": key, "fold": v.fold}
        _check_offset_zone(v.tzinfo, "datetime")
        return {TAG: "datetime", "v": v.isoformat(), "tz": None, "fold": v.fold}
    if t is dt.date:
        return {TAG: "date", "v": v.isoformat()}
    if t is dt.time:
        key = _tz_key(v.tzinfo)
        if not key:
            _check_offset_zone(v.tzinfo, "time")
        return {TAG: "time", "v": v.isoformat(), "tz": key, "fold": v.fold}
    if t is dt.timedelta:
        return {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if t is pd.Timestamp:
        key = _tz_key(v.tzinfo)
        if not key:
            _check_offset_zone(v.tzinfo, "Timestamp")
        return {TAG: "timestamp", "v": v.isoformat(), "unit": v.unit, "tz": key, "utc": v.tzinfo is dt.UTC}
    if t is pd.Timedelta:
        return {TAG: "pd_timedelta", "v": int(v.value), "unit": v.unit}
    if v is pd.NA:
        return {TAG: "na", "v": None}
    if v is pd.NaT:
        return {TAG: "nat", "v": None}
    if isinstance(v, np.generic) and v.dtype.kind in "biufcmM":
        kind = v.dtype.kind
        if kind in "fc" and v.dtype.itemsize > (8 if kind == "f" else 16):  # long double: exact decimal text
            parts = [v] if kind == "f" else [v.real, v.imag]
            return {TAG: "np_long", "dtype": v.dtype.str, "nmant": int(np.finfo(v.dtype).nmant),
                    "v": [np.format_float_scientific(x, unique=True) for x in parts]}
        payload = int(v.view(np.int64)) if kind in "mM" else encode(v.item(), depth + 1)
        return {TAG: "np", "dtype": v.dtype.str, "v": payload}
    raise TypeError(type(v).__name__)


def _check_offset_zone(tz: dt.tzinfo | None, what: str) -> None:
    """A zone without a name must be a plain fixed offset, which the ISO text carries exactly."""
    if tz is None or tz is dt.UTC:
        return
    if type(tz) is dt.timezone and tz.tzname(None) == dt.timezone(tz.utcoffset(None)).tzname(None):
        return
    raise TypeError(f"{what} with a {type(tz).__name__} time zone")


def _tz_key(tz: dt.tzinfo | None) -> str | None:
    if tz is None or tz is dt.UTC:
        return None
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return str(key) if key else None


def decode(v: Any) -> Any:
    """The value a tagged JSON stands for; IntegrityError for anything we would not have written."""
    try:
        return _decode(v, 0)
    except IntegrityError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
            zoneinfo.ZoneInfoNotFoundError, binascii.Error, decimal.InvalidOperation) as exc:
        raise IntegrityError(f"a stored tagged value is malformed ({type(exc).__name__}: {exc})") from None


def _want(value: Any, *types: type) -> Any:
    if type(value) not in types:
        raise TypeError(f"expected {' or '.join(t.__name__ for t in types)}, found {type(value).__name__}")
    return value


_UNITS = ("s", "ms", "us", "ns")
_NP_PAYLOAD: dict[str, tuple[type, ...]] = {"b": (bool,), "i": (int,), "u": (int,), "f": (float, int), "c": (complex,)}


def _decode(v: Any, depth: int) -> Any:
    if depth > MAX_DEPTH + 10:
        raise IntegrityError("a stored value is nested too deeply")
    if type(v) is list:
        return [_decode(x, depth + 1) for x in v]
    if type(v) is not dict:
        return v
    tag = v.get(TAG)
    if tag is None:
        return {k: _decode(x, depth + 1) for k, x in v.items()}
    p = v["v"]
    if tag == "str":
        return base64.b64decode(_want(p, str), validate=True).decode("utf-8", "surrogatepass")
    if tag == "int":
        return int(_want(p, str), 16)
    if tag == "float":
        out = float(_want(p, str))
        if math.isfinite(out):
            raise ValueError("a tagged float must be NaN or infinite")
        return out
    if tag == "dict":
        return {_freeze(_decode(k, depth + 1)): _decode(x, depth + 1) for k, x in _pairs(p)}
    if tag == "tuple":
        return tuple(_decode(x, depth + 1) for x in _want(p, list))
    if tag == "set":
        return {_freeze(_decode(x, depth + 1)) for x in _want(p, list)}
    if tag == "frozenset":
        return frozenset(_freeze(_decode(x, depth + 1)) for x in _want(p, list))
    if tag == "bytes":
        return base64.b64decode(_want(p, str), validate=True)
    if tag == "complex":
        re, im = _want(p, list)
        return complex(float(_want(re, str)), float(_want(im, str)))
    if tag == "decimal":
        return decimal.Decimal(_want(p, str))
    if tag == "uuid":
        return uuid.UUID(_want(p, str))
    if tag == "datetime":
        out = dt.datetime.fromisoformat(_want(p, str)).replace(fold=_fold(v))
        if v.get("tz"):
            return out.replace(tzinfo=zoneinfo.ZoneInfo(_want(v["tz"], str)))
        return out
    if tag == "date":
        return dt.date.fromisoformat(_want(p, str))
    if tag == "time":
        out_t = dt.time.fromisoformat(_want(p, str)).replace(fold=_fold(v))
        return out_t.replace(tzinfo=zoneinfo.ZoneInfo(_want(v["tz"], str))) if v.get("tz") else out_t
    if tag == "timedelta":
        days, secs, us = (_want(x, int) for x in _want(p, list))
        return dt.timedelta(days=days, seconds=secs, microseconds=us)
    if tag == "timestamp":
        unit = v["unit"]
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        ts = pd.Timestamp(_want(p, str)).as_unit(unit)
        if v.get("tz"):
            return ts.tz_convert(zoneinfo.ZoneInfo(_want(v["tz"], str)))
        return ts.tz_convert(dt.UTC) if v.get("utc") and ts.tzinfo is not None else ts
    if tag == "pd_timedelta":
        unit = v["unit"]
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        return pd.Timedelta(_want(p, int), unit="ns").as_unit(unit)
    if tag == "na":
        return pd.NA
    if tag == "nat":
        return pd.NaT
    if tag == "np":
        dtype = np.dtype(_want(v["dtype"], str))
        if dtype.kind not in "biufcmM" or dtype.fields is not None or dtype.shape:
            raise ValueError(f"unexpected numpy dtype {v['dtype']!r}")
        if dtype.kind in "mM":  # stored as the int64 count of its unit (NaT included)
            return np.array(_want(p, int), dtype=np.int64).view(dtype)[()]
        value = _decode(p, depth + 1)
        _want(value, *_NP_PAYLOAD[dtype.kind])
        return dtype.type(value)
    if tag == "np_long":
        dtype = np.dtype(_want(v["dtype"], str))
        if dtype.kind not in "fc" or dtype.itemsize <= (8 if dtype.kind == "f" else 16):
            raise ValueError(f"unexpected long double dtype {v['dtype']!r}")
        if v.get("nmant") != np.finfo(dtype).nmant:
            raise ValueError("this long double was written on a machine with another long double format")
        parts = [np.longdouble(_want(x, str)) for x in _want(p, list)]
        return dtype.type(parts[0]) if dtype.kind == "f" else dtype.type(complex(0)) + parts[0] + parts[1] * 1j
    raise IntegrityError(f"unknown tag {tag!r} in stored value")


def _pairs(p: Any) -> list[Any]:
    for pair in _want(p, list):
        if len(_want(pair, list)) != 2:
            raise ValueError("a tagged dict holds pairs")
    return p


def _fold(v: dict[str, Any]) -> int:
    fold = v.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int:
        raise ValueError("fold must be 0 or 1")
    return fold


def _freeze(v: Any) -> Any:
    """Lists decoded where a hashable was stored (never happens for our own output)."""
    return tuple(v) if type(v) is list else v
