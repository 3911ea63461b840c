"""A damaged version is never returned as good, and the last intact one can be recovered.

Three versions of an entity (inline JSON, a tagged tuple, a DataFrame and an
ndarray each), then one kind of damage to the head (v3), written with plain
SQL as a disk fault, a bad restore or a careless colleague would:

- a flipped byte in the inline ``state_data`` JSON (still valid JSON);
- a flipped byte in the item descriptors (``items``);
- a flipped byte in a DataFrame chunk and in an ndarray chunk (``state_payloads``);
- a truncated chunk; a deleted chunk row;
- a wrong value in the ``checksum`` column.

Each is caught, with a fresh StateManager (no cache): ``load`` (the head and
by version), ``get(...).state`` and ``diff`` raise IntegrityError naming the
snapshot; ``verify()`` reports it (and only it) as an error;
``last_intact()`` is v2; ``rollback(entity, v2)`` makes a new head equal to
v2. Rolling back to the damaged v3 is refused, writing nothing. The command
does the same: ``statekit verify`` exits 3 naming the snapshot, ``statekit
show`` refuses it, ``statekit recover`` makes v2's state the new head.

On SQLite, where the column is plain text, a byte flip that breaks the JSON
syntax is caught the same way (PostgreSQL's json type refuses such text, so
that damage cannot exist there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from statekit import IntegrityError, StateManager

from . import states
from .figures import record

pytestmark = pytest.mark.reliability

ENTITY = "damaged"


def version_state(v: int) -> dict[str, Any]:
    rng = np.random.default_rng(v)
    return {
        "note": ["first", "second", "third"][v - 1],
        "params": {"lr": 0.1 * v, "tags": ["a", "b"], "pair": (v, "x")},
        "df": pd.DataFrame({"x": rng.standard_normal(300), "label": [f"r{v}-{i}" for i in range(300)]}),
        "arr": rng.integers(0, 1000, 5000),
    }


def run(sm: StateManager, sql: str, **params: Any) -> list[Any]:
    with sm.db.engine.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        return result.all() if result.returns_rows else []


def text_column(sm: StateManager, column: str, sid: str) -> str:
    return run(sm, f"SELECT CAST({column} AS TEXT) FROM state_snapshots WHERE snapshot_id = :s", s=sid)[0][0]


def set_json_column(sm: StateManager, column: str, sid: str, text: str) -> None:
    value = ":t" if sm.db.is_sqlite else "CAST(:t AS JSON)"
    run(sm, f"UPDATE state_snapshots SET {column} = {value} WHERE snapshot_id = :s", t=text, s=sid)


def chunk_of(sm: StateManager, sid: str, name: str) -> str:
    """A chunk digest that only this snapshot uses: the first column chunk of a frame, or an array's first chunk."""
    desc = json.loads(text_column(sm, "items", sid))[name]
    if desc["codec"] == "arrow":  # format 2: chunk groups, the data's last; format 1: one list per column
        return desc["groups"][-1][3][0] if "groups" in desc else desc["columns"][0][0]
    return desc["chunks"][0]


def chunk_bytes(sm: StateManager, digest: str) -> bytes:
    return bytes(run(sm, "SELECT data FROM state_payloads WHERE digest = :d", d=digest)[0][0])


def set_chunk(sm: StateManager, digest: str, data: bytes) -> None:
    run(sm, "UPDATE state_payloads SET data = :b WHERE digest = :d", b=data, d=digest)


def flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def damage(kind: str, sm: StateManager, sid: str) -> str:
    """Apply one kind of damage to snapshot ``sid``; returns the problem verify() must report ("a|b": either)."""
    if kind == "inline_json_byte":
        text = text_column(sm, "state_data", sid)
        assert text.count("third") == 1
        set_json_column(sm, "state_data", sid, text.replace("third", "thirf"))  # 'd' ^ 0x02: still valid JSON
        return "checksum_mismatch"
    if kind == "descriptor_byte":
        text = text_column(sm, "items", sid)
        i = text.index('"rows":') + len('"rows":')
        set_json_column(sm, "items", sid, text[:i] + chr(ord(text[i]) ^ 0x01) + text[i + 1 :])  # 300 -> 200
        return "checksum_mismatch"
    if kind in ("frame_chunk_byte", "array_chunk_byte"):
        d = chunk_of(sm, sid, "df" if kind == "frame_chunk_byte" else "arr")
        set_chunk(sm, d, flip(chunk_bytes(sm, d)))
        return "corrupt_chunk"
    if kind == "truncated_chunk":
        d = chunk_of(sm, sid, "arr")
        data = chunk_bytes(sm, d)
        set_chunk(sm, d, data[: len(data) // 2])
        return "corrupt_chunk"
    if kind == "deleted_chunk":
        run(sm, "DELETE FROM state_payloads WHERE digest = :d", d=chunk_of(sm, sid, "df"))
        return "missing_chunk"
    if kind == "wrong_checksum":
        other = run(sm, "SELECT checksum FROM state_snapshots WHERE entity_id = :e AND version = 2", e=ENTITY)[0][0]
        run(sm, "UPDATE state_snapshots SET checksum = :c WHERE snapshot_id = :s", c=other, s=sid)
        return "checksum_mismatch"
    if kind == "invalid_json_byte":  # SQLite only
        text = text_column(sm, "state_data", sid)
        set_json_column(sm, "state_data", sid, "[" + text[1:])  # '{' -> '[': no longer JSON
        return "checksum_mismatch|unreadable"
    raise AssertionError(kind)


def assert_refused(fn: Any, sid: str, what: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        fn()
    assert caught.value.snapshot_id == sid, f"{what}: the error names {caught.value.snapshot_id}, not {sid}"
    assert sid in str(caught.value), f"{what}: the message does not name the snapshot: {caught.value}"


DETECTED = "refused by load, get, diff, load_many and rollback; reported by verify; last_intact v2 rolled back to"
KINDS = ["inline_json_byte", "descriptor_byte", "frame_chunk_byte", "array_chunk_byte", "truncated_chunk",
         "deleted_chunk", "wrong_checksum"]


def check_detected_and_recovered(url: str, kind: str) -> None:
    with StateManager(url) as writer:
        snaps = [writer.save(ENTITY, version_state(v), message=f"v{v}") for v in (1, 2, 3)]
        sid = snaps[2].snapshot_id
        expected_problem = damage(kind, writer, sid)

    sm = StateManager(url, cache_size=0)  # every read goes to the database
    try:
        assert_refused(lambda: sm.load(ENTITY), sid, "load(head)")
        assert_refused(lambda: sm.load(ENTITY, 3), sid, "load(3)")
        assert_refused(lambda: sm.get(ENTITY, 3).state, sid, "get(3).state")
        assert_refused(lambda: sm.diff(ENTITY, 2, 3), sid, "diff(2, 3)")
        assert_refused(lambda: sm.load_many([ENTITY]), sid, "load_many")

        problems = sm.verify()
        errors = problems[problems["severity"] == "error"]
        assert set(errors["snapshot_id"]) == {sid}, problems.to_string()
        assert set(expected_problem.split("|")) & set(errors["problem"]), problems.to_string()

        states.assert_same(sm.load(ENTITY, 2), version_state(2), "v2")
        states.assert_same(sm.load(ENTITY, 1), version_state(1), "v1")
        good = sm.last_intact(ENTITY)
        assert (good.version, good.snapshot_id) == (2, snaps[1].snapshot_id)

        fixed = sm.rollback(ENTITY, good.version, reason=f"v3 damaged ({kind})")
        assert fixed.version == 4 and fixed.kind == "rollback"
        states.assert_same(sm.load(ENTITY), version_state(2), "recovered head")
        assert sm.last_intact(ENTITY).version == 4
    finally:
        sm.close()
    with StateManager(url) as fresh:
        states.assert_same(fresh.load(ENTITY), version_state(2), "recovered head, fresh manager")


@pytest.mark.parametrize("kind", KINDS)
def test_damage_is_detected_on_load_and_by_verify_and_the_last_intact_version_recovers(
        store_url: str, kind: str) -> None:
    check_detected_and_recovered(store_url, kind)
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    record("corruption", merge=True, **{f"{backend}:{kind}": DETECTED})


@pytest.mark.parametrize("kind", KINDS)
def test_rollback_to_a_damaged_version_is_refused(store_url: str, kind: str) -> None:
    """A rollback copies the target by reference: to a damaged target it would make a damaged head look new."""
    with StateManager(store_url) as writer:
        sid = [writer.save(ENTITY, version_state(v)) for v in (1, 2, 3)][2].snapshot_id
        damage(kind, writer, sid)
    with StateManager(store_url, cache_size=0) as sm:
        assert_refused(lambda: sm.rollback(ENTITY, 3, reason="must not copy damage"), sid, "rollback to v3")
        assert sm.head_version(ENTITY) == 3, "the refused rollback wrote a version"


def test_the_command_reports_damage_and_recovers_the_last_intact_version(store_url: str) -> None:
    """``statekit verify`` exits 3 naming the snapshot, ``show`` refuses it, ``recover`` restores v2."""
    with StateManager(store_url) as writer:
        sid = [writer.save(ENTITY, version_state(v)) for v in (1, 2, 3)][2].snapshot_id
        damage("frame_chunk_byte", writer, sid)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "statekit", "--url", store_url, *args],
                              capture_output=True, text=True, timeout=120)

    done = cli("verify")
    assert done.returncode == 3 and sid in done.stdout, done.stdout + done.stderr
    done = cli("show", ENTITY, "3")
    assert done.returncode == 3 and sid in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = cli("--json", "recover", ENTITY, "--reason", "v3 damaged")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 4
    with StateManager(store_url, cache_size=0) as sm:
        states.assert_same(sm.load(ENTITY), version_state(2), "recovered head")
        kinds = sm.transitions(ENTITY)["transition_type"].tolist()
        assert kinds[-1] == "recover"
    record("corruption", merge=True, **{f"{'sqlite' if store_url.startswith('sqlite') else 'postgres'}:cli":
                                        "statekit verify exit 3 naming it; show exit 3; recover made v4 = v2"})


def test_damage_that_breaks_the_json_syntax_is_caught_too_on_sqlite(sqlite_url: str) -> None:
    check_detected_and_recovered(sqlite_url, "invalid_json_byte")
    record("corruption", merge=True, **{"sqlite:invalid_json_byte": DETECTED})
