"""Background WAL checkpoints for SQLite stores.

A save is durable once its commit reaches the write-ahead log (synchronous=FULL
fsyncs it). Copying the log back into the database file (a checkpoint) is
housekeeping; left to SQLite's auto-checkpoint it runs inside whichever commit
crosses 1,000 pages, doubling the time of a large save and putting spikes in
the latency of small ones. So statekit turns auto-checkpoint off on its own
connections and checkpoints from a daemon thread instead: after large writes,
and whenever the log has grown past a few MB.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

WAL_LIMIT = 4 * 1024 * 1024
POLL_SECONDS = 5.0


class Checkpointer:
    def __init__(self, db_path: str):
        self.db_path = db_path
        self.wal_path = Path(db_path + "-wal")
        self._event = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def note_write(self, nbytes: int) -> None:
        """Called after a commit; wakes the thread when the log is worth checkpointing."""
        self._ensure_thread()
        if nbytes >= WAL_LIMIT:
            self._event.set()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="statekit-checkpoint", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                self._event.wait(POLL_SECONDS)
                self._event.clear()
                try:
                    if self.wal_path.exists() and self.wal_path.stat().st_size >= WAL_LIMIT:
                        if conn is None:
                            conn = sqlite3.connect(self.db_path, timeout=1.0, isolation_level=None,
                                                   check_same_thread=False)
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or closed: the next round tries again; nothing is lost meanwhile
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._event.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout=2.0)
