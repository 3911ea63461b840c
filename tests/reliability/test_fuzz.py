"""Fuzzing: every state round-trips exactly or fails with a StatekitError, writing nothing.

Hypothesis drives ``save`` with arbitrary entity ids, names, state types,
messages, metadata, lifetimes and values: nested containers, empty ones,
huge ones (past the inline limit and the chunk size), unicode (lone
surrogates included), NaN and infinities, -0.0, None, bytes, tuples, sets,
dicts with non-string keys, Decimals (NaN included), dates and times with
zones, numpy scalars of every kind (longdouble included), ndarrays, small
DataFrames and Series, objects that need pickle, with and without
``allow_pickle``. For each input:

- the save returns, and a manager without a cache loads exactly the same
  values (same types all the way down, NaN for NaN, frames with their dtypes
  and index); or
- it raises a StatekitError, and the store holds not one more row than
  before (snapshots, transitions, chunks, links, entities, branches);
- any other exception fails the test.

After the run, ``verify()`` finds nothing at all (no error, no orphan chunk).

The ``%state`` parser gets any string: it returns parsed arguments or raises
a one-line UsageError (``-h`` prints help). Then, in a real shell on a real
store, lines built from the real commands: each gives a result or one
UsageError, a failed command changes nothing in the store, and the store
stays clean.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import io
import os
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra import pandas as hpd

from statekit import StatekitError, StateManager, StateType

from . import states
from .figures import record

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("STATEKIT_RELIABILITY_FUZZ", "500"))
TABLES = ["state_snapshots", "state_transitions", "state_payloads", "state_snapshot_payloads", "state_entities",
          "state_branches"]

# ------------------------------------------------------------------ values

HUGE = {
    "huge_str": "x" * 300_000 + "é🙂",
    "huge_list": list(range(60_000)),
    "huge_bytes": bytes(range(256)) * 1200,
    "huge_frame": pd.DataFrame({"a": np.arange(200_000, dtype=np.int64), "b": np.linspace(0, 1, 200_000)}),
    "huge_array": np.arange(1_200_000, dtype=np.float64),  # 9.6 MB: two .npy chunks
    "deep": [[[[[[[[[[{"k": (1, 2, {3})}]]]]]]]]]],
}


def huge(name: str) -> Any:
    """A huge value by name (a strategy over the names keeps Hypothesis' reprs short)."""
    return HUGE[name]


class Opaque:
    """A plain object: no codec takes it, pickle does."""

    def __init__(self, n: int):
        self.n = n

    def __eq__(self, other: object) -> bool:
        return type(other) is Opaque and other.n == self.n

    def __hash__(self) -> int:
        return self.n


text = st.text(max_size=20) | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3) \
    | st.sampled_from(["", "__sk__", "\x00", "é∂🙂", "a\nb"])
plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)  # pandas' Arrow strings refuse surrogates
numpy_scalars = st.one_of(*[hnp.arrays(np.dtype(t), ()).map(lambda a: a[()]) for t in (
    "i1", "i8", "u8", "f2", "f4", "f8", "c8", "c16", "?", "M8[ns]", "m8[s]", "g")])  # "g": longdouble
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
    st.floats(), st.just(-0.0), text, st.binary(max_size=40), st.complex_numbers(),
    st.decimals(), st.sampled_from([decimal.Decimal("NaN"), decimal.Decimal("-Infinity"), decimal.Decimal("1E+999")]),
    st.dates(), st.times(), st.datetimes(), st.datetimes(timezones=st.timezones()), st.timedeltas(),
    st.uuids(), numpy_scalars,
    st.builds(pd.Timestamp, st.datetimes(min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2250, 1, 1))),
)
hashables = st.one_of(st.none(), st.booleans(), st.integers(), text, st.binary(max_size=8), st.floats(),
                      st.tuples(st.integers(), text))
