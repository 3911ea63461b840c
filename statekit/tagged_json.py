"""Tagged JSON: exact storage for simple Python values that plain JSON would change.

Tuples, sets, bytes, dates and times (with their zone), Decimals, UUIDs, NaN and
infinities, complex numbers, numpy scalars and dicts with non-string keys are
written as ``{"__sk__": tag, "v": ...}`` objects. Decoding builds only these
known types, so a stored value can never make the reader run code.
"""

from __future__ import annotations

import base64
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


def encode(v: Any, depth: int = 0) -> Any:
    if depth > 200:
        raise ValueError("nested too deeply")
    t = type(v)
    if v is None or t is bool or t is int:
        return v
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
        return {TAG: "datetime", "v": v.isoformat(), "tz": None, "fold": v.fold}
    if t is dt.date:
        return {TAG: "date", "v": v.isoformat()}
    if t is dt.time:
        return {TAG: "time", "v": v.isoformat(), "tz": _tz_key(v.tzinfo)}
    if t is dt.timedelta:
        return {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if t is pd.Timestamp:
        return {TAG: "timestamp", "v": v.isoformat(), "unit": v.unit, "tz": _tz_key(v.tzinfo)}
    if t is pd.Timedelta:
        return {TAG: "pd_timedelta", "v": int(v.value), "unit": v.unit}
    if isinstance(v, np.generic) and v.dtype.kind in "biufcmM":
        kind = v.dtype.kind
        payload = int(v.view(np.int64)) if kind in "mM" else encode(v.item(), depth + 1)
        return {TAG: "np", "dtype": v.dtype.str, "v": payload}
    raise TypeError(type(v).__name__)


def _tz_key(tz: dt.tzinfo | None) -> str | None:
    if tz is None or tz is dt.UTC:
        return None
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return str(key) if key else None


def decode(v: Any) -> Any:
    if type(v) is list:
        return [decode(x) for x in v]
    if type(v) is not dict:
        return v
    tag = v.get(TAG)
    if tag is None:
        return {k: decode(x) for k, x in v.items()}
    p = v["v"]
    if tag == "str":
        return base64.b64decode(p).decode("utf-8", "surrogatepass")
    if tag == "float":
        return float(p)
    if tag == "dict":
        return {_freeze(decode(k)): decode(x) for k, x in p}
    if tag == "tuple":
        return tuple(decode(x) for x in p)
    if tag == "set":
        return {_freeze(decode(x)) for x in p}
    if tag == "frozenset":
        return frozenset(_freeze(decode(x)) for x in p)
    if tag == "bytes":
        return base64.b64decode(p)
    if tag == "complex":
        return complex(float(p[0]), float(p[1]))
    if tag == "decimal":
        return decimal.Decimal(p)
    if tag == "uuid":
        return uuid.UUID(p)
    if tag == "datetime":
        out = dt.datetime.fromisoformat(p).replace(fold=v.get("fold", 0))
        return out.replace(tzinfo=zoneinfo.ZoneInfo(v["tz"])) if v.get("tz") else out
    if tag == "date":
        return dt.date.fromisoformat(p)
    if tag == "time":
        out_t = dt.time.fromisoformat(p)
        return out_t.replace(tzinfo=zoneinfo.ZoneInfo(v["tz"])) if v.get("tz") else out_t
    if tag == "timedelta":
        return dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2])
    if tag == "timestamp":
        ts = pd.Timestamp(p).as_unit(v["unit"])
        return ts.tz_convert(v["tz"]) if v.get("tz") else ts
    if tag == "pd_timedelta":
        return pd.Timedelta(p, unit="ns").as_unit(v["unit"])
    if tag == "np":
        dtype = np.dtype(v["dtype"])
        if dtype.kind in "mM":  # stored as the int64 count of its unit (NaT included)
            return np.array(p, dtype=np.int64).view(dtype)[()]
        return dtype.type(decode(p))
    raise IntegrityError(f"unknown tag {tag!r} in stored value")


def _freeze(v: Any) -> Any:
    """Lists decoded where a hashable was stored (never happens for our own output)."""
    return tuple(v) if type(v) is list else v
