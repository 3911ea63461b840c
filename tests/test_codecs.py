"""Every codec round-trips awkward values exactly through a real store, or refuses them."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import pickle
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import StateManager, UnserializableError, UntrustedPayloadError
from statekit.signing import SigningKey
from tests.conftest import drop_pg_schema, fresh_pg_url


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateManager]:
    """One store per backend for the whole matrix (each case uses its own entity)."""
    if request.param == "sqlite":
        manager = StateManager(f"sqlite:///{tmp_path_factory.mktemp('codecs') / 'store.db'}")
        yield manager
        manager.close()
        return
    url, schema = fresh_pg_url()
    manager = StateManager(url)
    yield manager
    manager.close()
    drop_pg_schema(schema)


def _frames() -> dict[str, pd.DataFrame | pd.Series]:
    idx = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["letter", "num"])
    return {
        "plain": pd.DataFrame({"i": [1, 2, 3], "f": [0.5, np.nan, -1e300], "s": ["x", None, "z"]}),
        "multiindex": pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=idx),
        "named_index": pd.DataFrame({"v": [1, 2]}, index=pd.Index([10, 20], name="id")),
        "categorical": pd.DataFrame({"c": pd.Categorical(["lo", "hi", "lo"], categories=["lo", "mid", "hi"], ordered=True)}),
        "tz_datetime": pd.DataFrame({"t": pd.date_range("2024-03-30", periods=3, freq="h", tz="Europe/Paris")}),
        "naive_datetime_s": pd.DataFrame({"t": pd.to_datetime(["2020-01-01", "2021-06-01"]).as_unit("s")}),
        "timedelta": pd.DataFrame({"d": pd.to_timedelta([1, 2], unit="D")}),
        "nullable": pd.DataFrame({
            "i": pd.array([1, None, 3], dtype="Int64"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "f": pd.array([1.5, None, 2.5], dtype="Float64"),
        }),
        "arrow_strings": pd.DataFrame({"s": pd.array(["a", None, "c"], dtype="string[pyarrow]")}),
        "python_strings": pd.DataFrame({"s": pd.array(["a", None, "c"], dtype="string[python]")}),
        "object_strings_nan": pd.DataFrame({"s": pd.Series(["a", np.nan, "c"], dtype=object)}),
        "object_strings_none": pd.DataFrame({"s": pd.Series(["a", None, "c"], dtype=object)}),
        "arrow_dtype": pd.DataFrame({"x": pd.array([1, 2, None], dtype="int64[pyarrow]")}),
        "int_column_names": pd.DataFrame({0: [1, 2], 1: [3, 4]}),
        "empty": pd.DataFrame({"a": pd.Series([], dtype="int64")}),
        "no_columns": pd.DataFrame(index=pd.RangeIndex(3)),
        "range_index_step": pd.DataFrame({"a": [1, 2, 3]}, index=pd.RangeIndex(10, 40, 10)),
        "datetime_index": pd.DataFrame({"a": [1, 2]}, index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"], name="day")),
        "unicode": pd.DataFrame({"naïve ☃": ["日本", "émoji 🎉"]}),
        "big": pd.DataFrame({"x": np.arange(150_000), "y": np.random.default_rng(0).random(150_000)}),
        "series": pd.Series([1.0, 2.0], index=["a", "b"], name="price"),
        "series_unnamed": pd.Series([1, 2, 3]),
        "series_int_name": pd.Series(["a"], name=7),
        "series_categorical": pd.Series(pd.Categorical(["x", "y"]), name="cat"),
    }


FRAMES = _frames()


@pytest.mark.parametrize("case", list(FRAMES))
def test_pandas_values_round_trip_exactly(shared: StateManager, case: str) -> None:
    value = FRAMES[case]
    shared.save(f"frame-{case}", {"v": value})
    shared.cache.clear()
    got = shared.load(f"frame-{case}")["v"]
    assert type(got) is type(value)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(got, value, check_exact=True)
        assert got.columns.equals(value.columns)
    else:
        pd.testing.assert_series_equal(got, value, check_exact=True)
    assert got.index.equals(value.index) and got.index.names == value.index.names


ARRAYS = {
    "int": np.arange(10, dtype=np.int16),
    "float_nan": np.array([1.0, np.nan, np.inf]),
    "2d_fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "datetime64": np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"),
    "bool": np.array([True, False]),
    "zero_d": np.array(5),
    "empty": np.empty((0, 3)),
    "complex": np.array([1 + 2j]),
    "unicode": np.array(["é", "日本"]),
    "large": np.random.default_rng(1).random(1_500_000),  # > 8 MiB: several chunks
}


@pytest.mark.parametrize("case", list(ARRAYS))
def test_ndarrays_round_trip_exactly(shared: StateManager, case: str) -> None:
    value = ARRAYS[case]
    shared.save(f"array-{case}", {"v": value})
    shared.cache.clear()
    got = shared.load(f"array-{case}")["v"]
    assert type(got) is np.ndarray and got.dtype == value.dtype and got.shape == value.shape
    np.testing.assert_array_equal(got, value)


VALUES: dict[str, Any] = {
    "json_nested": {"a": [1, 2.5, None, True, {"b": "ü"}], "": 0},
    "big_int": 2**100,
    "negative_zero": -0.0,
    "nan": float("nan"),
    "inf_in_list": [1.0, float("-inf")],
    "tuple": (1, "a", (2, 3)),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "bytes": b"\x00\xff binary",
    "int_keys": {1: "a", (2, 3): "b"},
    "tag_like_key": {"__sk__": "not a tag"},
    "datetime_tz": dt.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "datetime_utc": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    "date": dt.date(2024, 2, 29),
    "time": dt.time(12, 30, 1, 5),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "decimal": decimal.Decimal("3.14159265358979323846"),
    "uuid": uuid.UUID(int=42),
    "complex": 1 - 2j,
    "np_float32": np.float32(1.5),
    "np_int8": np.int8(-3),
    "np_bool": np.bool_(True),
    "np_datetime": np.datetime64("2024-01-01T12:00", "m"),
    "np_timedelta": np.timedelta64(90, "s"),
    "np_nat": np.datetime64("NaT", "ns"),
    "pd_timestamp": pd.Timestamp("2024-01-01 12:00", tz="America/New_York"),
    "pd_timedelta": pd.Timedelta("1 days 2 hours"),
    "surrogate": "bad \udc80 text",
    "nul_char": "a\x00b",
    "empty_containers": [[], {}, (), ""],
    "large_json": {"rows": [{"id": i, "name": f"row {i}"} for i in range(20_000)]},
    "deep": [[[[[[[[[[1]]]]]]]]]],
}


@pytest.mark.parametrize("case", list(VALUES))
def test_python_values_round_trip_exactly(shared: StateManager, case: str) -> None:
    value = VALUES[case]
    shared.save(f"value-{case}", {"v": value})
    shared.cache.clear()
    got = shared.load(f"value-{case}")["v"]
    assert type(got) is type(value)
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(got)
    elif isinstance(value, np.datetime64) and np.isnat(value):
        assert np.isnat(got) and got.dtype == value.dtype
    else:
        assert got == value
        assert repr(got) == repr(value)


class Custom:
    def __init__(self, x: int):
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.x == self.x


def test_arbitrary_objects_need_pickle_opt_in(store_url: str) -> None:
    sm = StateManager(store_url)
    with pytest.raises(UnserializableError) as err:
        sm.save("exp", {"model": Custom(1)})
    assert err.value.name == "model" and "Custom" in str(err.value) and "allow_pickle" in str(err.value)
    assert sm.head_version("exp") is None
    sm.save("exp", {"model": Custom(1)}, allow_pickle=True)
    assert sm.load("exp") == {"model": Custom(1)}
    sm.close()
    with StateManager(store_url, allow_pickle=True) as sm2:
        sm2.save("exp2", {"frame_of_objects": pd.DataFrame({"o": [Custom(1), Custom(2)]})})
        assert sm2.load("exp2")["frame_of_objects"]["o"].tolist() == [Custom(1), Custom(2)]


def test_a_foreign_pickle_is_refused_before_it_is_unpickled(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(marker), "w"))

    # Mallory, with her own key, writes a pickle that would run code when loaded.
    monkeypatch.setenv("STATEKIT_KEY", "mallory-key-" + "m" * 32)
    mallory = StateManager(store_url, allow_pickle=True)
    mallory.save("shared", {"x": Custom(1)})
    mallory.close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # swap the signed payload for an evil one, keeping Mallory's signature format
        evil = pickle.dumps(Evil())
        sig = SigningKey(("mallory-key-" + "m" * 32).encode()).sign(evil)
        from statekit.codecs import digest_of

        row = conn.execute(sa.text("SELECT snapshot_id FROM state_snapshots")).first()
        conn.execute(sa.text("INSERT INTO state_payloads (digest, size, data) VALUES (:d, :n, :b)"),
                     {"d": digest_of(evil), "n": len(evil), "b": evil})
        import json

        items = {"x": {"codec": "pickle", "chunks": [digest_of(evil)], "hmac": sig, "key_id": "mallory", "size": len(evil)}}
        from statekit.repository import state_checksum

        conn.execute(sa.text("UPDATE state_snapshots SET items = :i, checksum = :c WHERE snapshot_id = :s"),
                     {"i": json.dumps(items, separators=(",", ":")),
                      "c": state_checksum("{}", json.dumps(items, ensure_ascii=False, separators=(",", ":"))),
                      "s": row[0]})
    engine.dispose()
    # Ana reads with her own key.
    monkeypatch.setenv("STATEKIT_KEY", "ana-key-" + "a" * 32)
    ana = StateManager(store_url)
    with pytest.raises(UntrustedPayloadError, match="not signed with your key"):
        ana.load("shared")
    with pytest.raises(UntrustedPayloadError):
        ana.diff("shared")
    assert not marker.exists()
    ana.close()


def test_unsigned_pickle_is_refused(store_url: str) -> None:
    sm = StateManager(store_url, allow_pickle=True)
    snap = sm.save("exp", {"x": Custom(3)})
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        import json

        from statekit.repository import state_checksum

        items = json.loads(conn.execute(sa.text("SELECT items FROM state_snapshots")).scalar()) \
            if "sqlite" in store_url else conn.execute(sa.text("SELECT items FROM state_snapshots")).scalar()
        del items["x"]["hmac"]
        text = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        conn.execute(sa.text("UPDATE state_snapshots SET items = :i, checksum = :c WHERE snapshot_id = :s"),
                     {"i": text, "c": state_checksum("{}", text), "s": snap.snapshot_id})
    engine.dispose()
    sm.cache.clear()
    with pytest.raises(UntrustedPayloadError):
        sm.load("exp")
    sm.close()


@pytest.mark.parametrize(
    "value, fragment",
    [
        ((i for i in range(3)), "generator"),
        (pd.DataFrame({"a": [1, 2]}, index=pd.Index([object(), object()])), "index"),
        (pd.DataFrame({"o": [[1], [object()]]}), "column 'o'"),
        (np.array([object()]), "object"),
        ({"k": object()}, "object"),
    ],
)
def test_values_without_an_exact_codec_are_refused_without_pickle(store_url: str, value: Any, fragment: str) -> None:
    sm = StateManager(store_url)
    with pytest.raises(UnserializableError, match=fragment):
        sm.save("exp", {"ok": 1, "bad": value})
    assert sm.head_version("exp") is None
    sm.close()


def test_key_file_is_created_owner_only(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_path = tmp_path / "fresh" / "key"
    monkeypatch.setenv("STATEKIT_KEY_FILE", str(key_path))
    with StateManager(f"sqlite:///{tmp_path / 's.db'}", allow_pickle=True) as sm:
        sm.save("exp", {"x": Custom(1)})
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "s.db").stat().st_mode & 0o777 == 0o600


def test_loading_some_names_decodes_only_those(store_url: str) -> None:
    with StateManager(store_url, allow_pickle=True) as sm:
        sm.save("exp", {"safe": [1, 2], "frame": pd.DataFrame({"a": [1]}), "obj": Custom(5)})
    import os

    os.environ["STATEKIT_KEY"] = "someone-else-" + "x" * 32  # a reader without the writer's key
    try:
        with StateManager(store_url) as reader:
            got = reader.load("exp", names=["safe", "frame"])
            assert got["safe"] == [1, 2] and list(got) == ["safe", "frame"]
            with pytest.raises(UntrustedPayloadError):
                reader.load("exp")
    finally:
        del os.environ["STATEKIT_KEY"]
