"""pandas arrays and indexes <-> Arrow "leaves" plus a JSON spec that rebuilds them exactly.

pyarrow's own pandas conversion keeps its metadata in a form pandas cannot always
read back (nested ArrowDtypes, decimals, bool or mixed column labels, index freq,
empty categoricals...). Here every pandas array is described by a small spec we
write and read ourselves: the spec names its dtype exactly and points at leaves,
plain Arrow arrays whose type the spec fixes. Anything without an exact
description raises TypeError (the save refuses it); anything decoded is checked
against the spec before pandas sees it.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import tagged_json
from .chunk_groups import ROWS_PER_CHUNK, NumpyLeaf

NP_KINDS = "biufcmM"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def np_arrow_type(dtype: np.dtype) -> pa.DataType:
    """The leaf type of a numpy dtype (complex as pairs of floats)."""
    if dtype.kind == "c":
        return pa.list_(pa.from_numpy_dtype(np.dtype(f"f{dtype.itemsize // 2}")), 2)
    return pa.from_numpy_dtype(dtype)


def safe_np_dtype(text: Any) -> np.dtype:
    """A numpy dtype read from a stored spec: plain numbers and times only, never objects."""
    if not isinstance(text, str):
        raise ValueError("a dtype must be a string")
    dtype = np.dtype(text)
    if dtype.kind not in NP_KINDS or dtype.hasobject or dtype.fields is not None or dtype.shape:
        raise ValueError(f"unexpected dtype {text!r}")
    return dtype


def _tz_spec(tz: Any) -> Any:
    if isinstance(tz, zoneinfo.ZoneInfo) and tz.key:
        return {"zone": tz.key}
    if isinstance(tz, dt.timezone):
        name = tz.tzname(None)
        off = tz.utcoffset(None)
        return {"offset": [off.days, off.seconds, off.microseconds], "name": None if tz is dt.UTC else name}
    raise TypeError(f"time zone of type {type(tz).__name__}, which cannot be stored exactly (use a zoneinfo zone)")


def _tz_from(spec: Any) -> dt.tzinfo:
    if "zone" in spec:
        return zoneinfo.ZoneInfo(str(spec["zone"]))
    d, s, us = (int(x) for x in spec["offset"])
    off = dt.timedelta(days=d, seconds=s, microseconds=us)
    return dt.UTC if spec["name"] is None and not off else dt.timezone(off, *([spec["name"]] if spec["name"] else []))


def _freq_spec(index: pd.Index) -> str | None:
    freq = getattr(index, "freq", None)
    if freq is None:
        return None
    text = freq.freqstr
    if pd.tseries.frequencies.to_offset(text) != freq:
        raise TypeError(f"index frequency {freq!r}, which cannot be stored exactly")
    return text


class Encoder:
    """Collects the leaves of one value while its specs are built."""

    def __init__(self) -> None:
        self.leaves: list[pa.Array | pa.ChunkedArray] = []

    def leaf(self, arr: pa.Array | pa.ChunkedArray) -> int:
        self.leaves.append(arr)
        return len(self.leaves) - 1

    # ------------------------------------------------------------ indexes

    def index(self, idx: pd.Index) -> dict[str, Any]:
        if type(idx) is pd.RangeIndex:
            return {"t": "range", "start": idx.start, "stop": idx.stop, "step": idx.step, "name": label(idx.name)}
        if isinstance(idx, pd.MultiIndex):
            return {"t": "multi", "levels": [self.index(level) for level in idx.levels],
                    "codes": [self.numpy(np.asarray(c)) for c in idx.codes],
                    "names": [label(n) for n in idx.names]}
        return {"t": "index", "array": self.array(idx.array), "name": label(idx.name), "freq": _freq_spec(idx),
                "cls": type(idx).__name__}

    # ------------------------------------------------------------ arrays

    def numpy(self, values: np.ndarray) -> dict[str, Any]:
        dtype = values.dtype
        if dtype.kind not in NP_KINDS or dtype.fields is not None:
            raise TypeError(f"numpy dtype {dtype}, which has no exact Arrow form")
        if dtype.kind == "c":
            flat = np.ascontiguousarray(values).view(f"f{dtype.itemsize // 2}")
            arr = pa.FixedSizeListArray.from_arrays(pa.array(flat), 2)
        elif values.ndim == 1 and not values.flags.c_contiguous and len(values) > ROWS_PER_CHUNK:
            arr = NumpyLeaf(values)  # a strided column (a frame over a C-order 2D array): never copied whole
        else:
            arr = pa.array(values)
        if arr.type != np_arrow_type(dtype):
            raise TypeError(f"numpy dtype {dtype}, which has no exact Arrow form")
        return {"t": "np", "dtype": dtype.str, "leaf": self.leaf(arr)}

    def array(self, arr: Any) -> dict[str, Any]:
        dtype = arr.dtype
        if isinstance(dtype, pd.StringDtype):
            na = "nan" if isinstance(dtype.na_value, float) else "NA"
            return {"t": "string", "storage": dtype.storage, "na": na, "leaf": self.leaf(pa.array(arr))}
        if isinstance(dtype, pd.ArrowDtype):
            return {"t": "arrow", "leaf": self.leaf(arr.__arrow_array__())}
        if isinstance(arr, (np.ndarray, pd.arrays.NumpyExtensionArray)):
            values = np.asarray(arr)
            return self.objects(values) if values.dtype == object else self.numpy(values)
        if isinstance(arr, pd.arrays.DatetimeArray) and dtype.kind == "M" and getattr(dtype, "tz", None) is not None:
            spec = {"t": "dttz", "tz": _tz_spec(dtype.tz), "unit": dtype.unit}
            if _dttz_dtype(spec) != dtype or str(_dttz_dtype(spec)) != str(dtype):
                raise TypeError(f"dtype {dtype}, whose time zone cannot be stored exactly")
            utc = np.asarray(arr.tz_convert("UTC").tz_localize(None))
            return {**spec, "values": self.numpy(utc)}
        if isinstance(arr, (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray)):
            return self.numpy(np.asarray(arr))
        if isinstance(dtype, pd.api.extensions.ExtensionDtype) and hasattr(arr, "_mask") and hasattr(arr, "_data"):
            if dtype not in MASKED:
                raise TypeError(f"dtype {dtype}")
            leaf = pa.array(arr._data, mask=arr._mask)  # keeps a NaN that is not NA (Float64) as NaN
            return {"t": "masked", "dtype": str(dtype), "leaf": self.leaf(leaf)}
        if isinstance(dtype, pd.CategoricalDtype):
            return {"t": "cat", "codes": self.numpy(np.asarray(arr.codes)),
                    "categories": self.index(dtype.categories), "ordered": bool(dtype.ordered)}
        if isinstance(dtype, pd.PeriodDtype):
            return {"t": "period", "dtype": str(dtype), "leaf": self.leaf(pa.array(arr.asi8))}
        if isinstance(dtype, pd.IntervalDtype):
            if pd.api.types.pandas_dtype(str(dtype)) != dtype:
                raise TypeError(f"dtype {dtype}")
            return {"t": "interval", "dtype": str(dtype), "left": self.array(arr.left.array),
                    "right": self.array(arr.right.array)}
        if isinstance(dtype, pd.SparseDtype):
            fill = tagged_json.encode(arr.fill_value)
            return {"t": "sparse", "kind": arr.kind, "fill": fill, "length": len(arr),
                    "values": self.array(arr.sp_values),
                    "indices": self.numpy(np.asarray(arr.sp_index.to_int_index().indices, dtype=np.int32))}
        raise TypeError(f"{dtype} data ({type(arr).__name__}), which has no exact stored form")

    def objects(self, values: np.ndarray) -> dict[str, Any]:
        """Strings or bytes as Arrow text; any other Python objects as one tagged JSON text per cell."""
        missing = pd.isna(values)
        present = values[~missing] if missing.any() else values
        kinds = set(map(type, present))
        na_kinds = set(map(type, values[missing])) if missing.any() else set()
        na = {frozenset(): "none", frozenset({type(None)}): "none", frozenset({float}): "nan",
              frozenset({type(pd.NA)}): "na"}.get(frozenset(na_kinds))
        if na is not None and (kinds == {str} or kinds == {bytes} or not kinds):
            binary = kinds == {bytes}
            try:
                leaf = pa.array(values, type=pa.large_binary() if binary else pa.large_string(), from_pandas=True)
            except (UnicodeError, pa.ArrowException):
                pass  # e.g. a lone surrogate, which is not UTF-8: the tagged JSON below keeps it
            else:
                return {"t": "objstr", "na": na, "binary": binary, "leaf": self.leaf(leaf)}
        texts = []
        for v in values:
            try:
                texts.append(_dumps(tagged_json.encode(v)))
            except TypeError as exc:
                raise TypeError(f"Python objects of type {exc}, which have no exact stored form (without pickle)") from None
        return {"t": "objjson", "leaf": self.leaf(pa.array(texts, type=pa.large_string()))}


MASKED = {pd.Int8Dtype(), pd.Int16Dtype(), pd.Int32Dtype(), pd.Int64Dtype(), pd.UInt8Dtype(), pd.UInt16Dtype(),
          pd.UInt32Dtype(), pd.UInt64Dtype(), pd.Float32Dtype(), pd.Float64Dtype(), pd.BooleanDtype()}
_MASKED_BY_NAME = {str(d): d for d in MASKED}


def label(value: Any) -> Any:
    """A label or name in tagged JSON; refuse what cannot be stored exactly."""
    try:
        return tagged_json.encode(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a label of type {exc}, which cannot be stored exactly") from None


def _dttz_dtype(spec: dict[str, Any]) -> pd.DatetimeTZDtype:
    return pd.DatetimeTZDtype(str(spec["unit"]), _tz_from(spec["tz"]))


def _hashable(value: Any) -> Any:
    hash(value)
    return value


class Decoder:
    """Rebuilds arrays and indexes from specs; ``leaves`` gives a validated leaf by number and type check."""

    def __init__(self, leaves: Any):
        self.leaves = leaves  # .leaf(i), .pieces(i): validated in full; .length(i), .type(i): from the descriptor

    def length_of(self, i: int) -> int:
        return int(self.leaves.length(i))

    def _leaf(self, i: Any, *types: pa.DataType) -> pa.ChunkedArray:
        arr = self.leaves.leaf(int(i))
        if types and arr.type not in types:
            raise ValueError(f"leaf {i} is {arr.type}, expected {types[0]}")
        return arr

    def numpy(self, spec: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        dtype = safe_np_dtype(spec["dtype"])
        leaf = int(spec["leaf"])
        if self.leaves.type(leaf) != np_arrow_type(dtype):
            raise ValueError(f"leaf {leaf} is {self.leaves.type(leaf)}, expected {np_arrow_type(dtype)}")
        length = self.length_of(leaf)
        if out is None:
            out = np.empty(length, dtype=dtype)
        elif len(out) != length:
            raise ValueError("a column's length does not match the frame's rows")
        start = 0
        for piece in self.leaves.pieces(leaf):  # one chunk at a time: never the whole column twice
            n = len(piece)
            if piece.null_count and dtype.kind not in "mM":
                raise ValueError("a numpy leaf holds nulls")
            if dtype.kind == "c":
                flat = piece.flatten().to_numpy(zero_copy_only=False)
                out[start : start + n] = flat.view(dtype)
            else:
                out[start : start + n] = piece.to_numpy(zero_copy_only=False)
            start += n
        return out

    def index(self, spec: dict[str, Any], length: int | None = None) -> pd.Index:
        t = spec["t"]
        if t == "range":
            idx: pd.Index = pd.RangeIndex(int(spec["start"]), int(spec["stop"]), int(spec["step"]),
                                          name=_hashable(tagged_json.decode(spec["name"])))
        elif t == "multi":
            levels = [self.index(s) for s in spec["levels"]]
            codes = [self.numpy(c) for c in spec["codes"]]
            names = [_hashable(tagged_json.decode(n)) for n in spec["names"]]
            idx = pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=True)
        elif t == "index":
            arr = self.array(spec["array"])
            name = _hashable(tagged_json.decode(spec["name"]))
            freq = spec.get("freq")
            if freq is not None and spec.get("cls") == "DatetimeIndex":
                idx = pd.DatetimeIndex(arr, freq=str(freq), name=name)
            elif freq is not None and spec.get("cls") == "TimedeltaIndex":
                idx = pd.TimedeltaIndex(arr, freq=str(freq), name=name)
            else:
                idx = pd.Index(arr, name=name, tupleize_cols=False, dtype=arr.dtype, copy=False)
        else:
            raise ValueError(f"unknown index kind {t!r}")
        if length is not None and len(idx) != length:
            raise ValueError("an index's length does not match the rows")
        return idx

    def array(self, spec: dict[str, Any]) -> Any:
        t = spec["t"]
        if t == "np":
            return self.numpy(spec)
        if t == "objstr":
            binary = bool(spec["binary"])
            arr = self._leaf(spec["leaf"], pa.large_binary() if binary else pa.large_string())
            values = arr.to_numpy(zero_copy_only=False)
            if not values.flags.writeable:
                values = values.copy()
            na = {"none": None, "nan": np.nan, "na": pd.NA}[spec["na"]]
            if na is not None and arr.null_count:
                values[arr.is_null().to_numpy(zero_copy_only=False)] = na
            return values
        if t == "objjson":
            arr = self._leaf(spec["leaf"], pa.large_string())
            if arr.null_count:
                raise ValueError("a JSON leaf holds nulls")
            out = np.empty(len(arr), dtype=object)
            for i, text in enumerate(arr.to_pylist()):
                out[i] = tagged_json.decode(json.loads(text))
            return out
        if t == "string":
            storage = spec["storage"]
            if storage not in ("python", "pyarrow"):
                raise ValueError("unknown string storage")
            dtype = pd.StringDtype(storage, na_value=np.nan if spec["na"] == "nan" else pd.NA)
            arr = self._leaf(spec["leaf"], pa.string(), pa.large_string())
            return dtype.__from_arrow__(arr)
        if t == "arrow":
            return pd.arrays.ArrowExtensionArray(self._leaf(spec["leaf"]))
        if t == "dttz":
            values = self.numpy(spec["values"])
            dtype = _dttz_dtype(spec)
            if values.dtype != np.dtype(f"M8[{dtype.unit}]"):
                raise ValueError("time zone values of the wrong unit")
            return pd.array(values).tz_localize("UTC").tz_convert(dtype.tz)
        if t == "masked":
            dtype = _MASKED_BY_NAME[spec["dtype"]]
            arr = self._leaf(spec["leaf"], pa.from_numpy_dtype(dtype.numpy_dtype))
            mask = arr.is_null().to_numpy(zero_copy_only=False)
            filled = pc.fill_null(arr, False if dtype == pd.BooleanDtype() else 0)
            values = np.array(filled.to_numpy(zero_copy_only=False), dtype=dtype.numpy_dtype)
            return dtype.construct_array_type()(values, np.array(mask, dtype=bool))
        if t == "cat":
            codes = self.numpy(spec["codes"])
            if codes.dtype.kind != "i":
                raise ValueError("categorical codes must be integers")
            dtype = pd.CategoricalDtype(self.index(spec["categories"]), ordered=bool(spec["ordered"]))
            return pd.Categorical.from_codes(codes, dtype=dtype, validate=True)
        if t == "period":
            dtype = pd.api.types.pandas_dtype(str(spec["dtype"]))
            if not isinstance(dtype, pd.PeriodDtype):
                raise ValueError("not a period dtype")
            values = self._leaf(spec["leaf"], pa.int64())
            return pd.arrays.PeriodArray(np.array(values.to_numpy(zero_copy_only=False)), dtype=dtype)
        if t == "interval":
            dtype = pd.api.types.pandas_dtype(str(spec["dtype"]))
            if not isinstance(dtype, pd.IntervalDtype):
                raise ValueError("not an interval dtype")
            left, right = self.array(spec["left"]), self.array(spec["right"])
            return pd.arrays.IntervalArray.from_arrays(left, right, closed=dtype.closed, dtype=dtype)
        if t == "sparse":
            from pandas._libs.sparse import IntIndex

            values = self.array(spec["values"])
            indices = self.numpy(spec["indices"])
            sp_index = IntIndex(int(spec["length"]), indices.astype(np.int32), check_integrity=True)
            if spec["kind"] == "block":
                sp_index = sp_index.to_block_index()
            elif spec["kind"] != "integer":
                raise ValueError("unknown sparse kind")
            fill = tagged_json.decode(spec["fill"])
            if len(values) != len(indices):
                raise ValueError("sparse values and indices differ in length")
            return pd.arrays.SparseArray(values, sparse_index=sp_index, fill_value=fill, kind=spec["kind"])
        raise ValueError(f"unknown array kind {t!r}")
