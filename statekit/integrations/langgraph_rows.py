"""Where LangGraph threads sit in statekit's tables, and the reads the core API has no call for.

A thread's checkpoints in namespace ``ns`` are the versions of the entity
``langgraph:{thread}`` (``langgraph:{thread}/{ns}`` for a subgraph); its
pending writes are the versions of ``langgraph:{thread}#writes``. Every
snapshot's metadata names its thread, namespace and checkpoint id.

Finding a checkpoint by id, listing a thread and fetching the writes of a
checkpoint filter ``state_snapshots`` on that metadata. The core offers no such
lookup, so it is written here in SQL on :mod:`statekit.models`' tables, and
runs in one read transaction with the payload chunks it needs. No index covers
the checkpoint id: a lookup reads the metadata of one thread's snapshots (an
expression index on ``(entity_id, checkpoint_id)`` would make it one probe). Deletes are in
:mod:`.langgraph_delete`, through the core's removal.

This module imports no LangGraph code: values go through the serializer the
saver hands in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from .. import codecs
from ..db import DatabaseManager, utcnow
from ..errors import IntegrityError, UntrustedPayloadError
from ..models import MAX_ID_LENGTH, snapshots_table
from ..repository import FULL_COLUMNS, SnapshotRow, full_from_row
from ..snapshot import StateSnapshot

CHECKPOINT_ITEM = "__checkpoint__"
"""The state item holding the checkpoint without its channel values (id, ts, versions...)."""
WRITES_SUFFIX = "#writes"

T = TypeVar("T")
_S = snapshots_table.c
_ESCAPED = {"%", "/", "#", "~"}
_BATCH = 200


# ----------------------------------------------------------------------------- entity ids


def _escape(text: str) -> str:
    """Percent-escape the characters the entity id uses as separators, and control characters."""
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED or ord(c) < 32 or ord(c) == 127 else c for c in text)


def _fit(text: str, room: int) -> str:
    """``text`` if it fits in ``room`` characters, else a stable digest of it (``~`` + 40 hex)."""
    if len(text) <= room:
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def thread_entity(prefix: str, thread_id: str, checkpoint_ns: str = "") -> str:
    """The entity holding a thread's checkpoints in one namespace."""
    base = f"{prefix}:{_fit(_escape(thread_id), 100)}"
    if not checkpoint_ns:
        return base
    return f"{base}/{_fit(_escape(checkpoint_ns), MAX_ID_LENGTH - len(base) - 1)}"


def writes_entity(prefix: str, thread_id: str) -> str:
    """The entity holding a thread's pending writes (all namespaces)."""
    return thread_entity(prefix, thread_id) + WRITES_SUFFIX


# ----------------------------------------------------------------------------- reads


