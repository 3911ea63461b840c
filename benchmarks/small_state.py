"""Workload 1, small state: saves of a ~1 KB dict to one entity, then loads.

Systems, each on its own SQLite file in one scratch folder, saving the same
dicts in turn (round-robin, rotating who goes first):

- the floor: raw ``sqlite3``, JSON-encode then ``BEGIN; INSERT; COMMIT`` in WAL
  mode with ``synchronous=FULL``, statekit's own settings;
- statekit: ``StateManager.save`` (default durability: WAL + synchronous=FULL);
- LangGraph's ``SqliteSaver.put`` (WAL; SQLite's default synchronous, FULL);
- the OpenAI Agents SDK's ``SQLiteSession.add_items`` (one ~1 KB message per call);
- statekit's LangGraph checkpointer ``StatekitSaver.put`` (issue 10), when it imports.

Loads read random earlier versions: raw ``SELECT`` + ``json.loads``; statekit
through a second store object with its cache off (from the database) and
through the saving one (cached); LangGraph's ``get_tuple`` by checkpoint id;
the Agents session's ``get_items(limit=1)`` (a session has no versions: the
latest item is the nearest operation).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from statekit import StateManager

from .config import Config
from .report import WorkloadResult
from .timing import interleave, scratch

ENTITY = "small"
RAW = "sqlite3 (raw floor)"
SK = "statekit"
LG = "langgraph SqliteSaver"
OA = "openai-agents SQLiteSession"
SKLG = "statekit StatekitSaver"


def small_state(i: int) -> dict[str, Any]:
    """A ~1 KB agent-like state that differs from one save to the next."""
    return {
        "step": i,
        "user": "ana",
        "status": "running" if i % 7 else "waiting",
        "messages": [
            {"role": "user", "content": f"Analyze team {i % 13} efficiency for week {i % 17}"},
            {"role": "assistant", "content": f"Success rate {50 + i % 40}% with {(i % 9) / 3:.2f} EPA/play"},
        ],
        "scores": [round((i * 7 + k * 13) % 1000 / 10.0, 1) for k in range(40)],
        "params": {"lr": 0.01 * (1 + i % 5), "epochs": 10 + i % 3, "model": "gbm", "seed": 42},
        "notes": "x" * 540,
    }


class RawSqlite:
    """The floor: one JSON row per version, written and read with the stdlib driver."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS states (entity TEXT, version INTEGER, data TEXT, "
                          "PRIMARY KEY (entity, version))")

    def save(self, entity: str, version: int, state: dict[str, Any]) -> None:
        data = json.dumps(state, separators=(",", ":"))
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO states (entity, version, data) VALUES (?, ?, ?)", (entity, version, data))
        c.execute("COMMIT")

    def load(self, entity: str, version: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT data FROM states WHERE entity = ? AND version = ?", (entity, version)).fetchone()
        return json.loads(row[0])

    def close(self) -> None:
        self.conn.close()


def langgraph_checkpoint(i: int, state: dict[str, Any]) -> dict[str, Any]:
    """A LangGraph checkpoint whose channels are the state's keys."""
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=i))
    cp["ts"] = datetime.now(UTC).isoformat()
    cp["channel_values"] = dict(state)
    cp["channel_versions"] = {k: i + 1 for k in state}
    cp["updated_channels"] = list(state)
    return cp


class LangGraphThread:
    """Puts successive checkpoints of one thread on a saver, as a graph run does."""

    def __init__(self, saver: Any, thread_id: str):
        self.saver = saver
        self.config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self.ids: list[str] = []

    def put(self, i: int, state: dict[str, Any]) -> None:
        cp = langgraph_checkpoint(i, state)
        self.config = self.saver.put(self.config, cp, {"source": "loop", "step": i}, dict(cp["channel_versions"]))
        self.ids.append(cp["id"])

    def get(self, index: int) -> Any:
        cfg = {"configurable": {"thread_id": self.config["configurable"]["thread_id"], "checkpoint_ns": "",
                                "checkpoint_id": self.ids[index]}}
        tup = self.saver.get_tuple(cfg)
        assert tup is not None
        return tup.checkpoint["channel_values"]


def open_sqlite_saver(path: Path) -> Any:
    from langgraph.checkpoint.sqlite import SqliteSaver

    saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False))
    saver.setup()
    return saver


def open_statekit_saver(store: str | StateManager) -> tuple[Any | None, str]:
    """statekit's LangGraph checkpointer on a URL or a store, or None and why not."""
    try:
        from statekit.integrations.langgraph import StatekitSaver
    except Exception as exc:  # noqa: BLE001 - any failure to import means "not available"
        return None, f"{type(exc).__name__}: {exc}"
    return StatekitSaver(store), ""


class AgentsSession:
    """The OpenAI Agents SDK's SQLiteSession, driven from one event loop (its API is async)."""

    def __init__(self, path: Path):
        from agents import SQLiteSession

        self.loop = asyncio.new_event_loop()
        self.session = SQLiteSession("bench", str(path))

    def add(self, state: dict[str, Any]) -> None:
        item = {"role": "user", "content": json.dumps(state, separators=(",", ":"))}
        self.loop.run_until_complete(self.session.add_items([item]))

    def latest(self) -> Any:
        return self.loop.run_until_complete(self.session.get_items(limit=1))

    def close(self) -> None:
        self.session.close()
        self.loop.close()


