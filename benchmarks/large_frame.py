"""Workloads 3, 4 and 5: a 1,000,000 x 5 DataFrame saved and loaded, re-saved unchanged, then changed a little.

3. Save and load, against: pickle to a file with fsync; Arrow IPC (the floor:
   the format statekit stores) with fsync; ``dill.dump_module`` of a module
   holding the frame, with fsync; IPython's ``%store`` (storemagic), plus an
   fsync of the file it wrote so that every system ends on disk. Each
   repetition writes fresh files and a fresh statekit store, in turn.
4. Save the same frame again to the same entity: new payload bytes (counted in
   the ``state_payloads`` table) and the time against the first save.
5. Append 1% new rows and change one column, then save: new payload bytes,
   against the whole payload and against the changed column's own size (what
   a store holding only that column writes for it).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from statekit import StateManager

from .config import Config
from .report import WorkloadResult
from .timing import Samples, clock, fsync_path, scratch

SK = "statekit"
ARROW = "Arrow IPC + fsync (floor)"
PICKLE = "pickle + fsync"
DILL = "dill.dump_module + fsync"
STORE = "IPython %store + fsync"
ENTITY = "frame"


def make_frame(rows: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """``rows`` rows of ints, floats and strings (pandas' default string dtype)."""
    rng = np.random.default_rng(seed)
    cities = np.array(["Columbus", "Ann Arbor", "Austin", "Athens", "Tuscaloosa", "Eugene", "Boulder", "Madison"])
    return pd.DataFrame({
        "id": np.arange(start, start + rows, dtype=np.int64),
        "qty": rng.integers(0, 1_000, rows),
        "price": rng.random(rows) * 100.0,
        "city": pd.array(cities[rng.integers(0, len(cities), rows)], dtype="str"),
        "label": pd.array([f"item-{k:06d}" for k in rng.integers(0, 500_000, rows)], dtype="str"),
    }, index=pd.RangeIndex(start, start + rows))


def payload_bytes(sm: StateManager) -> tuple[int, int]:
    """(chunks, bytes) in the store's payload table: what saves have written so far."""
    with sm.db.read() as conn:
        row = conn.exec_driver_sql("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM state_payloads").fetchone()
    return int(row[0]), int(row[1])


# ---------------------------------------------------------------- comparators


def arrow_save(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df)
    with open(path, "wb") as f:
        with pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        f.flush()
        os.fsync(f.fileno())


def arrow_load(path: Path) -> pd.DataFrame:
    with pa.OSFile(str(path), "rb") as f:
        return pa.ipc.open_file(f).read_all().to_pandas()


def pickle_save(df: pd.DataFrame, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(df, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())


def pickle_load(path: Path) -> pd.DataFrame:
    with open(path, "rb") as f:
        return pickle.load(f)


class DillSession:
    """``dill.dump_module`` of a module whose only variable is the frame (a notebook session's stand-in)."""

    name = "statekit_bench_session"

    def __init__(self, df: pd.DataFrame):
        self.module = types.ModuleType(self.name)
        self.module.df = df
        sys.modules[self.name] = self.module

    def save(self, path: Path) -> None:
        import dill

        dill.dump_module(str(path), module=self.module)
        fsync_path(path)

    def load(self, path: Path) -> pd.DataFrame:
        import dill

        return dill.load_module(str(path)).df

    def close(self) -> None:
        sys.modules.pop(self.name, None)


class StoreMagic:
    """IPython's ``%store`` in a headless shell whose profile lives in a scratch folder."""

    def __init__(self, ipython_dir: Path):
        os.environ["IPYTHONDIR"] = str(ipython_dir)
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config as TraitletsConfig

        c = TraitletsConfig()
        c.HistoryManager.enabled = False  # no history database to write at exit
        self.ip = InteractiveShell.instance(config=c)
        self.ip.run_line_magic("load_ext", "storemagic")
        self.file = Path(self.ip.profile_dir.location) / "db" / "autorestore" / "df"

    def save(self, df: pd.DataFrame) -> None:
        self.ip.user_ns["df"] = df
        with contextlib.redirect_stdout(io.StringIO()):  # "Stored 'df' (DataFrame)"
            self.ip.run_line_magic("store", "df")
        fsync_path(self.file)

    def load(self) -> pd.DataFrame:
        self.ip.user_ns.pop("df", None)
        self.ip.db.cache.clear()  # pickleshare's in-memory cache would skip the read
        self.ip.run_line_magic("store", "-r df")
        return self.ip.user_ns["df"]

    def clear(self) -> None:
        self.ip.run_line_magic("store", "-z")

    def close(self) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        self.clear()
        InteractiveShell.clear_instance()
        os.environ.pop("IPYTHONDIR", None)


# ---------------------------------------------------------------- the run


def run(cfg: Config) -> list[WorkloadResult]:
    rows, reps = cfg.frame_rows, cfg.frame_reps
    w3 = WorkloadResult("3", f"A large DataFrame: {rows:,} rows x 5 columns (ints, floats, strings), save and load",
                        params={"rows": rows, "repetitions": reps})
    w4 = WorkloadResult("4", "Re-saving that DataFrame unchanged", params={"rows": rows, "repetitions": reps})
    extra = max(1, rows // 100)
    w5 = WorkloadResult("5", f"Appending 1% new rows ({extra:,}) and changing one column ('price')",
                        params={"rows": rows, "appended": extra, "repetitions": reps})
    df = make_frame(rows)
    w3.params["memory_bytes"] = int(df.memory_usage(deep=True).sum())
    changed = pd.concat([df, make_frame(extra, seed=1, start=rows)])
    changed["price"] = changed["price"] * 1.1

    t: dict[str, Samples] = {k: Samples() for k in
                             ("sk_save", "sk_load", "arrow_save", "arrow_load", "pickle_save", "pickle_load",
                              "dill_save", "dill_load", "store_save", "store_load", "resave", "change_save")}
    sizes: dict[str, Samples] = {k: Samples() for k in
                                 ("sk_first", "arrow", "pickle", "dill", "store", "resave_new", "resave_snap_new",
                                  "change_new", "change_full", "column")}
    with scratch("frame", cfg.tmp_root) as tmp:
        dill_session = DillSession(df)
        store = StoreMagic(tmp / "ipython")
        try:
            for rep in range(reps):
                folder = tmp / f"rep{rep}"
                folder.mkdir()
                order = [_statekit, _arrow, _pickle, _dill, _store]
                shift = rep % len(order)
                for step in order[shift:] + order[:shift]:
                    step(folder, df, changed, t, sizes, dill_session=dill_session, store=store)
                store.clear()
        finally:
            dill_session.close()
            store.close()

    _report3(w3, t, sizes)
    _report4(w4, t, sizes)
    _report5(w5, t, sizes)
    return [w3, w4, w5]


def _statekit(folder: Path, df: pd.DataFrame, changed: pd.DataFrame, t: dict[str, Samples],
              sizes: dict[str, Samples], **_: Any) -> None:
    url = f"sqlite:///{folder / 'statekit.db'}"
    sm = StateManager(url)
    reader = StateManager(url, cache_size=0)
    try:
        start = clock()
        sm.save(ENTITY, {"df": df})
        t["sk_save"].add(clock() - start)
        _, first_bytes = payload_bytes(sm)
        sizes["sk_first"].add(first_bytes)

        start = clock()
        back = reader.load(ENTITY)["df"]
        t["sk_load"].add(clock() - start)
        pd.testing.assert_frame_equal(back, df)
        del back

        start = clock()
        snap = sm.save(ENTITY, {"df": df})
        t["resave"].add(clock() - start)
        _, after = payload_bytes(sm)
        sizes["resave_new"].add(after - first_bytes)
        sizes["resave_snap_new"].add(snap.new_bytes)

        start = clock()
        snap = sm.save(ENTITY, {"df": changed})
        t["change_save"].add(clock() - start)
        _, after_change = payload_bytes(sm)
        sizes["change_new"].add(after_change - after)
        sizes["change_full"].add(snap.size_bytes)
        pd.testing.assert_frame_equal(reader.load(ENTITY)["df"], changed)
    finally:
        sm.close()
        reader.close()
    # the changed column's own size: what a store holding only that column writes for it
    probe = StateManager(f"sqlite:///{folder / 'column.db'}", durability="normal")
    try:
        probe.save("column", {"df": changed[["price"]]})
        sizes["column"].add(payload_bytes(probe)[1])
    finally:
        probe.close()


def _arrow(folder: Path, df: pd.DataFrame, _c: Any, t: dict[str, Samples], sizes: dict[str, Samples],
           **_: Any) -> None:
    path = folder / "frame.arrow"
    start = clock()
    arrow_save(df, path)
    t["arrow_save"].add(clock() - start)
    sizes["arrow"].add(path.stat().st_size)
    start = clock()
    back = arrow_load(path)
    t["arrow_load"].add(clock() - start)
    assert len(back) == len(df)


def _pickle(folder: Path, df: pd.DataFrame, _c: Any, t: dict[str, Samples], sizes: dict[str, Samples],
            **_: Any) -> None:
    path = folder / "frame.pkl"
    start = clock()
    pickle_save(df, path)
    t["pickle_save"].add(clock() - start)
    sizes["pickle"].add(path.stat().st_size)
    start = clock()
    back = pickle_load(path)
    t["pickle_load"].add(clock() - start)
    assert len(back) == len(df)


def _dill(folder: Path, df: pd.DataFrame, _c: Any, t: dict[str, Samples], sizes: dict[str, Samples], *,
          dill_session: DillSession, **_: Any) -> None:
    path = folder / "session.dill"
    start = clock()
    dill_session.save(path)
    t["dill_save"].add(clock() - start)
    sizes["dill"].add(path.stat().st_size)
    start = clock()
    back = dill_session.load(path)
    t["dill_load"].add(clock() - start)
    assert len(back) == len(df)


def _store(folder: Path, df: pd.DataFrame, _c: Any, t: dict[str, Samples], sizes: dict[str, Samples], *,
           store: StoreMagic, **_: Any) -> None:
    start = clock()
    store.save(df)
    t["store_save"].add(clock() - start)
    sizes["store"].add(store.file.stat().st_size)
    start = clock()
    back = store.load()
    t["store_load"].add(clock() - start)
    assert len(back) == len(df)


def _report3(w: WorkloadResult, t: dict[str, Samples], sizes: dict[str, Samples]) -> None:
    for system, save, load, size in ((SK, "sk_save", "sk_load", "sk_first"), (ARROW, "arrow_save", "arrow_load", "arrow"),
                                     (PICKLE, "pickle_save", "pickle_load", "pickle"),
                                     (DILL, "dill_save", "dill_load", "dill"),
                                     (STORE, "store_save", "store_load", "store")):
        w.add(system, "save", t[save])
        w.add(system, "load", t[load], note="cache off" if system == SK else "")
        w.add(system, "bytes on disk", value=sizes[size].median, unit="B")
    w.notes.append("statekit's load goes through a second store object with its cache off; "
                   "Arrow's reads the file (no memory map)")
    floor = w.ratio("save vs Arrow IPC floor", (SK, "save"), (ARROW, "save"))
    w.ratio("save vs pickle", (SK, "save"), (PICKLE, "save"))
    vs_dill = w.ratio("save vs dill.dump_module", (SK, "save"), (DILL, "save"))
    w.ratio("save vs %store", (SK, "save"), (STORE, "save"))
    vs_pickle = w.ratio("load vs pickle load", (SK, "load"), (PICKLE, "load"))
    w.ratio("load vs Arrow IPC load", (SK, "load"), (ARROW, "load"))
    w.ratio("load vs dill.load_module", (SK, "load"), (DILL, "load"))
    w.ratio("load vs %store -r", (SK, "load"), (STORE, "load"))
    w.target("save <= 1.2x the Arrow IPC floor", floor, 1.2)
    w.target("save faster than dill.dump_module", vs_dill, 1.0, "<")
    w.target("load <= 0.1x pickle's load", vs_pickle, 0.1)


def _report4(w: WorkloadResult, t: dict[str, Samples], sizes: dict[str, Samples]) -> None:
    w.add(SK, "first save", t["sk_save"])
    w.add(SK, "re-save unchanged", t["resave"])
    w.add(SK, "new payload bytes", value=sizes["resave_new"].median, unit="B",
          note=f"snapshot's new_bytes (inline JSON included): {sizes['resave_snap_new'].median:.0f}")
    ratio = w.ratio("re-save vs first save", (SK, "re-save unchanged"), (SK, "first save"))
    w.target("re-save writes 0 new payload bytes", sizes["resave_new"].median, 0, "==", "B")
    w.target("re-save time <= 10% of the first save", ratio, 0.10)


def _report5(w: WorkloadResult, t: dict[str, Samples], sizes: dict[str, Samples]) -> None:
    new, full, col = sizes["change_new"].median, sizes["change_full"].median, sizes["column"].median
    w.add(SK, "first save", t["sk_save"])
    w.add(SK, "save after the change", t["change_save"])
    w.add(SK, "new payload bytes", value=new, unit="B")
    w.add(SK, "full payload (size_bytes)", value=full, unit="B")
    w.add(SK, "changed column's own size", value=col, unit="B")
    beyond = 100.0 * (new - col) / full if full else None
    w.add(SK, "new bytes beyond the column, % of full", value=beyond, unit="%")
    w.ratio("save after the change vs first save", (SK, "save after the change"), (SK, "first save"))
    w.target("new bytes beyond the changed column <= 5% of the full payload", beyond, 5.0, "<=", "%")
