"""PostgreSQL: a server connection terminated during a save never leaves a partial snapshot.

A thread saves in a loop (small states, and every third save a 5 MB
DataFrame in 10 chunks) on a store whose connections carry their own
``application_name``. From an admin connection the test repeatedly runs
``pg_terminate_backend`` on every one of them, at random moments, noting
whether each was inside a transaction. Each save must either return (the
store retried on a new connection, transparently) or raise a StatekitError
(a clean failure); never another exception. Afterwards:

- ``verify()`` finds nothing wrong, the versions are contiguous;
- every save that returned is there, at the version it returned, and loads
  to exactly what was saved; no save that raised left anything behind;
- the next save works.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from statekit import StatekitError, StateManager

from . import states
from .figures import record

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

PG_ADMIN_URL = os.environ.get("STATEKIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TERMINATIONS = int(os.environ.get("STATEKIT_RELIABILITY_TERMINATIONS", "40"))


def intended(seed: int) -> dict[str, Any]:
    return states.medium_state(seed) if seed % 3 == 0 else states.small_state(seed)


@dataclass
class Attempt:
    seed: int
    started: float
    ended: float = 0.0
    version: int | None = None
    snapshot_id: str | None = None
    error: BaseException | None = None


class Saver(threading.Thread):
    """Saves intended(1), intended(2), ... until stopped; keeps every attempt's outcome."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.attempts: list[Attempt] = []
        self.stop = threading.Event()
        self.crashed: BaseException | None = None

    def run(self) -> None:
        try:
            sm = StateManager(self.url)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.crashed = exc
            return
        seed = 0
        try:
            while not self.stop.is_set():
                seed += 1
                a = Attempt(seed, time.monotonic())
                self.attempts.append(a)
                try:
                    snap = sm.save("terminated", intended(seed), message=f"seed {seed}")
                    a.version, a.snapshot_id = snap.version, snap.snapshot_id
                except BaseException as exc:  # noqa: BLE001 - classified by the test
                    a.error = exc
                a.ended = time.monotonic()
        finally:
            with contextlib.suppress(Exception):  # its connections were terminated
                sm.close()


def test_pg_terminate_backend_during_saves_fails_cleanly_or_retries_never_partial(pg_url: str) -> None:
    app = f"sk_term_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={app}"
    rng_seed = int(os.environ.get("STATEKIT_RELIABILITY_SEED", time.time_ns() % 2**32))
    rng = random.Random(rng_seed)
    admin = sa.create_engine(PG_ADMIN_URL)
    saver = Saver(url)
    kills: list[tuple[float, str]] = []  # when, and the backend's state at that moment
    saver.start()
    try:
        deadline = time.monotonic() + 30
        while not saver.attempts and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(TERMINATIONS):
            time.sleep(rng.uniform(0.02, 0.35))
            with admin.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT pid, state, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %(app)s AND pid <> pg_backend_pid()", {"app": app}).all()
                conn.commit()
            now = time.monotonic()
            kills += [(now, state or "") for _pid, state, ok in rows if ok]
    finally:
        saver.stop.set()
        saver.join(timeout=120)
        admin.dispose()
    assert saver.crashed is None, f"the saver could not open the store: {saver.crashed!r}"
    assert not saver.is_alive(), "a save hung after its connection was terminated"

    unclean = [a for a in saver.attempts if a.error is not None and not isinstance(a.error, StatekitError)]
    assert not unclean, f"errors that are not StatekitError reached the caller: {[repr(a.error) for a in unclean]}"
    ok = [a for a in saver.attempts if a.error is None]
    failed = [a for a in saver.attempts if a.error is not None]
    in_tx = [t for t, state in kills if state in ("active", "idle in transaction", "idle in transaction (aborted)")]
    retried = sum(1 for t in in_tx if any(a.started <= t <= a.ended and a.error is None for a in saver.attempts))

    sm = StateManager(pg_url)
    try:
        problems = sm.verify()
        assert problems.empty, problems.to_string()
        h = sm.history("terminated")
        versions = h["version"].tolist()
        assert versions == list(range(1, len(versions) + 1)), "a gap or a duplicate in the versions"
        assert h["parent_version"].tolist()[1:] == versions[:-1]
        seen: dict[int, int] = {}
        for v in versions:
            state = sm.load("terminated", v)
            states.assert_same(state, intended(state["seed"]), f"v{v}")
            seen[state["seed"]] = v
        for a in ok:
            assert seen.get(a.seed) == a.version, f"seed {a.seed} returned v{a.version} but is not there"
        ids = dict(zip(h["version"], h["snapshot_id"], strict=True))
        assert all(ids[a.version] == a.snapshot_id for a in ok)  # type: ignore[index]
        phantoms = [a.seed for a in failed if a.seed in seen]
        assert not phantoms, f"saves that raised an error but were committed: {phantoms}"
        assert len(seen) == len(ok)
        nxt = sm.save("terminated", states.small_state(10**6))
        assert nxt.version == len(versions) + 1
    finally:
        sm.close()
    record("pg_terminate[postgres]", terminations=len(kills), terminated_inside_a_statement_or_transaction=len(in_tx),
           saves=len(saver.attempts), saves_returned=len(ok), saves_failed_cleanly=len(failed),
           terminated_saves_retried_transparently=retried, versions_checked=len(versions),
           partial_snapshots=0, random_seed=rng_seed,
           failure_messages=sorted({str(a.error)[:120] for a in failed}))
    assert len(kills) >= TERMINATIONS // 2, "too few terminations hit the saver to show anything"
    assert in_tx, "no termination landed inside a save"