frames = st.one_of(
    hpd.data_frames(columns=hpd.columns(["a", "b"], dtype=float), index=hpd.range_indexes(max_size=6)),
    hpd.data_frames(columns=[hpd.column("i", dtype=np.int64), hpd.column("s", elements=plain_text),
                             hpd.column("t", dtype="datetime64[ns]"), hpd.column("f", dtype=bool)],
                    index=hpd.range_indexes(max_size=6)),
    hpd.data_frames(columns=hpd.columns(2, dtype=np.int32), index=hpd.indexes(elements=plain_text, max_size=5)),
    hpd.series(elements=st.floats(allow_nan=True), index=hpd.range_indexes(max_size=6)),
    st.just(pd.DataFrame()), st.just(pd.DataFrame(index=[1, 2])),
    st.just(pd.DataFrame({"o": [1, "a", None]})),  # mixed Python objects: Arrow cannot, pickle can
)
# numpy's pickle turns a non-native datetime64/timedelta64 dtype into the native one: keep those native
# (a bare ndarray of any byte order goes through .npy, which keeps it; test_codecs covers that)
arrays = hnp.arrays(hnp.scalar_dtypes().map(lambda d: d.newbyteorder("=") if d.kind in "mM" else d),
                    hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
leaves = (scalars | frames | arrays | st.sampled_from(sorted(HUGE)).map(huge) | st.builds(Opaque, st.integers(0, 9))
          | st.just(lambda: 1) | st.just(pd.NA) | st.just(pd.NaT))
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(text, inner, max_size=4), st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=4), st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)
def mostly(valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any], odds: int = 10) -> st.SearchStrategy[Any]:
    """One draw in ``odds`` from ``anything``, the rest from ``valid``: with several arguments fuzzed at
    once, most saves must still get past the argument checks to reach the codecs."""
    return st.sampled_from([True] * (odds - 1) + [False]).flatmap(lambda ok: valid if ok else anything)


names = mostly(st.sampled_from(["df", "x", "é", "a b", "__sk__", "🙂"]) | plain_text.filter(bool),
               text | st.integers() | st.none(), odds=30)
entity_ids = mostly(st.sampled_from(["e1", "e2", "ünï", "🙂", "a" * 255]),
                    text | st.just("a" * 256) | st.integers() | st.none())
state_types = mostly(st.none(), st.sampled_from([*StateType, "agent_state", "AGENT_STATE", "nope", ""]))
lifetimes = mostly(st.none(), st.sampled_from(["never", -1, float("nan"), float("inf"), 3600, dt.timedelta(days=1),
                                               "soon", 1e-9]))
metadata = mostly(st.none(), st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
                  | st.just({"bad": {1, 2}}) | st.just(["not", "a", "dict"]))
messages = mostly(st.none() | st.text(max_size=30), st.just("nul \x00 inside") | st.integers())
state_strategy = mostly(st.dictionaries(names, leaves | values, max_size=5), values)


def counts(sm: StateManager) -> dict[str, int]:
    with sm.db.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}


def test_any_state_round_trips_exactly_or_fails_with_a_statekit_error_writing_nothing(store_url: str) -> None:
    sm = StateManager(store_url)
    reader = StateManager(store_url, cache_size=0)
    tally: Counter[str] = Counter()
    kinds: Counter[str] = Counter()  # the types of the top-level values that were saved and round-tripped

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(entity=entity_ids, state=state_strategy,
           state_type=state_types, message=messages, meta=metadata, expires=lifetimes, pickle_ok=st.booleans(),
           merge=st.booleans())
    def one(entity: Any, state: Any, state_type: Any, message: Any, meta: Any, expires: Any, pickle_ok: bool,
            merge: bool) -> None:
        tally["inputs"] += 1
        before = counts(sm)
        try:
            snap = sm.save(entity, state, state_type, message=message, metadata=meta, expires_in=expires,
                           allow_pickle=pickle_ok, merge=merge)
        except StatekitError as exc:
            tally[f"refused: {type(exc).__name__}"] += 1
            assert counts(sm) == before, f"a refused save ({exc}) left rows behind"
            return
        tally["saved"] += 1
        for v in (state.values() if isinstance(state, dict) else ()):
            kinds[type(v).__name__] += 1
        got = reader.load(entity, snap.version, include_expired=True)
        if merge:
            got = {k: got[k] for k in state}  # the parent's other names were carried over
        states.assert_same(got, dict(state), "loaded")
        states.assert_same(reader.get(entity, snap.version, include_expired=True).state if not merge else got,
                           dict(state), "get().state")

    try:
        one()
        problems = sm.verify()
        assert problems.empty, problems.to_string()
    finally:
        sm.close()
        reader.close()
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    record(f"fuzz_api[{backend}]", inputs_tried=tally["inputs"], saved_and_round_tripped=tally["saved"],
           refused_cleanly=tally["inputs"] - tally["saved"],
           refusals={k.removeprefix("refused: "): v for k, v in sorted(tally.items()) if k.startswith("refused")},
           verify_problems_after=0, saved_value_types=dict(kinds.most_common()))
    assert tally["saved"] > EXAMPLES // 5, "the fuzzer hardly ever produced a storable state"


