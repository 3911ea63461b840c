"""Every DataFrame and Series comes back exactly as saved, or the save refuses it and writes nothing.

Generated with hypothesis over pandas and Arrow dtypes (every ArrowDtype pyarrow
can build, nested or not; numpy and nullable dtypes; categoricals, time zones,
periods, intervals, sparse), column labels of mixed types, names, attrs, flags
and index frequencies, with 0 rows and 0 columns included. Each example is saved
through ``StateManager.save`` and loaded back from a fresh read on SQLite and
PostgreSQL. A refused save must leave the history as it was, and the head must
still load. Stores written before frame format 2 must still load exactly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import shutil
import uuid
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from statekit import StateManager, UnserializableError
from tests.conftest import drop_pg_schema, fresh_pg_url
from tests.data.legacy_values import legacy_values

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateManager]:
    """One store per backend for the module (each example uses its own entity)."""
    if request.param == "sqlite":
        manager = StateManager(f"sqlite:///{tmp_path_factory.mktemp('exact') / 'store.db'}", cache_size=0)
        yield manager
        manager.close()
        return
    url, schema = fresh_pg_url()
    manager = StateManager(url, cache_size=0)
    yield manager
    manager.close()
    drop_pg_schema(schema)


# ---------------------------------------------------------------- checking


def _masks(arr: Any) -> Any:
    """What pandas keeps besides values: NaN and NA are different values of a nullable float."""
    if hasattr(arr, "_mask") and hasattr(arr, "_data"):
        data = np.asarray(arr._data)
        nan = np.isnan(data) if data.dtype.kind == "f" else np.zeros(len(data), bool)
        return (np.asarray(arr._mask).tolist(), (nan & ~np.asarray(arr._mask)).tolist())
    return None


def _labels(index: pd.Index) -> list[Any]:
    return [(type(x).__name__, x) if not isinstance(x, tuple) else tuple(type(y).__name__ for y in x)
            for x in index]


def _ipc(arr: pa.ChunkedArray) -> bytes:
    """Arrow data as bytes (equal NaNs, and values pyarrow cannot turn into Python objects, compare)."""
    flat = pa.concat_arrays([*arr.chunks, pa.array([], type=arr.type)])
    return pa.record_batch([flat], names=["v"]).serialize().to_pybytes()


def _arrow_apart(got: Any, want: Any) -> tuple[Any, Any]:
    """Compare ArrowDtype data in Arrow terms (pandas cannot compare list_view, string_view...); blank it."""
    frames = isinstance(want, pd.DataFrame)
    width = want.shape[1] if frames else 1
    for i in range(width):
        g, w = (got.iloc[:, i], want.iloc[:, i]) if frames else (got, want)
        if isinstance(w.dtype, pd.ArrowDtype):
            assert g.dtype == w.dtype
            ga, wa = g.array.__arrow_array__(), w.array.__arrow_array__()
            assert ga.type == wa.type and (ga.equals(wa) or _ipc(ga) == _ipc(wa))
            blank = np.zeros(len(w), dtype="i8")
            if frames:
                got, want = got.copy(), want.copy()
                got.isetitem(i, blank)
                want.isetitem(i, blank)
            else:
                got, want = got.copy(), want.copy()
                got = pd.Series(blank, index=got.index, name=got.name).set_flags(
                    allows_duplicate_labels=got.flags.allows_duplicate_labels)
                want = pd.Series(blank, index=want.index, name=want.name).set_flags(
                    allows_duplicate_labels=want.flags.allows_duplicate_labels)
    return got, want


def assert_exact(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    assert got.attrs == want.attrs
    got, want = _arrow_apart(got, want)
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_freq=True, check_flags=True)
        assert got.columns.equals(want.columns) and got.columns.names == want.columns.names
        assert type(got.columns) is type(want.columns) and got.columns.dtype == want.columns.dtype
        assert _labels(got.columns) == _labels(want.columns)
        assert list(got.dtypes) == list(want.dtypes)
        arrays = [(got.iloc[:, i].array, want.iloc[:, i].array) for i in range(want.shape[1])]
    else:
        pd.testing.assert_series_equal(got, want, check_exact=True, check_freq=True, check_flags=True)
        assert type(got.name) is type(want.name)
        arrays = [(got.array, want.array)]
    for g, w in arrays:
        assert _masks(g) == _masks(w)
    assert type(got.index) is type(want.index) and got.index.names == want.index.names
    assert getattr(got.index, "freq", None) == getattr(want.index, "freq", None)
    assert _labels(got.index) == _labels(want.index)
    assert got.flags.allows_duplicate_labels == want.flags.allows_duplicate_labels


def round_trip(sm: StateManager, value: Any) -> None:
    """Saved and loaded exactly, or refused with nothing written and the head still loading."""
    entity = f"e-{uuid.uuid4().hex[:10]}"
    sm.save(entity, {"before": 1})
    try:
        sm.save(entity, {"before": 1, "v": value}, expected_version=1)
    except UnserializableError as exc:
        event(f"refused: {str(exc).split(': ', 1)[-1][:60]}")
        assert "\n" not in str(exc) and "'v'" in str(exc)
        assert sm.head_version(entity) == 1
        assert sm.load(entity) == {"before": 1}
        return
    event("round-tripped")
    assert_exact(sm.load(entity)["v"], value)


# ---------------------------------------------------------------- Arrow types and values

_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=6)
_UNITS = ["s", "ms", "us", "ns"]
_ZONES = [None, "UTC", "Europe/Paris", "+05:30"]


def _ints(bits: int, signed: bool = True) -> st.SearchStrategy[int]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else st.integers(0, 2**bits - 1)


def _decimals(precision: int, scale: int) -> st.SearchStrategy[decimal.Decimal]:
    bound = 10**precision - 1
    return st.integers(-bound, bound).map(lambda n: decimal.Decimal(f"{n}E-{scale}"))  # exact: no context rounding


PRIMITIVES: list[tuple[pa.DataType, st.SearchStrategy[Any]]] = [
    *[(getattr(pa, f"int{b}")(), _ints(b)) for b in (8, 16, 32, 64)],
    *[(getattr(pa, f"uint{b}")(), _ints(b, signed=False)) for b in (8, 16, 32, 64)],
    (pa.float16(), st.floats(width=16).map(np.float16)),
    (pa.float32(), st.floats(width=32)),
    (pa.float64(), st.floats()),
    (pa.bool_(), st.booleans()),
    (pa.string(), _text), (pa.large_string(), _text), (pa.string_view(), _text),
    (pa.binary(), st.binary(max_size=6)), (pa.large_binary(), st.binary(max_size=6)),
    (pa.binary_view(), st.binary(max_size=6)), (pa.binary(3), st.binary(min_size=3, max_size=3)),
    (pa.date32(), st.dates()), (pa.date64(), st.dates()),
    (pa.time32("s"), st.integers(0, 86_399)), (pa.time32("ms"), st.integers(0, 86_399_999)),
    (pa.time64("us"), st.integers(0, 86_399_999_999)), (pa.time64("ns"), st.integers(0, 86_399_999_999_999)),
    *[(pa.timestamp(u, tz), _ints(63)) for u in _UNITS for tz in _ZONES],
    *[(pa.duration(u), _ints(63)) for u in _UNITS],
    (pa.decimal128(10, 2), _decimals(10, 2)), (pa.decimal128(38, 0), _decimals(38, 0)),
    (pa.decimal256(50, 5), _decimals(50, 5)), (pa.decimal32(5, 1), _decimals(5, 1)),
    (pa.decimal64(12, 3), _decimals(12, 3)),
    (pa.month_day_nano_interval(), st.tuples(_ints(32), _ints(32), _ints(64)).map(lambda t: pa.MonthDayNano(t))),
    (pa.null(), st.none()),
]
_KEYS = [(pa.int32(), _ints(32)), (pa.string(), _text)]


def _nullable(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


@st.composite
def arrow_typed(draw: st.DrawFn, depth: int = 0) -> tuple[pa.DataType, st.SearchStrategy[Any]]:
    """An Arrow type and a strategy for its (nullable) Python values, nested up to two levels."""
    kinds = ["prim"] * 4 + (["list", "large_list", "list_view", "fixed", "struct", "map", "dict"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "prim":
        return draw(st.sampled_from(PRIMITIVES))
    if kind == "dict":
        vtype, values = draw(st.sampled_from([(pa.string(), _text), (pa.int64(), _ints(64))]))
        itype = draw(st.sampled_from([pa.int8(), pa.int32()]))
        return pa.dictionary(itype, vtype, ordered=draw(st.booleans())), values
    if kind == "map":
        ktype, keys = draw(st.sampled_from(_KEYS))
        vtype, values = draw(arrow_typed(depth + 1))
        return pa.map_(ktype, vtype), st.lists(st.tuples(keys, _nullable(values)), max_size=3)
    if kind == "struct":
        fields = draw(st.lists(arrow_typed(depth + 1), min_size=1, max_size=3))
        t = pa.struct([pa.field(f"f{i}", ft) for i, (ft, _) in enumerate(fields)])
        return t, st.fixed_dictionaries({f"f{i}": _nullable(v) for i, (_, v) in enumerate(fields)})
    inner, values = draw(arrow_typed(depth + 1))
    if kind == "fixed":
        return pa.list_(inner, 2), st.lists(_nullable(values), min_size=2, max_size=2)
    maker = {"list": pa.list_, "large_list": pa.large_list, "list_view": pa.list_view}[kind]
    return maker(inner), st.lists(_nullable(values), max_size=3)


@st.composite
def arrow_column(draw: st.DrawFn, rows: int) -> pd.Series:
    t, values = draw(arrow_typed())
    data = draw(st.lists(_nullable(values), min_size=rows, max_size=rows))
    arr = pa.array(data, type=t)
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


# ---------------------------------------------------------------- pandas dtypes


def _nan_float64(rows: int, draw: st.DrawFn) -> pd.Series:
    data = draw(st.lists(st.floats(), min_size=rows, max_size=rows))
    mask = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    arr = pd.arrays.FloatingArray(np.array(data, dtype="f8"), np.array(mask, dtype=bool))  # NaN and NA apart
    return pd.Series(arr)


@st.composite
def pandas_column(draw: st.DrawFn, rows: int) -> pd.Series:
    kind = draw(st.sampled_from([
        "numpy", "complex", "datetime", "timedelta", "masked", "Float64_nan", "string", "object_str",
        "object_mixed", "categorical", "datetime_tz", "period", "interval", "sparse", "arrow"]))
    n = rows
    if kind == "arrow":
        return draw(arrow_column(n))
    if kind == "numpy":
        dtype = draw(st.sampled_from(["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "?"]))
        strat = {"?": st.booleans(), "f2": st.floats(width=16), "f4": st.floats(width=32), "f8": st.floats()}.get(
            dtype, st.integers(int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)) if dtype[0] in "iu" else None)
        return pd.Series(np.array(draw(st.lists(strat, min_size=n, max_size=n)), dtype=dtype))
    if kind == "complex":
        parts = draw(st.lists(st.tuples(st.floats(), st.floats()), min_size=n, max_size=n))
        with np.errstate(over="ignore"):  # complex64 turns large floats into infinities: fine, they are values
            return pd.Series(np.array([complex(a, b) for a, b in parts], dtype=draw(st.sampled_from(["c8", "c16"]))))
    if kind in ("datetime", "timedelta"):
        unit = draw(st.sampled_from(_UNITS))
        ints = draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
        arr = np.array(ints, dtype="i8").view(f"{'M' if kind == 'datetime' else 'm'}8[{unit}]")
        return pd.Series(arr)
    if kind == "masked":
        dtype = draw(st.sampled_from(["Int8", "Int64", "UInt16", "UInt64", "Float32", "boolean"]))
        strat = st.booleans() if dtype == "boolean" else st.integers(0, 100) if "Int" in dtype else st.floats(0, 1)
        return pd.Series(pd.array(draw(st.lists(_nullable(strat), min_size=n, max_size=n)), dtype=dtype))
    if kind == "Float64_nan":
        return _nan_float64(n, draw)
    if kind == "string":
        dtype = draw(st.sampled_from(["string[python]", "string[pyarrow]", "str",
                                      pd.StringDtype("python", na_value=np.nan)]))
        return pd.Series(pd.array(draw(st.lists(_nullable(_text), min_size=n, max_size=n)), dtype=dtype))
    if kind == "object_str":
        na = draw(st.sampled_from([None, np.nan, pd.NA]))
        items = draw(st.lists(st.one_of(_text, st.just(na)), min_size=n, max_size=n))
        return pd.Series(np.array(items + [None], dtype=object)[:n], dtype=object)
    if kind == "object_mixed":
        scalar = st.one_of(st.integers(), _text, st.none(), st.floats(), st.tuples(st.integers()),
                           st.decimals(allow_nan=False), st.just(pd.NA), st.just(pd.NaT), st.binary(max_size=3))
        items = draw(st.lists(scalar, min_size=n, max_size=n))
        out = np.empty(n, dtype=object)
        for i, x in enumerate(items):
            out[i] = x
        return pd.Series(out, dtype=object)
    if kind == "categorical":
        cats = draw(st.lists(st.one_of(_text) if draw(st.booleans()) else st.integers(), unique=True, max_size=4))
        codes = draw(st.lists(st.integers(-1, len(cats) - 1), min_size=n, max_size=n))
        cat = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats, ordered=draw(st.booleans())))
        return pd.Series(cat)
    if kind == "datetime_tz":
        zone = draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York", dt.timezone(dt.timedelta(hours=-3))]))
        ints = draw(st.lists(st.integers(-(2**50), 2**50), min_size=n, max_size=n))
        values = pd.array(np.array(ints, dtype="i8").view("M8[us]")).tz_localize("UTC").tz_convert(zone)
        return pd.Series(values)
    if kind == "period":
        freq = draw(st.sampled_from(["D", "M", "h", "Y"]))
        return pd.Series(pd.period_range("2000-01-01", periods=n, freq=freq))
    if kind == "interval":
        breaks = sorted(draw(st.lists(st.integers(-100, 100), min_size=n + 1, max_size=n + 1, unique=True)))
        closed = draw(st.sampled_from(["left", "right", "both", "neither"]))
        return pd.Series(pd.arrays.IntervalArray.from_breaks(breaks, closed=closed))
    values = draw(st.lists(st.sampled_from([0.0, 1.5, np.nan]), min_size=n, max_size=n))
    fill = draw(st.sampled_from([0.0, np.nan]))
    return pd.Series(pd.arrays.SparseArray(values, fill_value=fill, kind=draw(st.sampled_from(["integer", "block"]))))


# ---------------------------------------------------------------- labels, indexes, frames

_label = st.one_of(st.integers(-5, 5), _text, st.booleans(), st.none(), st.floats(allow_nan=False, width=32),
                   st.tuples(st.integers(0, 3), _text), st.just(np.int64(7)), st.just(dt.date(2024, 1, 1)))


@st.composite
def an_index(draw: st.DrawFn, n: int) -> pd.Index:
    kind = draw(st.sampled_from(["range", "labels", "dates", "multi", "categorical", "timedelta"]))
    name = draw(st.one_of(st.none(), _text, st.integers(), st.tuples(st.integers(), _text)))
    if kind == "range":
        start, step = draw(st.integers(-10, 10)), draw(st.integers(1, 3))
        return pd.RangeIndex(start, start + n * step, step, name=name)
    if kind == "labels":
        labels = draw(st.lists(_label, min_size=n, max_size=n))
        return pd.Index(pd.array(labels, dtype=object) if labels else [], name=name, tupleize_cols=False,
                        dtype=object if draw(st.booleans()) or not labels else None)
    if kind == "dates":
        freq = draw(st.sampled_from(["D", "h", "B", "W-SUN", "ME", None]))
        tz = draw(st.sampled_from([None, "Europe/Paris"]))
        idx = pd.date_range("2024-03-25", periods=n, freq=freq or "D", tz=tz, name=name)
        return idx if freq else pd.DatetimeIndex(list(idx), name=name)
    if kind == "timedelta":
        return pd.timedelta_range("1s", periods=n, freq=draw(st.sampled_from(["s", "2h"])), name=name)
    if kind == "categorical":
        return pd.CategoricalIndex(draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n)),
                                   categories=["a", "b", "c"], name=name)
    first = draw(st.lists(st.sampled_from(["x", "y"]), min_size=n, max_size=n))
    second = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return pd.MultiIndex.from_arrays([first, second], names=[name, draw(st.one_of(st.none(), _text))])


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame | pd.Series:
    rows = draw(st.integers(0, 4))
    ncols = draw(st.integers(0, 3))
    arrow_only = draw(st.booleans())
    cols = [draw(arrow_column(rows) if arrow_only else pandas_column(rows)) for _ in range(ncols)]
    index = draw(an_index(rows))
    attrs = draw(st.dictionaries(_text, st.one_of(st.integers(), _text, st.lists(st.floats(allow_nan=False))),
                                 max_size=2))
    if draw(st.booleans()) and cols:
        s = cols[0].set_axis(index)
        s.name = draw(_label)
        s.attrs.update(attrs)
        return s
    labels = draw(st.lists(_label, min_size=ncols, max_size=ncols))
    if draw(st.booleans()) and ncols:
        columns: pd.Index = pd.MultiIndex.from_arrays(
            [[str(x) for x in labels], list(range(ncols))], names=["top", draw(st.one_of(st.none(), _text))])
    else:
        columns = pd.Index(labels, dtype=object, tupleize_cols=False) if labels else draw(
            st.sampled_from([pd.RangeIndex(0), pd.Index([], dtype=object), pd.MultiIndex.from_arrays([[], []])]))
        columns.name = draw(st.one_of(st.none(), _text))
    df = pd.DataFrame(dict(enumerate(cols)), index=range(rows)) if cols else pd.DataFrame(index=range(rows))
    df = df.set_axis(index, axis=0).set_axis(columns, axis=1)
    df.attrs.update(attrs)
    if columns.is_unique and index.is_unique and draw(st.booleans()):
        df = df.set_flags(allows_duplicate_labels=False)
    return df


@SETTINGS
@given(value=frames())
def test_generated_frames_round_trip_exactly_or_are_refused(shared: StateManager, value: Any) -> None:
    round_trip(shared, value)


@SETTINGS
@given(column=arrow_column(3))
def test_every_arrow_dtype_round_trips(shared: StateManager, column: pd.Series) -> None:
    round_trip(shared, pd.DataFrame({"c": column}))


# ---------------------------------------------------------------- the cases the issue names


def _float64_nan() -> pd.DataFrame:
    arr = pd.arrays.FloatingArray(np.array([1.0, np.nan, 0.0]), np.array([False, False, True]))
    return pd.DataFrame({"f": arr})


def _arrow(t: pa.DataType, values: list[Any]) -> pd.Series:
    return pd.Series(values, dtype=pd.ArrowDtype(t))


NAMED: dict[str, Any] = {
    "list": pd.DataFrame({"l": _arrow(pa.list_(pa.int64()), [[1, 2], None])}),
    "struct": pd.DataFrame({"s": _arrow(pa.struct([("a", pa.int64()), ("b", pa.string())]), [{"a": 1, "b": "x"}, None])}),
    "map": pd.DataFrame({"m": _arrow(pa.map_(pa.string(), pa.int64()), [[("a", 1)], None])}),
    "dictionary": pd.DataFrame({"d": _arrow(pa.dictionary(pa.int32(), pa.string()), ["a", None, "a"])}),
    "decimal128": pd.DataFrame({"d": _arrow(pa.decimal128(10, 2), [decimal.Decimal("1.23"), None])}),
    "decimal256": pd.DataFrame({"d": _arrow(pa.decimal256(40, 2), [decimal.Decimal("1.23"), None])}),
    "fixed_size_list": pd.DataFrame({"d": _arrow(pa.list_(pa.int8(), 2), [[1, 2], None])}),
    "timestamp_tz": pd.DataFrame({"t": _arrow(pa.timestamp("us", "Asia/Tokyo"), [dt.datetime(2024, 1, 1), None])}),
    "bool_labels": pd.DataFrame({True: [1], False: [2]}),
    "mixed_labels": pd.DataFrame({0: [1], "a": [2]}),
    "tuple_labels": pd.DataFrame([[1, 2]], columns=pd.Index([("a", 1), ("b", 2)], tupleize_cols=False)),
    "multiindex_columns": pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["x", "y"])),
    "duplicate_labels": pd.DataFrame([[1, 2.5]], columns=["a", "a"]),
    "columns_name": pd.DataFrame({"a": [1]}).rename_axis(columns="cols"),
    "freq": pd.DataFrame({"a": [1, 2, 3]}, index=pd.date_range("2024-01-01", periods=3, freq="D")),
    "business_freq": pd.Series([1, 2], index=pd.date_range("2024-01-05", periods=2, freq="B")),
    "empty_categorical": pd.DataFrame({"c": pd.Categorical([], categories=["x", "y"], ordered=True)}),
    "no_columns_multiindex": pd.DataFrame(index=[1, 2], columns=pd.MultiIndex.from_tuples([], names=["a", "b"])),
    "no_columns_named": pd.DataFrame(index=[1, 2]).rename_axis(columns="cn"),
    "no_duplicates_flag": pd.DataFrame({"a": [1]}).set_flags(allows_duplicate_labels=False),
    "float64_nan_vs_na": _float64_nan(),
    "na_in_object": pd.DataFrame({"o": pd.Series(["a", pd.NA], dtype=object)}),
    "mixed_missing_in_object": pd.DataFrame({"o": pd.Series(["a", pd.NA, None, np.nan], dtype=object)}),
    "objects": pd.DataFrame({"o": pd.Series([1, "a", (1, 2), decimal.Decimal("1.5"), 10**5000], dtype=object)}),
    "series_tuple_name": pd.Series([1], name=("a", 1)).set_flags(allows_duplicate_labels=False),
    "fixed_offset_tz": pd.DataFrame({"t": pd.date_range("2024", periods=2, tz=dt.timezone(dt.timedelta(hours=2)))}),
    "zoneinfo_tz": pd.DataFrame({"t": pd.date_range("2024", periods=2, tz=zoneinfo.ZoneInfo("Europe/Paris"))}),
}
NAMED["surrogates"] = pd.DataFrame({"s": pd.Series(np.array(["a\ud800", None], dtype=object), dtype=object)})
NAMED["surrogates"].index = pd.Index(["x\udfff", "y"], dtype=object)
NAMED["attrs"] = pd.DataFrame({"a": [1]})
NAMED["attrs"].attrs.update({"source": "x", 1: (2, 3)})
NAMED["series_attrs"] = pd.Series([1.5], name=7)
NAMED["series_attrs"].attrs["unit"] = "m"


@pytest.mark.parametrize("case", list(NAMED))
def test_named_cases_round_trip_exactly(shared: StateManager, case: str) -> None:
    entity = f"named-{case}"
    shared.save(entity, {"v": NAMED[case]})
    assert_exact(shared.load(entity)["v"], NAMED[case])


@pytest.mark.parametrize("value", [
    10**5000, [1, -(10**5000)], {"k": (10**6000, {2: 10**4400})}, np.longdouble(1) / 3,
    np.clongdouble(1 + 2j) / 3, pd.NA, pd.NaT, [pd.NA, 2**64],
], ids=["huge_int", "huge_in_list", "huge_in_dict_tuple", "longdouble", "clongdouble", "pd_na", "pd_nat", "na_list"])
def test_awkward_scalars_round_trip(shared: StateManager, value: Any) -> None:
    entity = f"scalar-{uuid.uuid4().hex[:8]}"
    shared.save(entity, {"v": value})
    assert _same(shared.load(entity)["v"], value)


def _same(a: Any, b: Any) -> bool:
    """Equal, with equal types all the way down (pd.NA and NaT by identity)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if a is pd.NA or a is pd.NaT:
        return a is b
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and bool(a == b)
    return bool(a == b)


