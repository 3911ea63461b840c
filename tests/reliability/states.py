"""Deterministic states for the reliability suite, and an exact comparison.

Every state is a pure function of its seed (and, for the big frame, of a base
array built once from a fixed seed), so whoever reads a version back can
rebuild what the writer meant to write and compare exactly. States also carry
their own check figures (``total``, ``df_total``) so a reader can tell a whole
state from a torn one without knowing the seed's recipe.

Imported by the tests (``from .states import ...``) and by the helper
scripts run as ``python tests/reliability/<script>.py`` (``import states``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

BIG_ROWS = 800_000
BIG_COLUMNS = 8
"""800,000 rows x 8 float64 columns: a 51.2 MB DataFrame."""
BIG_VARYING = 4
"""Columns c4..c7 change with every big save (25.6 MB of new bytes); c0..c3 are the same each time."""


def seed_of(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts (``hash()`` is salted per process)."""
    return zlib.crc32("/".join(map(str, parts)).encode("utf-8"))


def small_state(seed: int, *, kind: str = "small") -> dict[str, Any]:
    """A few KB: inline JSON, a tuple and a NaN (tagged JSON), an ndarray and a small DataFrame."""
    rng = np.random.default_rng(seed)
    numbers = rng.integers(0, 10**9, size=int(rng.integers(1, 200))).tolist()
    frame = pd.DataFrame({
        "x": rng.standard_normal(20),
        "k": rng.integers(0, 100, 20),
        "s": [f"row {seed} {i} ✓" for i in range(20)],
    })
    return {
        "seed": seed,
        "kind": kind,
        "numbers": numbers,
        "total": sum(numbers),
        "text": f"state {seed}: " + "é∂" * int(rng.integers(0, 50)),
        "pair": (seed, "tuple"),
        "nan": float("nan"),
        "arr": np.arange(seed % 97, dtype=np.int64) * 3,
        "df": frame,
        "df_total": float(frame["x"].sum()),
    }


def medium_state(seed: int) -> dict[str, Any]:
    """A 5 MB DataFrame (327,680 rows x 2 float64 columns, 10 chunks) built from ``seed``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.standard_normal(327_680), "b": np.arange(327_680, dtype=np.float64) * seed})
    return {"seed": seed, "kind": "medium", "df": frame, "df_total": float(frame["a"].sum())}


def big_base() -> np.ndarray:
    """The base of every big frame (built once per process: ~0.3 s)."""
    return np.random.default_rng(12345).standard_normal((BIG_ROWS, BIG_COLUMNS))


def big_state(seed: int, base: np.ndarray) -> dict[str, Any]:
    """A 51.2 MB DataFrame whose last columns depend on ``seed``, with its check figure."""
    cols = {f"c{i}": base[:, i] if i < BIG_COLUMNS - BIG_VARYING else base[:, i] + seed for i in range(BIG_COLUMNS)}
    frame = pd.DataFrame(cols)
    return {"seed": seed, "kind": "big", "df": frame, "df_total": float(frame["c7"].sum())}


def self_consistent(state: dict[str, Any]) -> bool:
    """True when a state's check figures match its content (a torn state would not)."""
    if "numbers" in state and sum(state["numbers"]) != state["total"]:
        return False
    if "df" in state:
        col = next(c for c in ("x", "a", "c7") if c in state["df"])
        if float(state["df"][col].sum()) != state["df_total"]:
            return False
    return True


def assert_same(got: Any, want: Any, path: str = "state") -> None:
    """Exact equality: same types all the way down, NaN equal to NaN, frames equal with dtypes and index."""
    if isinstance(want, pd.DataFrame):
        assert type(got) is pd.DataFrame, f"{path}: {type(got).__name__} is not a DataFrame"
        # "equiv": a RangeIndex and an Index of the same int64 labels count as equal (pandas' own rule)
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_index_type="equiv",
                                      check_column_type="equiv", check_flags=True, obj=path)
        return
    if isinstance(want, pd.Series):
        assert type(got) is pd.Series, f"{path}: {type(got).__name__} is not a Series"
        pd.testing.assert_series_equal(got, want, check_exact=True, check_index_type="equiv", obj=path)
        return
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, f"{path}: {got.dtype}{got.shape}"
        if want.dtype.kind in "mM":  # NaT never equals NaT: compare the stored integers
            assert got.tobytes() == want.tobytes(), path
        else:
            assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), path
        return
    if isinstance(want, np.generic):
        assert got.dtype == want.dtype, f"{path}: dtype {got.dtype} != {want.dtype}"
        if want.dtype.kind in "mM":
            assert (np.isnat(got) and np.isnat(want)) or got == want, path
        elif want.dtype.kind in "fc":  # longdouble's .item() stays a numpy scalar: compare here
            for g, w in ((got.real, want.real), (got.imag, want.imag)):
                assert (np.isnan(g) and np.isnan(w)) or (g == w and np.signbit(g) == np.signbit(w)), \
                    f"{path}: {got!r} != {want!r}"
        else:
            assert _scalar_same(got.item(), want.item()), f"{path}: {got!r} != {want!r}"
        return
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)!r} != {list(want)!r}"
        for k in want:
            assert_same(got[k], want[k], f"{path}[{k!r}]")
        return
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
        return
    if isinstance(want, (set, frozenset)):
        assert len(got) == len(want) and all(any(_scalar_same(g, w) for g in got) for w in want), path
        return
    assert _scalar_same(got, want), f"{path}: {got!r} != {want!r}"


def _scalar_same(got: Any, want: Any) -> bool:
    if type(got) is not type(want):
        return False
    if want is pd.NA or want is pd.NaT:  # singletons that refuse to be compared
        return got is want
    if isinstance(want, decimal.Decimal):  # NaN != NaN, and comparing a signalling NaN raises
        return str(got) == str(want)
    if isinstance(want, (dt.datetime, dt.time)):  # == compares instants; the zone (and fold, where it means
        # something: an aware wall time) must survive too
        return got == want and got.isoformat() == want.isoformat() and repr(got.tzinfo) == repr(want.tzinfo) \
            and (want.tzinfo is None or got.fold == want.fold)
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
    if isinstance(want, complex):
        return _scalar_same(got.real, want.real) and _scalar_same(got.imag, want.imag)
    return bool(got == want)