# ------------------------------------------------------------------ the %state parser


def test_the_state_parser_takes_any_string_to_arguments_or_one_usage_error() -> None:
    from IPython.core.error import UsageError

    from statekit.notebook.args import HelpShown, parse

    tally: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES * 8, deadline=None, database=None)
    @given(line=st.one_of(st.text(max_size=80), st.text(st.characters(max_codepoint=0x7F), max_size=40),
                          st.lists(st.sampled_from(["save", "load", "-m", "'", '"', "\\", "--", "-h", "v1", "0",
                                                    "99999999999999999999", "\x00", "é", "--all", "on"]),
                                   max_size=6).map(" ".join)))
    def one(line: str) -> None:
        tally["inputs"] += 1
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                args = parse(line)
        except UsageError as exc:
            tally["usage_error"] += 1
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
            return
        except HelpShown:
            tally["help"] += 1
            return
        tally["parsed"] += 1
        assert args.command in ("save", "load", "rollback", "log", "diff", "branch", "checkout", "status",
                                "verify", "auto", "use", "panel")

    one()
    record("fuzz_magic_parser", inputs_tried=tally["inputs"], parsed=tally["parsed"],
           usage_errors=tally["usage_error"], help_shown=tally["help"])


COMMANDS = ["save", "load", "rollback", "log", "diff", "branch", "checkout", "status", "verify"]
WORDS = ["-m", "-r", "-b", "-n", "-f", "--all", "x", "df", "nope", "main", "side", "1", "2", "3", "v2", "0", "99",
         "'a b'", '"', "é", "--", "-h"]


def test_state_lines_in_a_real_shell_give_a_result_or_a_usage_error_and_a_failed_one_changes_nothing(
        tmp_path: Path) -> None:
    from IPython.core.error import UsageError

    from tests import shells

    url = f"sqlite:///{tmp_path / 'magic.db'}"
    shell = shells.make_shell(url, "fz", progress_delay=60.0)
    shell.run_cell("import pandas as pd\nx = {'k': 1}\ndf = pd.DataFrame({'a': [1, 2]})")
    shell.run_line_magic("state", "save")
    magics = shell.magics_manager.registry["StateMagics"]
    probe = StateManager(url)
    tally: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES // 2, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(words=st.tuples(mostly(st.sampled_from(COMMANDS), st.text(max_size=6).map(shlex.quote), odds=8),
                           st.lists(st.sampled_from(WORDS) | st.text(max_size=6).map(shlex.quote), max_size=3)
                           ).map(lambda t: [t[0], *t[1]]),
           change=st.integers(0, 3))
    def one(words: list[str], change: int) -> None:
        if words[0] in ("use", "panel"):  # another entity, or widgets: covered elsewhere
            return
        tally["inputs"] += 1
        shell.user_ns["x"] = {"k": change}
        line = " ".join(words)
        before = counts(probe)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                shell.run_line_magic("state", line)
        except UsageError as exc:
            tally["usage_error"] += 1
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
            assert counts(probe) == before, f"%state {line} failed ({exc}) but changed the store"
        else:
            tally["ran"] += 1
        assert "Traceback" not in out.getvalue(), out.getvalue()
        magics.entity = "fz"

    try:
        one()
        assert probe.verify().empty
        for v in probe.history("fz")["version"]:
            probe.load("fz", int(v))
    finally:
        probe.close()
        magics.close()
    record("fuzz_magic_shell", inputs_tried=tally["inputs"], ran=tally["ran"], usage_errors=tally["usage_error"])
