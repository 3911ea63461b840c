"""Time travel: load/get(as_of=) give the head of a branch as it was then, from the audit trail."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from statekit import InvalidArgumentError, NotFoundError, StateManager


def _now() -> datetime:
    time.sleep(0.01)
    moment = datetime.now(UTC)
    time.sleep(0.01)
    return moment


def test_as_of_follows_saves_and_rollbacks(sm: StateManager) -> None:
    before = _now()
    sm.save("e", {"x": 1})
    t1 = _now()
    sm.save("e", {"x": 2})
    t2 = _now()
    sm.rollback("e", version=1, reason="bad")
    t3 = _now()
    assert sm.load("e", as_of=t1) == {"x": 1}
    assert sm.load("e", as_of=t2) == {"x": 2}
    assert sm.load("e", as_of=t3) == {"x": 1}
    assert sm.get("e", as_of=t3).version == 3  # the rollback version, not v1: the head as it was
    assert sm.get("e", as_of=t2).version == 2
    with pytest.raises(NotFoundError, match="no version on branch 'main'"):
        sm.load("e", as_of=before)


def test_as_of_on_a_branch_sees_when_it_was_created(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    sm.save("e", {"x": 2})
    before_branch = _now()
    sm.create_branch("e", "try", from_version=1)
    after_branch = _now()
    sm.save("e", {"x": 10}, branch="try")
    after_save = _now()
    with pytest.raises(NotFoundError):
        sm.load("e", as_of=before_branch, branch="try")
    assert sm.load("e", as_of=after_branch, branch="try") == {"x": 1}
    assert sm.load("e", as_of=after_save, branch="try") == {"x": 10}
    assert sm.load("e", as_of=after_save) == {"x": 2}  # main is untouched


def test_as_of_accepts_naive_utc_and_iso_text(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    t1 = _now()
    sm.save("e", {"x": 2})
    naive = t1.replace(tzinfo=None)
    assert sm.load("e", as_of=naive) == {"x": 1}
    assert sm.load("e", as_of=naive.isoformat(sep=" ")) == {"x": 1}
    assert sm.load("e", as_of=t1.isoformat().replace("+00:00", "Z")) == {"x": 1}
    later = t1.astimezone(__import__("datetime").timezone(timedelta(hours=5)))  # the same moment elsewhere
    assert sm.load("e", as_of=later) == {"x": 1}


def test_as_of_refuses_bad_combinations(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    with pytest.raises(InvalidArgumentError):
        sm.load("e", 1, as_of=datetime.now(UTC))
    with pytest.raises(InvalidArgumentError):
        sm.get("e", 1, as_of=datetime.now(UTC))
    with pytest.raises(InvalidArgumentError):
        sm.load("e", as_of="yesterday-ish")
    with pytest.raises(InvalidArgumentError):
        sm.load("e", as_of=12)
    with pytest.raises(NotFoundError, match="No entity"):
        sm.load("nobody", as_of=datetime.now(UTC))


def test_as_of_a_purged_head_says_it_was_removed(sm: StateManager) -> None:
    sm.save("e", {"x": 1}, expires_in=3600)
    t1 = _now()
    sm.save("e", {"x": 2}, expires_in="never")
    sm.purge_expired(now=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(NotFoundError, match="removed"):
        sm.load("e", as_of=t1)
    assert sm.load("e", as_of=datetime.now(UTC)) == {"x": 2}


def test_as_of_refuses_not_a_time(sm: StateManager) -> None:
    import pandas as pd

    sm.save("e", {"x": 1})
    with pytest.raises(InvalidArgumentError):
        sm.load("e", as_of=pd.NaT)
    assert sm.load("e", as_of=pd.Timestamp.now(tz="UTC")) == {"x": 1}


def test_as_of_looks_past_other_branches_changes(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    sm.create_branch("e", "busy")
    for i in range(20):  # many newer transitions of another branch (and tags) come first
        sm.save("e", {"x": 100 + i}, branch="busy")
        sm.tag("e", f"t{i}")
    assert sm.load("e", as_of=datetime.now(UTC)) == {"x": 1}
    assert sm.load("e", as_of=datetime.now(UTC), branch="busy") == {"x": 119}