class ThreadRows:
    """The SQL behind the saver's lookups, listings and deletions, on one store.

    Reads are plain SQL on the driver's cursor (as the core's own hot paths
    are): building SQLAlchemy expressions per call costs more than the
    statements themselves.
    """

    def __init__(self, db: DatabaseManager):
        self.db = db
        meta_key = "json_extract(metadata, '$.checkpoint_id')" if db.is_sqlite else "(metadata ->> 'checkpoint_id')"
        self._cid = meta_key
        self._alive = "(expires_at IS NULL OR expires_at > :now)"
        self._full = f"SELECT {FULL_COLUMNS} FROM state_snapshots"

    def read(self, fn: Callable[[Any, int], T]) -> T:
        """Run ``fn(cursor, attempt)`` in one read transaction on a driver connection (the core's hot path).

        Skips SQLAlchemy's checkout and events, which cost more than a checkpoint lookup itself.
        """
        def work(cur: Any, attempt: int) -> T:
            cur.execute("BEGIN")  # one consistent view for the checkpoint, its writes and its chunks
            try:
                result = fn(cur, attempt)
            except BaseException:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            return result

        return self.db.run_hot(work, write=False)

    def _cursor(self, conn: Any) -> Any:
        """The driver cursor: ``conn`` is one already (from :meth:`read`) or a SQLAlchemy connection."""
        return self.db.cursor(conn) if isinstance(conn, Connection) else conn

    def _run(self, conn: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        cur = self._cursor(conn)
        cur.execute(self.db.sql(sql), params)
        return cur.fetchall()

    def _now(self) -> Any:
        return self.db.ts(utcnow())

    # ---- checkpoints

    def checkpoint(self, conn: Any, entity: str, checkpoint_id: str | None,
                   version: int | None = None) -> SnapshotRow | None:
        """The snapshot of ``checkpoint_id`` in ``entity`` (its newest one if saved twice), or the newest checkpoint.

        ``version`` is where a cache says the checkpoint is: tried first (a
        unique-index lookup), then checked.
        """
        params = {"e": entity, "now": self._now()}
        if version is not None and checkpoint_id is not None:
            rows = self._run(conn, f"{self._full} WHERE entity_id = :e AND version = :v AND {self._alive}",
                             {**params, "v": version})
            if rows:
                found = full_from_row(rows[0])
                if found.snapshot.metadata.get("checkpoint_id") == checkpoint_id:
                    return found
        if checkpoint_id is None:
            which = f"{self._cid} IS NOT NULL"
        else:
            which = f"{self._cid} = :cid"
            params["cid"] = checkpoint_id
        rows = self._run(conn, f"{self._full} WHERE entity_id = :e AND {which} AND {self._alive} "
                               "ORDER BY version DESC LIMIT 1", params)
        return full_from_row(rows[0]) if rows else None

    def listing(self, conn: Any, entities: Sequence[str] | None, like_prefixes: Sequence[str]) -> list[tuple[Any, ...]]:
        """Light rows (snapshot_id, entity_id, version, metadata) of the checkpoints in these entities.

        ``entities`` are exact ids; ``like_prefixes`` match every id that starts
        with one of them. No payload is read.
        """
        conds, params = self._entity_filter(entities, like_prefixes)
        if not conds:
            return []
        rows = self._run(conn, f"SELECT snapshot_id, entity_id, version, metadata FROM state_snapshots "
                               f"WHERE ({conds}) AND {self._cid} IS NOT NULL AND {self._alive}",
                         {**params, "now": self._now()})
        out = []
        for sid, eid, version, meta in rows:
            meta = _json(meta)
            if "langgraph" in meta:  # a checkpoint, not a rollback copy nor a writes record
                out.append((sid, eid, int(version), meta))
        return out

    def writes_index(self, conn: Any, entity: str) -> dict[tuple[str, str], list[str]]:
        """Which writes snapshots (ids, oldest first) each (namespace, checkpoint id) has: one light scan."""
        rows = self._run(conn, f"SELECT snapshot_id, version, metadata FROM state_snapshots "
                               f"WHERE entity_id = :e AND {self._alive} ORDER BY version",
                         {"e": entity, "now": self._now()})
        out: dict[tuple[str, str], list[str]] = defaultdict(list)
        for sid, _version, meta in rows:
            m = _json(meta)
            if "checkpoint_id" in m:
                out[(m.get("checkpoint_ns", ""), m["checkpoint_id"])].append(sid)
        return out

    def by_ids(self, conn: Any, snapshot_ids: Sequence[str]) -> dict[str, SnapshotRow]:
        out: dict[str, SnapshotRow] = {}
        ids = list(dict.fromkeys(snapshot_ids))
        for start in range(0, len(ids), _BATCH):
            part = ids[start : start + _BATCH]
            marks = ", ".join(f":s{i}" for i in range(len(part)))
            for row in self._run(conn, f"{self._full} WHERE snapshot_id IN ({marks})",
                                 {f"s{i}": sid for i, sid in enumerate(part)}):
                found = full_from_row(row)
                out[found.snapshot.snapshot_id] = found
        return out

    def all_versions(self, conn: Any, entity: str) -> list[SnapshotRow]:
        """Every snapshot of ``entity``, oldest first (for copying a thread)."""
        return [full_from_row(r) for r in self._run(conn, f"{self._full} WHERE entity_id = :e ORDER BY version",
                                                    {"e": entity})]

    def branch_bases(self, conn: Any, entity: str) -> dict[str, int]:
        """Each branch of ``entity`` that starts from an earlier version, and that version."""
        rows = self._run(conn, "SELECT name, base_version FROM state_branches WHERE entity_id = :e", {"e": entity})
        return {name: int(base) for name, base in rows if base is not None}

    def writes(self, conn: Any, entity: str, checkpoint_ids: Iterable[str]) -> list[SnapshotRow]:
        """The pending-writes snapshots recorded for these checkpoints, oldest first."""
        ids = sorted(set(checkpoint_ids))
        out: list[SnapshotRow] = []
        for start in range(0, len(ids), _BATCH):
            part = ids[start : start + _BATCH]
            marks = ", ".join(f":c{i}" for i in range(len(part)))
            rows = self._run(conn, f"{self._full} WHERE entity_id = :e AND {self._cid} IN ({marks}) AND {self._alive}",
                             {"e": entity, "now": self._now(), **{f"c{i}": c for i, c in enumerate(part)}})
            out.extend(full_from_row(r) for r in rows)
        out.sort(key=lambda r: r.snapshot.version)
        return out

    def gather(self, conn: Any, prefix: str, rows: list[SnapshotRow],
               index: dict[str, dict[tuple[str, str], list[str]]] | None = None,
               ) -> list[tuple[StateSnapshot, dict[str, Any], list[Any]]]:
        """Decode checkpoints and the pending writes recorded for each, in the caller's transaction.

        ``index`` (thread id -> :meth:`writes_index`) names the writes snapshots
        to fetch by id; without it they are found by checkpoint id.
        """
        found: list[SnapshotRow] = []
        if index is None:
            by_thread: dict[str, list[str]] = defaultdict(list)
            for row in rows:
                by_thread[row.snapshot.metadata["thread_id"]].append(row.snapshot.metadata["checkpoint_id"])
            for thread_id, ids in by_thread.items():
                found.extend(self.writes(conn, writes_entity(prefix, thread_id), ids))
        else:
            wanted = [sid for row in rows for sid in index.get(row.snapshot.metadata["thread_id"], {}).get(
                (row.snapshot.metadata["checkpoint_ns"], row.snapshot.metadata["checkpoint_id"]), [])]
            found = sorted(self.by_ids(conn, wanted).values(), key=lambda r: r.snapshot.version)
        writes: dict[tuple[str, str, str], list[tuple[StateSnapshot, dict[str, Any]]]] = defaultdict(list)
        for w in found:
            m = w.snapshot.metadata
            writes[(m["thread_id"], m.get("checkpoint_ns", ""), m["checkpoint_id"])].append(
                (w.snapshot, self.decode(conn, w))
            )
        out = []
        for row in rows:
            m = row.snapshot.metadata
            out.append((row.snapshot, self.decode(conn, row),
                        writes[(m["thread_id"], m["checkpoint_ns"], m["checkpoint_id"])]))
        return out

    def thread_entities(self, conn: Any, prefix: str, thread_id: str) -> list[str]:
        """Every entity of a thread that holds versions: its namespaces' checkpoints and its writes."""
        root = thread_entity(prefix, thread_id)
        rows = self._run(conn, "SELECT entity_id FROM state_entities e WHERE (entity_id IN (:r, :w) "
                               "OR entity_id LIKE :p ESCAPE '\\') AND EXISTS "
                               "(SELECT 1 FROM state_snapshots s WHERE s.entity_id = e.entity_id)",
                         {"r": root, "w": writes_entity(prefix, thread_id), "p": _like_prefix(root + "/")})
        return sorted(r[0] for r in rows)

    def _entity_filter(self, entities: Sequence[str] | None, prefixes: Sequence[str]) -> tuple[str, dict[str, Any]]:
        conds: list[str] = []
        params: dict[str, Any] = {}
        if entities:
            params.update({f"x{i}": e for i, e in enumerate(entities)})
            conds.append(f"entity_id IN ({', '.join(f':x{i}' for i in range(len(entities)))})")
        for i, p in enumerate(prefixes):
            params[f"p{i}"] = _like_prefix(p)
            conds.append(f"entity_id LIKE :p{i} ESCAPE '\\'")
        return " OR ".join(conds), params

    # ---- payloads

    def decode(self, conn: Any, row: SnapshotRow, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The stored values of ``row`` (all, or only ``names``), checksums verified; never unpickles."""
        row.verify()
        snap = row.snapshot
        only = None if names is None else set(names)
        wanted = snap.names if only is None else [n for n in snap.names if n in only]
        out: dict[str, Any] = {}
        for name in wanted:
            if name in row.state_data:
                out[name] = row.state_data[name]
                continue
            desc = row.items[name]
            if desc.get("codec") == "pickle":
                raise UntrustedPayloadError(
                    f"Snapshot {snap.snapshot_id} ({snap.entity_id!r} v{snap.version}) holds a pickled value "
                    f"{name!r}; a LangGraph checkpoint never does, so it is not unpickled.",
                    snapshot_id=snap.snapshot_id, entity_id=snap.entity_id, version=snap.version,
                )
            out[name] = codecs.decode_item(desc, lambda digests: self._chunks(conn, digests, row), _no_key)
        return out

    def _chunks(self, conn: Any, digests: list[str], row: SnapshotRow) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), _BATCH):
            part = wanted[start : start + _BATCH]
            marks = ", ".join(f":d{i}" for i in range(len(part)))
            for digest, data in self._run(conn, f"SELECT digest, data FROM state_payloads WHERE digest IN ({marks})",
                                          {f"d{i}": d for i, d in enumerate(part)}):
                found[digest] = bytes(data)
        s = row.snapshot
        for d in wanted:
            data = found.get(d)
            if data is None or codecs.digest_of(data) != d:
                what = "is missing" if data is None else "does not match its checksum"
                raise IntegrityError(
                    f"Snapshot {s.snapshot_id} ({s.entity_id!r} v{s.version}) is damaged: its payload chunk "
                    f"{d[:12]}… {what}. Use StateManager.last_intact() to find the newest good version.",
                    snapshot_id=s.snapshot_id, entity_id=s.entity_id, version=s.version,
                )
        return found


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else (value or {})


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching every text that starts with ``prefix`` (escape character: backslash)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _no_key() -> Any:
    raise UntrustedPayloadError("a LangGraph checkpoint holds no pickled values; refusing to unpickle")