def run(cfg: Config) -> WorkloadResult:
    n, n_loads = cfg.small_saves, cfg.small_loads
    res = WorkloadResult("1", f"Small state: {n:,} saves of a ~1 KB dict to one entity, then loads",
                         params={"saves": n, "loads": n_loads,
                                 "state_bytes": len(json.dumps(small_state(0), separators=(",", ":")))})
    states = [small_state(i) for i in range(n)]
    with scratch("small", cfg.tmp_root) as tmp:
        url = f"sqlite:///{tmp / 'statekit.db'}"
        raw = RawSqlite(tmp / "raw.db")
        sm = StateManager(url)
        lg = LangGraphThread(open_sqlite_saver(tmp / "langgraph.db"), "bench")
        oa = AgentsSession(tmp / "agents.db")
        sk_saver, why = open_statekit_saver(f"sqlite:///{tmp / 'statekit-langgraph.db'}")
        sklg = LangGraphThread(sk_saver, "bench") if sk_saver is not None else None
        try:
            ops = {
                RAW: lambda i: raw.save(ENTITY, i + 1, states[i]),
                SK: lambda i: sm.save(ENTITY, states[i]),
                LG: lambda i: lg.put(i, states[i]),
                OA: lambda i: oa.add(states[i]),
            }
            if sklg is not None:
                ops[SKLG] = lambda i: sklg.put(i, states[i])
            saves = interleave(ops, n)
            for name, op in ((RAW, "save (insert+commit)"), (SK, "save"), (LG, "put"), (OA, "add_items")):
                res.add(name, op, saves[name])
            if sklg is not None:
                res.add(SKLG, "put", saves[SKLG])
            else:
                res.unavailable(SKLG, "put", why)

            _loads(res, cfg, raw, url, sm, lg, oa, sklg)
        finally:
            raw.close()
            sm.close()
            oa.close()
            if sk_saver is not None:
                sk_saver.close()

    res.ratio("save vs raw sqlite3 floor", (SK, "save"), (RAW, "save (insert+commit)"))
    res.ratio("save vs raw sqlite3 floor, p99", (SK, "save"), (RAW, "save (insert+commit)"), "p99")
    res.ratio("save vs LangGraph put", (SK, "save"), (LG, "put"))
    res.ratio("save vs Agents add_items", (SK, "save"), (OA, "add_items"))
    res.ratio("StatekitSaver.put vs SqliteSaver.put", (SKLG, "put"), (LG, "put"))
    res.ratio("load (database) vs raw select+decode", (SK, "load (database)"), (RAW, "load (select+decode)"))
    res.ratio("load (database) vs LangGraph get_tuple", (SK, "load (database)"), (LG, "get_tuple"))
    res.ratio("StatekitSaver.get_tuple vs SqliteSaver", (SKLG, "get_tuple"), (LG, "get_tuple"))
    res.target("save p50 <= 1.5x the raw sqlite3 floor", _r(res, "save vs raw sqlite3 floor"), 1.5)
    res.target("save p50 no slower than LangGraph put", _r(res, "save vs LangGraph put"), 1.0)
    res.target("load from the database p50 <= 3x raw select+decode",
               _r(res, "load (database) vs raw select+decode"), 3.0)
    res.target("cached load p50 in microseconds (< 100 µs)", res.figure(SK, "load (cached)"), 100e-6, "<", "s")
    return res


def _r(res: WorkloadResult, label: str) -> float | None:
    return next((r.value for r in res.ratios if r.label == label), None)


def _loads(res: WorkloadResult, cfg: Config, raw: RawSqlite, url: str, sm: StateManager,
           lg: LangGraphThread, oa: AgentsSession, sklg: LangGraphThread | None) -> None:
    n = len(lg.ids)
    rng = random.Random(42)
    picks = [rng.randrange(n) for _ in range(cfg.small_loads)]
    # versions the saving store still holds in its cache (inline states are cached on save)
    cached = [n - 1 - rng.randrange(min(n, 200)) for _ in range(cfg.small_loads)]
    uncached = StateManager(url, cache_size=0)
    try:
        expected = small_state(picks[0])
        assert uncached.load(ENTITY, picks[0] + 1) == expected and raw.load(ENTITY, picks[0] + 1) == expected
        hits_before = _cache_hits(sm)
        ops = {
            RAW: lambda i: raw.load(ENTITY, picks[i] + 1),
            SK: lambda i: uncached.load(ENTITY, picks[i] + 1),
            SK + " (cached)": lambda i: sm.load(ENTITY, cached[i] + 1),
            LG: lambda i: lg.get(picks[i]),
            OA: lambda i: oa.latest(),
        }
        if sklg is not None:
            ops[SKLG] = lambda i: sklg.get(picks[i])
        loads = interleave(ops, cfg.small_loads, warmup=3)
        res.add(RAW, "load (select+decode)", loads[RAW])
        res.add(SK, "load (database)", loads[SK], note="cache off")
        res.add(SK, "load (cached)", loads[SK + " (cached)"], note=f"{_cache_hits(sm) - hits_before} cache hits in {cfg.small_loads + 3} calls")
        res.add(LG, "get_tuple", loads[LG], note="by checkpoint id")
        res.add(OA, "get_items(limit=1)", loads[OA], note="latest item: a session has no versions")
        if sklg is not None:
            res.add(SKLG, "get_tuple", loads[SKLG], note="by checkpoint id")
        else:
            res.unavailable(SKLG, "get_tuple", "see put")
    finally:
        uncached.close()


def _cache_hits(sm: StateManager) -> int:
    return int(sm.metrics()["cache"]["hits"])  # type: ignore[index]
