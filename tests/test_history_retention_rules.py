"""purge_expired follows retain's protection rules, and verify() sees history damage retention could leave.

Both backends (``sm`` fixture). The damage is crafted with plain SQL on the store's own tables.
"""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa

from statekit import StateManager
from statekit.db import utcnow

LATER = timedelta(hours=1)


def _problems(sm: StateManager) -> list[tuple[int | None, str]]:
    found = sm.verify()
    return [(None if v is None or v != v else int(v), p) for v, p in zip(found["version"], found["problem"], strict=True)]


# ---------------------------------------------------------------------------- purge_expired's rules


def test_purge_keeps_a_tagged_version_and_recomputes_changed_of_the_child_it_repoints(sm: StateManager) -> None:
    sm.save("e", {"a": 1}, expires_in="never")                  # v1
    sm.save("e", {"a": 2}, expires_in=60)                       # v2: expires, untagged
    sm.save("e", {"a": 2, "b": 1}, expires_in=60)               # v3: expires, tagged
    sm.save("e", {"a": 2, "b": 2}, expires_in="never")          # v4
    sm.tag("e", "release", 3)
    assert list(sm.history("e", changed="a")["version"]) == [1, 2]

    removed = sm.purge_expired(now=utcnow() + LATER)

    assert list(removed.loc[removed["kind"] == "snapshot", "version"]) == [2]
    assert list(sm.history("e")["version"]) == [1, 3, 4]
    assert sm.load("e", tag="release") == {"a": 2, "b": 1}
    assert bool(sm.tags("e")["present"].iloc[0])
    assert list(sm.history("e", changed="a")["version"]) == [1, 3]  # v3 now follows v1: a changed there
    assert list(sm.history("e", changed="b")["version"]) == [3, 4]
    assert sm.verify().empty


def test_purge_keeps_the_merge_base_a_future_merge_needs(sm: StateManager) -> None:
    sm.save("e", {"a": 1, "b": 1}, expires_in=60)               # v1: the base of main and dev, expires
    sm.create_branch("e", "dev")
    sm.save("e", {"a": 2, "b": 1}, expires_in="never")          # v2 on main
    sm.save("e", {"a": 1, "b": 2}, branch="dev", expires_in="never")  # v3 on dev

    sm.purge_expired(now=utcnow() + LATER)

    assert list(sm.history("e")["version"]) == [1, 2, 3]  # v1 stays
    assert sm.verify().empty
    merged = sm.merge("e", "dev")  # both sides changed a different name: no conflict, as before the purge
    assert sm.load("e", merged.version) == {"a": 2, "b": 2}


def test_purge_keeps_the_second_parent_of_a_merge(sm: StateManager) -> None:
    sm.save("e", {"a": 1, "b": 1}, expires_in="never")          # v1
    sm.create_branch("e", "dev")
    sm.save("e", {"a": 1, "b": 2}, branch="dev", expires_in=60)  # v2: dev's change, expires
    sm.save("e", {"a": 2, "b": 1}, expires_in="never")          # v3 on main
    merged = sm.merge("e", "dev")                               # v4: parents v3 and v2
    sm.save("e", {"a": 1, "b": 2, "c": 3}, branch="dev", expires_in="never")  # v5: dev moves on
    sm.save("e", {"a": 9, "b": 2}, expires_in=60)              # v6 on main: expires, nothing needs it

    removed = sm.purge_expired(now=utcnow() + LATER)

    assert list(removed.loc[removed["kind"] == "snapshot", "version"]) == [6]
    assert 2 in set(sm.history("e", branch="dev")["version"])
    assert sm.load("e", merged.version) == {"a": 2, "b": 2}
    assert sm.verify().empty
    assert sm.retain("e", keep_last=1, dry_run=False)["version"].tolist() == [1, 3]  # the same rule in retain


def test_purge_still_removes_an_expired_head_and_moves_its_branch_back(sm: StateManager) -> None:
    sm.save("e", {"a": 1}, expires_in="never")
    sm.save("e", {"a": 2}, expires_in=60)
    sm.purge_expired(now=utcnow() + LATER)
    assert sm.load("e") == {"a": 1}
    assert sm.verify().empty


# ---------------------------------------------------------------------------- verify() on crafted rows


def _sql(sm: StateManager, text: str, **params: object) -> None:
    with sm.db.engine.begin() as conn:
        conn.execute(sa.text(text), params)


def _sid(sm: StateManager, entity: str, version: int) -> str:
    return sm.get(entity, version).snapshot_id


def test_verify_reports_lineage_that_does_not_match_its_digest(sm: StateManager) -> None:
    sm.save("e", {"a": 1}, lineage={"code": "a = 1"})
    sm.save("e", {"a": 2}, lineage={"code": "a = 2"})
    assert sm.verify().empty
    other = sm.db.engine.connect()
    with other:
        text = other.execute(sa.text("SELECT lineage FROM state_snapshots WHERE version = 2")).scalar_one()
    stored = json.loads(text) if isinstance(text, str) else text
    stored["value"]["code"] = "a = 3"  # the digest no longer matches
    cast = "" if sm.db.is_sqlite else "::json"
    _sql(sm, f"UPDATE state_snapshots SET lineage = CAST(:l AS TEXT){cast} WHERE version = 2", l=json.dumps(stored))
    _sql(sm, f"UPDATE state_snapshots SET lineage = CAST(:l AS TEXT){cast} WHERE version = 1",
         l=json.dumps({"value": {"code": "a = 1"}}))  # no digest at all
    assert sorted(_problems(sm)) == [(1, "lineage_mismatch"), (2, "lineage_mismatch")]


def test_verify_reports_a_malformed_changed_column(sm: StateManager) -> None:
    for n in range(1, 5):
        sm.save("e", {"a": n})
    cast = "" if sm.db.is_sqlite else "::json"
    _sql(sm, f"UPDATE state_snapshots SET changed = CAST(:c AS TEXT){cast} WHERE version = 2", c='["a"]')
    _sql(sm, f"UPDATE state_snapshots SET changed = CAST(:c AS TEXT){cast} WHERE version = 3", c='{"a": "a"}')
    _sql(sm, f"UPDATE state_snapshots SET changed = CAST(:c AS TEXT){cast} WHERE version = 4", c='{"a": [1]}')
    assert sorted(_problems(sm)) == [(2, "changed_malformed"), (3, "changed_malformed"), (4, "changed_malformed")]
    if sm.db.is_sqlite:
        _sql(sm, "UPDATE state_snapshots SET changed = 'not json' WHERE version = 1")
        assert (1, "changed_malformed") in _problems(sm)


def test_verify_reports_a_dangling_second_parent(sm: StateManager) -> None:
    sm.save("e", {"a": 1, "b": 1})
    sm.create_branch("e", "dev")
    sm.save("e", {"a": 1, "b": 2}, branch="dev")
    sm.save("e", {"a": 2, "b": 1})
    merged = sm.merge("e", "dev")
    assert sm.verify().empty
    second = _sid(sm, "e", 2)
    # remove the second parent the way an older purge could: re-point its children, drop its rows
    _sql(sm, "UPDATE state_branches SET head_snapshot_id = :h, head_version = 1 WHERE name = 'dev'", h=_sid(sm, "e", 1))
    _sql(sm, "DELETE FROM state_snapshot_payloads WHERE snapshot_id = :s", s=second)
    _sql(sm, "DELETE FROM state_snapshots WHERE snapshot_id = :s", s=second)
    assert _problems(sm) == [(merged.version, "missing_merge_parent")]
