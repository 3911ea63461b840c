"""Workload 8, PostgreSQL: 8 processes saving at once, each to its own entity and all to one shared entity.

Every process opens its own ``StateManager`` on a fresh schema of the local
server, waits at a barrier, then alternates: a save to its own entity, a save
to the shared one (~1 KB dicts that name the process and step). Afterwards a
fresh store object checks that nothing was lost: each entity's versions run
1..n without gaps or duplicates, every version a process was handed exists and
holds what that process saved, and no save raised.

For scale, the same processes first run the floor: a plain psycopg
``INSERT`` + ``COMMIT`` of the same JSON into a table of the same schema
(no versioning, no integrity, no audit).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
import traceback
import uuid
from typing import Any

import sqlalchemy as sa

from statekit import StateManager

from .config import Config
from .report import WorkloadResult
from .small_state import small_state
from .timing import Samples

SK = "statekit"
RAW = "psycopg INSERT+COMMIT (floor)"
SHARED = "shared"


def _own(proc: int) -> str:
    return f"proc-{proc}"


def _state(proc: int, step: int) -> dict[str, Any]:
    return {**small_state(proc * 100_000 + step), "proc": proc, "i": step}


def _worker(url: str, proc: int, saves: int, barrier: Any, queue: Any) -> None:
    """One process, both phases: the floor, then statekit; each ``saves`` x (own entity, shared entity)."""
    for kind in (RAW, SK):
        queue.put(_one_phase(kind, url, proc, saves, barrier))


def _one_phase(kind: str, url: str, proc: int, saves: int, barrier: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "proc": proc, "own": [], "shared": [], "errors": [], "versions": []}
    try:
        if kind == SK:
            sm = StateManager(url)

            def save(entity: str, state: dict[str, Any]) -> int:
                return sm.save(entity, state).version
            close = sm.close
        else:
            import psycopg

            conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

            def save(entity: str, state: dict[str, Any]) -> int:
                with conn.transaction():
                    conn.execute("INSERT INTO raw_states (entity, data) VALUES (%s, %s)",
                                 (entity, json.dumps(state, separators=(",", ":"))))
                return 0
            close = conn.close
        save(f"warmup-{proc}", {"warm": True})
        barrier.wait(timeout=300)
        out["start"] = time.monotonic()
        for i in range(saves):
            for entity, bucket in ((_own(proc), "own"), (SHARED, "shared")):
                t0 = time.perf_counter()
                try:
                    version = save(entity, _state(proc, i))
                    out[bucket].append(time.perf_counter() - t0)
                    if bucket == "shared":
                        out["versions"].append((version, i))
                except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                    out["errors"].append(f"{type(exc).__name__}: {exc}")
        out["end"] = time.monotonic()
        close()
    except Exception:  # noqa: BLE001
        out["errors"].append(traceback.format_exc())
    return out


def _run_processes(url: str, procs: int, saves: int) -> dict[str, list[dict[str, Any]]]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(url, p, saves, barrier, queue)) for p in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=1800) for _ in range(2 * procs)]
    for w in workers:
        w.join(timeout=60)
    return {kind: sorted((r for r in results if r["kind"] == kind), key=lambda r: r["proc"]) for kind in (RAW, SK)}


def _check(url: str, procs: int, saves: int, results: list[dict[str, Any]]) -> list[str]:
    """What was lost or duplicated (empty: nothing)."""
    problems: list[str] = []
    sm = StateManager(url, cache_size=0)
    try:
        for p in range(procs):
            versions = list(sm.history(_own(p))["version"])
            if versions != list(range(1, saves + 1)):
                problems.append(f"{_own(p)} has versions {versions[:5]}... ({len(versions)}), expected 1..{saves}")
        versions = list(sm.history(SHARED)["version"])
        expected = procs * saves
        if versions != list(range(1, expected + 1)):
            problems.append(f"shared entity has {len(versions)} versions, expected 1..{expected} without gaps")
        handed = [(v, r["proc"], i) for r in results for v, i in r["versions"]]
        if len({v for v, _, _ in handed}) != len(handed):
            problems.append("two saves to the shared entity were handed the same version")
        for v, p, i in handed:
            state = sm.load(SHARED, v)
            if (state.get("proc"), state.get("i")) != (p, i):
                problems.append(f"shared v{v} holds proc {state.get('proc')} step {state.get('i')}, "
                                f"not proc {p} step {i}")
                break
    finally:
        sm.close()
    return problems


def run(cfg: Config) -> WorkloadResult:
    procs, saves = cfg.pg_procs, cfg.pg_saves
    res = WorkloadResult("8", f"PostgreSQL: {procs} processes saving at once, to their own entity and to one shared",
                         params={"processes": procs, "saves_per_process": 2 * saves,
                                 "server": cfg.pg_url.split("@")[-1]})
    admin = sa.create_engine(cfg.pg_url)
    schema = f"skbench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            conn.exec_driver_sql(f'CREATE TABLE "{schema}".raw_states (id BIGSERIAL PRIMARY KEY, '
                                 "entity TEXT NOT NULL, data JSONB NOT NULL)")
        sep = "&" if "?" in cfg.pg_url else "?"
        url = f"{cfg.pg_url}{sep}options=-csearch_path%3D{schema}"
        StateManager(url).close()  # create the schema's tables before the processes race for it
        phases = _run_processes(url, procs, saves)
        problems = _check(url, procs, saves, phases[SK])
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    for name, results in phases.items():
        own = Samples([x for r in results for x in r["own"]])
        shared = Samples([x for r in results for x in r["shared"]])
        both = Samples(own.values + shared.values)
        starts = [r["start"] for r in results if "start" in r]
        ends = [r["end"] for r in results if "end" in r]
        wall = (max(ends) - min(starts)) if starts and ends else None
        errors = [e for r in results for e in r["errors"]]
        res.add(name, "save, own entity", own)
        res.add(name, "save, shared entity", shared)
        res.add(name, "save, all", both)
        res.add(name, "throughput", value=(len(both) / wall) if wall else None, unit="/s",
                note=f"{len(both)} saves in {wall:.2f} s" if wall else "")
        res.add(name, "errors", value=float(len(errors)), unit="")
        if errors:
            res.notes.append(f"{name} errors: " + " | ".join(e.strip().splitlines()[-1][:200] for e in errors[:3]))
    res.add(SK, "lost or duplicated versions", value=float(len(problems)), unit="")
    res.notes += problems[:5]
    res.ratio("throughput vs psycopg floor", (SK, "throughput"), (RAW, "throughput"))
    res.ratio("save p99 vs psycopg floor", (SK, "save, all"), (RAW, "save, all"), "p99")
    res.target("no errors", res.figure(SK, "errors"), 0, "==", "")
    res.target("no lost or duplicated versions", float(len(problems)), 0, "==", "")
    return res
