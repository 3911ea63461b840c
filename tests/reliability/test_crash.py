"""A committed version is never lost and a half-written one is never visible, whatever moment a saver dies at.

A child process saves in a loop (small states, and every 6th save a 51.2 MB
DataFrame) and is killed with SIGKILL at a random moment; on every other run
the moment is drawn inside a big save (after it started, within its observed
duration). After each kill, with a fresh StateManager:

- ``verify()`` finds nothing wrong;
- the versions run 1..n with each one's parent the one before;
- every version that appeared since the last check loads and equals, exactly,
  the state its writer built from the seed it carries;
- every save the child saw return is there with its version and snapshot id;
  the save in flight at the kill is either whole or absent;
- the next save works and gets version n + 1.

``STATEKIT_RELIABILITY_KILLS`` sets the kills per backend (default 25).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from statekit import StateManager

from . import states
from .figures import record

pytestmark = pytest.mark.reliability

KILLS = int(os.environ.get("STATEKIT_RELIABILITY_KILLS", "25"))
ENTITY = "crash"
PROBE_SEED = 900_000_000
HERE = Path(__file__).parent


class Zygote:
    """The prepared saver process (crash_child.py) that forks one child per run."""

    def __init__(self, url: str, logdir: Path):
        self.logdir = logdir
        self.stderr = open(logdir / "zygote.err", "w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "crash_child.py"), url, ENTITY, str(logdir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1,
        )
        assert self._line() == "ready", self._errors()

    def _line(self) -> str:
        line = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"the saver process ended: {self._errors()}")
        return line

    def _errors(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]

    def start(self, run: int, seed: int) -> int:
        self.proc.stdin.write(f"run {run} {seed}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        word, pid = self._line().split()
        assert word == "pid"
        return int(pid)

    def wait_exit(self) -> int:
        word, status = self._line().split()
        assert word == "exit"
        return int(status)

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


@dataclass
class RunLog:
    started: list[tuple[int, str, float]] = field(default_factory=list)  # seed, kind, t
    done: dict[int, tuple[int, str, float]] = field(default_factory=dict)  # seed -> version, snapshot_id, t
    error: str | None = None

    @classmethod
    def read(cls, path: Path) -> RunLog:
        log = cls()
        if not path.exists():
            return log
        for line in path.read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "S" and len(parts) == 4:
                log.started.append((int(parts[1]), parts[2], float(parts[3])))
            elif parts[0] == "D" and len(parts) == 5:
                log.done[int(parts[1])] = (int(parts[2]), parts[3], float(parts[4]))
            elif parts[0] == "E":
                log.error = line
        return log

    def in_flight(self) -> tuple[int, str] | None:
        """The save the child had started but not seen return when it died."""
        if self.started and self.started[-1][0] not in self.done:
            return self.started[-1][0], self.started[-1][1]
        return None


@dataclass
class Tally:
    kills: int = 0
    survived: int = 0
    in_big_save: int = 0
    in_flight_committed: int = 0
    in_flight_absent: int = 0
    versions_checked: int = 0
    big_versions_checked: int = 0
    verify_runs: int = 0
    probe_saves: int = 0
    check_seconds: float = 0.0
    big_durations: list[float] = field(default_factory=list)
    seed_by_version: dict[int, int] = field(default_factory=dict)


def expected_state(seed: int, base: Any) -> dict[str, Any] | None:
    """What the writer of ``seed`` built (None for a big state when ``base`` is None: "it is a big one")."""
    if seed >= PROBE_SEED:
        return states.small_state(seed, kind="probe")
    if (seed % 1_000_000) % 6 == 0:  # crash_child: every 6th save of a run, the first included, is big
        return states.big_state(seed, base) if base is not None else None
    return states.small_state(seed)


def wait_for_line(path: Path, prefix: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(line.startswith(prefix) for line in path.read_text().splitlines()):
            return
        time.sleep(0.002)
    raise AssertionError(f"the child never logged {prefix!r}: {path.read_text() if path.exists() else '(no log)'}")


def check_store(url: str, base: Any, tally: Tally, log: RunLog, run: int) -> None:
    """Everything that must hold after a kill; then one more save."""
    sm = StateManager(url)
    try:
        problems = sm.verify()
        tally.verify_runs += 1
        assert problems.empty, f"after kill {run}: verify() found\n{problems.to_string()}"
        head = sm.head_version(ENTITY)
        h = sm.history(ENTITY) if head is not None else None
        versions = h["version"].tolist() if h is not None else []
        assert versions == list(range(1, len(versions) + 1)), f"versions are not contiguous: {versions}"
        assert head == (versions[-1] if versions else None)
        if h is not None:
            assert h["snapshot_id"].is_unique
            assert h["parent_version"].tolist()[1:] == versions[:-1], "a version's parent is not the one before"
        ids = dict(zip(versions, h["snapshot_id"], strict=True)) if h is not None else {}
        for v in versions:
            if v in tally.seed_by_version:
                continue
            state = sm.load(ENTITY, v)
            seed = state["seed"]
            states.assert_same(state, expected_state(seed, base), f"v{v}")
            tally.seed_by_version[v] = seed
            tally.versions_checked += 1
            tally.big_versions_checked += state["kind"] == "big"
        seeds = list(tally.seed_by_version.values())
        assert len(set(seeds)) == len(seeds), "one intended state appears twice"
        visible = {s: v for v, s in tally.seed_by_version.items()}
        for seed, (version, sid, _t) in log.done.items():
            assert visible.get(seed) == version, f"seed {seed}: save returned v{version} but it is not there"
            assert ids[version] == sid
        started = {s for s, _k, _t in log.started}
        mine = {s for s in visible if run * 1_000_000 <= s < (run + 1) * 1_000_000}
        assert mine <= started, f"versions nobody tried to write: {sorted(mine - started)}"
        flight = log.in_flight()
        if flight is not None:
            tally.in_big_save += flight[1] == "big"
            if flight[0] in visible:
                tally.in_flight_committed += 1
            else:
                tally.in_flight_absent += 1
        probe = states.small_state(PROBE_SEED + run, kind="probe")
        snap = sm.save(ENTITY, probe, message=f"probe after kill {run}")
        n = len(versions)
        assert snap.version == n + 1 and snap.parent_version == (n or None)
        states.assert_same(sm.load(ENTITY, snap.version), probe, f"probe v{snap.version}")
        tally.seed_by_version[snap.version] = PROBE_SEED + run
        tally.probe_saves += 1
    finally:
        sm.close()


def test_sigkill_at_random_moments_loses_nothing_and_tears_nothing(store_url: str, tmp_path: Path) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    rng_seed = int(os.environ.get("STATEKIT_RELIABILITY_SEED", time.time_ns() % 2**32))
    rng = random.Random(rng_seed)
    base = states.big_base()
    StateManager(store_url).close()  # the schema exists before the first child starts
    logdir = tmp_path / "runs"
    logdir.mkdir()
    tally = Tally()
    started = time.monotonic()
    zygote = Zygote(store_url, logdir)
    try:
        for run in range(1, KILLS + 1):
            est_big = sorted(tally.big_durations)[len(tally.big_durations) // 2] if tally.big_durations else 0.0
            pid = zygote.start(run, run * 1_000_000)
            path = logdir / f"{run}.log"
            if not est_big:  # calibration: let the first big save finish, then kill among the small ones
                wait_for_line(path, f"D {run * 1_000_000} ")
                time.sleep(rng.uniform(0.0, 0.5))
            elif run % 2:  # inside the big save that opens every run
                wait_for_line(path, f"S {run * 1_000_000} big")
                time.sleep(rng.uniform(0.0, est_big))
            else:  # anywhere: opening the store, the big save, the small saves after it
                time.sleep(rng.uniform(0.0, est_big + 1.5))
            os.kill(pid, signal.SIGKILL)
            status = zygote.wait_exit()
            log = RunLog.read(path)
            assert log.error is None, f"the saver failed on its own: {log.error}"
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"exit status {status}"
            tally.kills += 1
            for seed, kind, t in log.started:
                if kind == "big" and seed in log.done:
                    tally.big_durations.append(log.done[seed][2] - t)
            t = time.monotonic()
            check_store(store_url, base, tally, log, run)
            tally.check_seconds += time.monotonic() - t
            tally.survived += 1
    finally:
        zygote.close()

    # the final state, after all the kills, from a fresh manager: verify() re-hashes every byte; every small
    # version and the newest big one are loaded and compared again (each big one was compared once already)
    sm = StateManager(store_url)
    try:
        assert sm.verify().empty
        h = sm.history(ENTITY)
        assert h["version"].tolist() == list(range(1, len(h) + 1)) == sorted(tally.seed_by_version)
        big = sorted(v for v, s in tally.seed_by_version.items() if expected_state(s, None) is None)
        rechecked = 0
        for v, seed in sorted(tally.seed_by_version.items()):
            if v in big[:-1]:
                continue
            states.assert_same(sm.load(ENTITY, v), expected_state(seed, base), f"final v{v}")
            rechecked += 1
    finally:
        sm.close()
    if backend == "sqlite":  # hundreds of MB: do not leave them in pytest's kept tmp dirs
        for suffix in ("", "-wal", "-shm"):
            Path(store_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)

    record(
        f"crash[{backend}]",
        kills=tally.kills, kills_survived=tally.survived, kills_inside_big_save=tally.in_big_save,
        in_flight_save_committed=tally.in_flight_committed, in_flight_save_absent=tally.in_flight_absent,
        versions=len(h), big_versions=tally.big_versions_checked,
        versions_checked=tally.versions_checked + rechecked, verify_runs=tally.verify_runs,
        next_saves_checked=tally.probe_saves, random_seed=rng_seed,
        seconds=round(time.monotonic() - started, 1), seconds_checking=round(tally.check_seconds, 1),
        median_big_save_seconds=round(sorted(tally.big_durations)[len(tally.big_durations) // 2], 2),
    )
    assert tally.survived == KILLS
