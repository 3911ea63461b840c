"""Every argument a user can get wrong gives one clear InvalidArgumentError on both backends, and writes nothing.

These are the inputs that used to reach the database driver, numpy or Python
itself and come back as their tracebacks, often on one backend only (issue 13).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from statekit import InvalidArgumentError, StateManager

BIG = 2**63
HUGE = 10**5000


def _state(sm: StateManager) -> tuple[int | None, int]:
    """What a failed call must leave unchanged: the head and the number of transitions."""
    return sm.head_version("e"), len(sm.transitions("e"))


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda sm: sm.save("e", {"a": 2}, metadata={"n": HUGE}), "64 bits"),
        (lambda sm: sm.save("e", {"a": 2}, metadata={"deep": [{"n": -HUGE}]}), "64 bits"),
        (lambda sm: sm.save("e", {"a": 2}, metadata={"n": 2**70}), "64 bits"),
        (lambda sm: sm.save("e", {"a": 2}, message="bad \ud800 text"), "surrogate"),
        (lambda sm: sm.save("e", {"a": 2}, actor="\udfff"), "surrogate"),
        (lambda sm: sm.save("e", {"a": 2}, actor="a" * 256), "limit is 255"),
        (lambda sm: sm.save("e", {"a": 2}, expires_in=1e300), "never"),
        (lambda sm: sm.save("e", {"a": 2}, expires_in=timedelta.max), "never"),
        (lambda sm: sm.save("e", {"a": 2}, expires_in=np.float64("nan")), "negative"),
        (lambda sm: sm.save("e", {"a": 2}, expires_in=np.array([1, 2])), "expires_in"),
        (lambda sm: sm.save("e", {"a": 2}, expected_version=BIG), r"2\*\*63"),
        (lambda sm: sm.save("e", {"a": 2}, drop=5), "drop must be a list"),
        (lambda sm: sm.save("e", {"a": 2}, drop=b"ab"), "drop must be a list"),
        (lambda sm: sm.save("e", {"a": 2}, merge="no"), "merge must be True or False"),
        (lambda sm: sm.save("e", {"a": 2}, allow_pickle=np.array([1, 2])), "allow_pickle must be True or False"),
        (lambda sm: sm.save_many({"ok": {"a": 1}, "e\u200b": {"a": 1}}), "invisible"),
        (lambda sm: sm.load("e", BIG), r"2\*\*63"),
        (lambda sm: sm.get("e", 2**64), r"2\*\*63"),
        (lambda sm: sm.diff("e", 1, BIG), r"2\*\*63"),
        (lambda sm: sm.diff("e", 1, 1, max_rows=-1), "max_rows"),
        (lambda sm: sm.rollback("e", BIG), r"2\*\*63"),
        (lambda sm: sm.rollback("e", 1, actor="x" * 300), "limit is 255"),
        (lambda sm: sm.create_branch("e", "b", from_version=BIG), r"2\*\*63"),
        (lambda sm: sm.create_branch("e", "b", actor="x" * 300), "limit is 255"),
        (lambda sm: sm.history("e", limit=-1), "limit"),
        (lambda sm: sm.history("e", limit=0), "limit"),
        (lambda sm: sm.history("e", limit=BIG), "limit"),
        (lambda sm: sm.history("e", limit=1.5), "whole number"),
        (lambda sm: sm.history("e", branch=5), "branch must be a string"),
        (lambda sm: sm.history("e", include_expired="yes"), "include_expired"),
        (lambda sm: sm.subscribe(print, state_type="nope"), "state_type"),
        (lambda sm: sm.subscribe(print, entity_id=5), "entity_id"),
        (lambda sm: sm.metrics(as_frame="x"), "as_frame"),
    ],
)
def test_out_of_range_arguments_are_refused_alike_on_both_backends(sm: StateManager, call, fragment: str) -> None:  # noqa: ANN001
    sm.save("e", {"a": 1})
    before = _state(sm)
    with pytest.raises(InvalidArgumentError, match=fragment) as err:
        call(sm)
    assert "\n" not in str(err.value)
    assert _state(sm) == before


@pytest.mark.parametrize("kwargs, fragment", [
    ({"lock_timeout": "x"}, "lock_timeout"),
    ({"lock_timeout": float("inf")}, "lock_timeout"),
    ({"lock_timeout": -1}, "lock_timeout"),
    ({"cache_size": -1}, "cache_size"),
    ({"cache_bytes": "lots"}, "cache_bytes"),
    ({"allow_pickle": "yes"}, "allow_pickle"),
    ({"actor": "a" * 256}, "limit is 255"),
    ({"url": "sqlite:///a\x00b"}, "url"),
    ({"url": "\ud800.db"}, "url"),
    ({"db": "sqlite:///x.db"}, "DatabaseManager"),
])
def test_constructor_arguments_are_checked(store_url: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        kwargs = dict(kwargs)
        StateManager(kwargs.pop("url", store_url), **kwargs)


def test_numpy_numbers_are_accepted_where_python_numbers_are(sm: StateManager) -> None:
    snap = sm.save("e", {"a": 1}, expires_in=np.int64(3600))
    assert snap.expires_at is not None and snap.expires_at - snap.created_at == timedelta(hours=1)
    snap = sm.save("e", {"a": 2}, expires_in=np.float32(60.0), expected_version=np.int64(1))
    assert snap.version == 2 and snap.expires_at - snap.created_at == timedelta(minutes=1)
    assert sm.load("e", np.int32(1)) == {"a": 1}
    assert len(sm.history("e", limit=np.int64(1))) == 1
    snap = sm.save("e", {"a": 3}, expires_in=np.timedelta64(2, "h"))
    assert snap.expires_at - snap.created_at == timedelta(hours=2)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        sm.save("e", {"a": 3}, expires_in=np.timedelta64("NaT"))
    assert sm.save("e", {"a": 3}, expires_in="never").expires_at is None
    assert sm.save("e", {"a": 4}, expires_in=float("inf")).expires_at is None  # infinity means never


def test_the_longest_lifetime_is_accepted_and_one_second_more_is_not(sm: StateManager) -> None:
    from statekit.writer import MAX_LIFETIME

    snap = sm.save("e", {"a": 1}, expires_in=MAX_LIFETIME)
    assert snap.expires_at is not None and snap.expires_at > datetime.now(UTC) + timedelta(days=365 * 999)
    assert sm.load("e") == {"a": 1}
    with pytest.raises(InvalidArgumentError, match="never"):
        sm.save("e", {"a": 2}, expires_in=MAX_LIFETIME + timedelta(seconds=1))


def test_an_actor_of_255_characters_fits_on_both_backends(sm: StateManager) -> None:
    snap = sm.save("e", {"a": 1}, actor="é" * 255, metadata={"n": 2**63 - 1, "m": -(2**63)})
    assert sm.history("e")["actor"].tolist() == ["é" * 255]
    assert sm.get("e").metadata == {"n": 2**63 - 1, "m": -(2**63)} == snap.metadata


@pytest.mark.parametrize("bad", [
    "main ", " main", "ma\u202ein", "a\u200bb", "a\ufeff", "x\u2066y", "a\u2028b", "a\x1bb", "a\ud800", "a\ue000",
    "\u00ad",
])
def test_identifiers_with_invisible_or_surrounding_characters_are_refused(sm: StateManager, bad: str) -> None:
    sm.save("e", {"a": 1})
    with pytest.raises(InvalidArgumentError) as err:
        sm.save(bad, {"a": 1})
    if bad == bad.strip():
        assert bad not in str(err.value) and str(err.value).isprintable()  # shown escaped, never raw
    with pytest.raises(InvalidArgumentError):
        sm.create_branch("e", bad)
    assert sm.entities()["entity_id"].tolist() == ["e"]
    assert sm.branches("e")["branch"].tolist() == ["main"]


def test_printable_unicode_identifiers_are_fine(sm: StateManager) -> None:
    for eid in ("données", "実験 1", "a-b_c.d", "ε/δ"):
        sm.save(eid, {"a": 1})
        assert sm.load(eid) == {"a": 1}


def test_a_branch_that_differs_only_by_case_is_refused(sm: StateManager) -> None:
    sm.save("e", {"a": 1})
    sm.create_branch("e", "Dev")
    for name in ("Main", "MAIN", "dev", "DEV"):
        with pytest.raises(InvalidArgumentError, match="only by case"):
            sm.create_branch("e", name)
    sm.create_branch("e", "dev2")
    assert sorted(sm.branches("e")["branch"]) == ["Dev", "dev2", "main"]


def test_lone_surrogates_and_overflows_leave_the_store_as_it_was(sm: StateManager) -> None:
    sm.save("e", {"a": 1}, message="ok")
    for kwargs in ({"message": "\ud83d"}, {"actor": "\ud83d"}, {"metadata": {"x": HUGE}},
                   {"expires_in": timedelta.max}, {"expires_in": 1e300}):
        with pytest.raises(InvalidArgumentError):
            sm.save("e", {"a": 2}, **kwargs)
        with pytest.raises(InvalidArgumentError):
            sm.save_many({"e": {"a": 2}, "f": {"b": 1}}, **{k: v for k, v in kwargs.items() if k != "expires_in"}
                         or {"expires_in": kwargs["expires_in"]})
    assert sm.load("e") == {"a": 1} and sm.head_version("e") == 1
    assert sm.entities()["entity_id"].tolist() == ["e"]
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        sm.rollback("e", 1, reason="\udc00")
