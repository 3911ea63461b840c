"""``find`` through ``state_find_index``: the same answers as a scan, kept exact by whoever writes or removes versions.

Each check compares ``find`` with what the saved states say (computed here in Python), on SQLite and
PostgreSQL; the index rows themselves are read with plain SQL.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekit import StateManager

COUNTER = itertools.count()
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.1, 1.0, -0.0, 1e300, 2**70]),
    st.text(alphabet="ab \"'.[]\\\x00\x01é", max_size=4), st.just("x" * 400),
)
keys = st.sampled_from(["lr", "x y", "a.b", "[0]", "é", "k"])  # SQLite's find refuses keys with a quote
states = st.dictionaries(keys, st.one_of(scalars, st.dictionaries(keys, scalars, max_size=3)), min_size=1, max_size=4)


def canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def expected(saved: list[dict[str, Any]], path: list[str], value: Any) -> list[int]:
    out = []
    for version, state in enumerate(saved, start=1):
        node: Any = state
        for k in path:
            node = node.get(k, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError and canon(node) == canon(value):
            out.append(version)
    return out


def index_rows(sm: StateManager, snapshot_id: str | None = None) -> list[tuple[str, str]]:
    with sm.db.engine.connect() as conn:
        sql = "SELECT path, val FROM state_find_index" + (" WHERE snapshot_id = :s" if snapshot_id else "")
        return sorted(tuple(r) for r in conn.execute(sa.text(sql), {"s": snapshot_id}))


def key_path(parts: list[str]) -> str:
    return "".join(f"[{p!r}]" if i or not p.isidentifier() else p for i, p in enumerate(parts))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(saved=st.lists(states, min_size=1, max_size=4), data=st.data())
def test_find_through_the_index_agrees_with_the_states(sm: StateManager, saved: list[dict[str, Any]],
                                                       data: st.DataObject) -> None:
    entity = f"e{next(COUNTER)}"  # a fresh entity per example (the store lives across examples)
    for state in saved:
        sm.save(entity, state)
    # look for a value some version holds, and for one none holds
    version = data.draw(st.integers(1, len(saved)))
    state = saved[version - 1]
    first = data.draw(st.sampled_from(sorted(state)))
    path, value = [first], state[first]
    if isinstance(value, dict) and value:
        second = data.draw(st.sampled_from(sorted(value)))
        path, value = [first, second], value[second]
    holding = [v for v, s in enumerate(saved, start=1) if first in s]
    for wanted in (value, data.draw(scalars)):
        want = expected(saved, path, wanted)
        found = sm.find([entity], where={key_path(path): wanted})  # the entity's rows drive, the index probes
        assert list(found["version"]) == want, (path, wanted)
        everywhere = sm.find(where={key_path(path): wanted})  # the index drives
        assert list(everywhere[everywhere["entity_id"] == entity]["version"]) == want
        other, k = ("k" if path != ["k"] else "lr"), data.draw(scalars)
        both = sm.find(name=first, where={key_path(path): wanted, other: k})  # the rarest lookup drives
        assert set(both[both["entity_id"] == entity]["version"]) == set(want) & set(holding) & set(
            expected(saved, [other], k))
    names = sm.find([entity], name=first)
    assert list(names["version"]) == holding


def test_each_name_and_scalar_leaf_is_indexed(sm: StateManager) -> None:
    snap = sm.save("e", {"params": {"lr": 0.1, "opt": {"name": "adam"}}, "ok": True, "xs": [1, 2], "none": None})
    rows = index_rows(sm, snap.snapshot_id)
    vals = [v for _p, v in rows]
    assert len(rows) == 8 and vals.count("name:") == 4  # params, ok, xs, none; lr, opt.name, ok, none
    assert ("real:0.1" in vals and "text:adam" in vals) or ("number:0.1" in vals and "string:adam" in vals)
    assert not any(v.startswith(("array", "object")) for v in vals)  # lists are compared whole, by a scan


def test_big_and_odd_versions_are_still_found(sm: StateManager) -> None:
    sm.save("e", {"params": {"lr": 0.1}, "note": "n" * 20_000})  # too big to index: marked, then checked
    sm.save("e", {"params": {"lr": 0.1}, "note": "nul\x00 and \x01"})  # jsonb refuses \u0000
    sm.save("e", {"params": {"lr": 0.2}, "note": "plain"})
    assert list(sm.find(where={"params.lr": 0.1})["version"]) == [1, 2]
    assert list(sm.find(where={"note": "nul\x00 and \x01"})["version"]) == [2]
    assert list(sm.find(where={"params.lr": 0.1, "note": "plain"})["version"]) == []
    assert list(sm.find(name="note", where={"params": {"lr": 0.2}})["version"]) == [3]  # not a scalar: scanned


def test_removed_versions_leave_the_index(sm: StateManager) -> None:
    for i in range(6):
        sm.save("e", {"step": i, "tag": "same"})
    sm.save("gone", {"tag": "same"}, expires_in=timedelta(microseconds=1))
    before = len(index_rows(sm))
    sm.retain("e", keep_last=2, dry_run=False)
    sm.purge_expired()
    assert list(sm.find(where={"tag": "same"})["version"]) == [5, 6]
    assert len(index_rows(sm)) == before - 4 * 4 - 2  # four rows per removed version of e, two for gone


def test_a_restored_store_is_indexed(sm: StateManager, tmp_path: Path, store_url: str) -> None:
    sm.save("e", {"params": {"lr": 0.1}})
    sm.save("e", {"params": {"lr": 0.01}})
    sm.backup(str(tmp_path / "b.bak"))
    target = StateManager(f"sqlite:///{tmp_path / 'restored.db'}")
    try:
        target.restore(str(tmp_path / "b.bak"))
        assert list(target.find(where={"params.lr": 0.01})["version"]) == [2]
        assert len(index_rows(target)) == len(index_rows(sm))
    finally:
        target.close()


def test_a_store_without_the_index_is_scanned(store_url: str) -> None:
    with StateManager(store_url) as sm:
        sm.save("e", {"lr": 0.1})
        with sm.db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE state_find_index" + ("" if sm.db.is_sqlite else " CASCADE"))
    with StateManager(store_url) as sm:
        assert list(sm.find(where={"lr": 0.1})["version"]) == [1]