@pytest.mark.parametrize("value, fragment", [
    (pd.DataFrame({"o": pd.Series([object()], dtype=object)}), "column 'o'"),
    (pd.DataFrame({"a": [1]}, index=pd.Index([object()], dtype=object)), "index"),
    (pd.Series([1], name=object()), "name"),
    (pd.DataFrame({"a": [1]}).pipe(lambda d: (d.attrs.update(x=object()), d)[1]), "attrs"),
    (pd.DataFrame({"a": [1]}, index=pd.date_range("2024-01-01", periods=1,
                                                  freq=pd.offsets.CustomBusinessDay(holidays=["2024-01-02"]))), "freq"),
])
def test_values_that_cannot_be_exact_are_refused_at_save(shared: StateManager, value: Any, fragment: str) -> None:
    entity = f"refused-{uuid.uuid4().hex[:8]}"
    shared.save(entity, {"a": 1})
    with pytest.raises(UnserializableError, match=fragment) as info:
        shared.save(entity, {"a": 2, "bad": value})
    assert "\n" not in str(info.value)
    assert shared.head_version(entity) == 1 and shared.load(entity) == {"a": 1}


def test_frames_written_before_format_2_still_load(tmp_path: Path) -> None:
    """tests/data/legacy_frames_v1.db was written by the release before this codec (see legacy_values.py)."""
    store = tmp_path / "legacy.db"
    shutil.copy(Path(__file__).parent / "data" / "legacy_frames_v1.db", store)
    with StateManager(f"sqlite:///{store}") as sm:
        for version, (name, want) in enumerate(legacy_values().items(), start=1):
            assert_exact(sm.load("legacy", version=version)[name], want)
        assert sm.verify().empty
