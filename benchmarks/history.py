"""Workload 2, history: list 2,000 versions of one entity as a DataFrame, against LangGraph's list.

Both stores hold the same 2,000 ~1 KB states (built with fsync off: building
is not what is measured). statekit's ``history()`` returns one DataFrame row
per version and never reads payloads; LangGraph's ``SqliteSaver.list`` of the
thread yields one ``CheckpointTuple`` per checkpoint, decoded. statekit's
LangGraph checkpointer's ``list`` is shown too when it imports.
"""

from __future__ import annotations

from statekit import StateManager

from .config import Config
from .report import WorkloadResult
from .small_state import ENTITY, LangGraphThread, open_sqlite_saver, open_statekit_saver, small_state
from .timing import interleave, scratch

SK = "statekit"
LG = "langgraph SqliteSaver"
SKLG = "statekit StatekitSaver"


def run(cfg: Config) -> WorkloadResult:
    n = cfg.history_versions
    res = WorkloadResult("2", f"History: list {n:,} versions (statekit as a DataFrame)",
                         params={"versions": n, "repetitions": cfg.history_reps})
    with scratch("history", cfg.tmp_root) as tmp:
        url = f"sqlite:///{tmp / 'statekit.db'}"
        builder = StateManager(url, durability="normal")
        saver = open_sqlite_saver(tmp / "langgraph.db")
        saver.conn.execute("PRAGMA synchronous=OFF")
        lg = LangGraphThread(saver, "bench")
        sk_store = StateManager(f"sqlite:///{tmp / 'statekit-langgraph.db'}", durability="normal")
        sk_saver, why = open_statekit_saver(sk_store)
        sklg = LangGraphThread(sk_saver, "bench") if sk_saver is not None else None
        for i in range(n):
            st = small_state(i)
            builder.save(ENTITY, st)
            lg.put(i, st)
            if sklg is not None:
                sklg.put(i, st)
        builder.close()
        sm = StateManager(url)
        config = {"configurable": {"thread_id": "bench"}}
        try:
            assert len(sm.history(ENTITY)) == n and len(list(saver.list(config))) == n
            ops = {
                SK: lambda i: sm.history(ENTITY),
                LG: lambda i: list(saver.list(config)),
            }
            if sk_saver is not None:
                ops[SKLG] = lambda i: list(sk_saver.list(config))
            got = interleave(ops, cfg.history_reps, warmup=1)
            res.add(SK, "history() -> DataFrame", got[SK], note="metadata only")
            res.add(LG, "list(thread)", got[LG], note="decodes every checkpoint")
            if sk_saver is not None:
                res.add(SKLG, "list(thread)", got[SKLG])
            else:
                res.unavailable(SKLG, "list(thread)", why)
        finally:
            sm.close()
            saver.conn.close()
            sk_store.close()
    ratio = res.ratio("history() vs LangGraph list", (SK, "history() -> DataFrame"), (LG, "list(thread)"))
    res.ratio("StatekitSaver.list vs SqliteSaver.list", (SKLG, "list(thread)"), (LG, "list(thread)"))
    res.target("history of the versions <= 0.25x LangGraph's list", ratio, 0.25)
    return res
