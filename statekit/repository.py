"""The SQL of the hot paths: writing a snapshot, reading one, reading chunks.

Each function runs inside a transaction the caller opened through
:class:`DatabaseManager` and uses the driver's cursor directly, with
statements written once here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .codecs import dumps
from .db import DatabaseManager
from .errors import IntegrityError
from .frames import PARALLEL_BYTES, digest_of, parallel_map
from .rows import (
    FULL_COLUMNS,
    META_COLUMNS,
    SnapshotRow,
    branch_head,
    damaged,
    entity_type,
    full_columns,
    full_from_row,
    snapshot_from_row,
    state_checksum,
)
from .snapshot import StateSnapshot, StateTransition

__all__ = ["FULL_COLUMNS", "META_COLUMNS", "Repository", "SnapshotRow", "full_from_row", "snapshot_from_row",
           "state_checksum"]


class Repository:
    """Prepared statements for one database."""

    def __init__(self, db: DatabaseManager):
        self.db = db
        q = db.sql
        # PostgreSQL hands json columns back parsed; read the stored text, which the checksum covers
        full = full_columns(not db.is_sqlite)
        self.full_columns = full
        # SQLite: one statement takes the next version and reads the branch head (BEGIN IMMEDIATE
        # has serialized writers already). PostgreSQL: the UPDATE's row lock serializes writers to an
        # entity, but subqueries in its RETURNING see the snapshot taken before it waited for the lock,
        # so the head is read by a statement of its own after it.
        self.q_bump_only = q(
            "UPDATE state_entities SET last_version = last_version + 1 WHERE entity_id = :e "
            "RETURNING last_version, state_type"
        )
        self.q_bump = q(
            "UPDATE state_entities SET last_version = last_version + 1 WHERE entity_id = :e "
            "RETURNING last_version, state_type, "
            "(SELECT head_snapshot_id FROM state_branches WHERE entity_id = :e AND name = :b), "
            "(SELECT head_version FROM state_branches WHERE entity_id = :e AND name = :b), "
            "(SELECT 1 FROM state_branches WHERE entity_id = :e AND name = :b)"
        )
        self.q_new_entity = q(
            "INSERT INTO state_entities (entity_id, state_type, last_version, created_at) "
            "VALUES (:e, :t, 0, :now) ON CONFLICT (entity_id) DO NOTHING"
        )
        self.q_branch = q(
            "SELECT head_snapshot_id, head_version FROM state_branches WHERE entity_id = :e AND name = :b"
        )
        self.q_insert_snapshot = q(
            "INSERT INTO state_snapshots (snapshot_id, entity_id, version, branch, state_type, "
            "parent_snapshot_id, parent_version, checksum, created_at, expires_at, status, kind, actor, "
            "message, metadata, names, size_bytes, new_bytes, state_data, items, changed, lineage) VALUES (:sid, :e, "
            ":v, :b, :t, :psid, :pv, :checksum, :now, :exp, :status, :kind, :actor, :msg, :meta, :names, :size, "
            ":new, :data, :items, :changed, :lineage)"
        )
        self.q_insert_transition = q(
            "INSERT INTO state_transitions (transition_id, entity_id, branch, from_snapshot_id, "
            "to_snapshot_id, from_version, to_version, transition_type, actor, reason, timestamp, metadata) "
            "VALUES (:tid, :e, :b, :fsid, :tsid, :fv, :tv, :kind, :actor, :reason, :now, :meta)"
        )
        self.q_move_branch = q(
            "UPDATE state_branches SET head_snapshot_id = :sid, head_version = :v "
            "WHERE entity_id = :e AND name = :b"
        )
        self.q_new_branch = q(
            "INSERT INTO state_branches (entity_id, name, head_snapshot_id, head_version, base_version, "
            "created_at) VALUES (:e, :b, :sid, :v, :base, :now)"
        )
        self.q_snapshot_by_id = q(f"SELECT {full} FROM state_snapshots WHERE snapshot_id = :sid")
        self.q_snapshot_by_version = q(
            f"SELECT {full} FROM state_snapshots WHERE entity_id = :e AND version = :v"
        )
        self.q_meta_by_version = q(
            f"SELECT {META_COLUMNS} FROM state_snapshots WHERE entity_id = :e AND version = :v"
        )
        self.q_head = q(
            f"SELECT {', '.join('s.' + c.strip() for c in full.split(','))} "
            "FROM state_branches b JOIN state_snapshots s ON s.snapshot_id = b.head_snapshot_id "
            "WHERE b.entity_id = :e AND b.name = :b"
        )
        self.q_link = q("INSERT INTO state_snapshot_payloads (snapshot_id, digest) VALUES (:sid, :d)")
        self.q_chunk = q(
            "INSERT INTO state_payloads (digest, size, data) VALUES (:d, :n, :data) "
            "ON CONFLICT (digest) DO NOTHING"
        )
        self.q_exists = q("SELECT 1 FROM state_snapshots WHERE snapshot_id = :sid")
        # versions strictly decrease along parent links, so the walk ends even in a damaged store
        self.q_on_line = q(
            "WITH RECURSIVE line(sid, v) AS ("
            "SELECT s.snapshot_id, s.version FROM state_branches b JOIN state_snapshots s "
            "ON s.snapshot_id = b.head_snapshot_id WHERE b.entity_id = :e AND b.name = :b "
            "UNION ALL SELECT p.snapshot_id, p.version FROM line JOIN state_snapshots c ON c.snapshot_id = line.sid "
            "JOIN state_snapshots p ON p.snapshot_id = c.parent_snapshot_id WHERE p.version < line.v AND line.v > :v"
            ") SELECT 1 FROM line WHERE sid = :sid"
        )

    # ------------------------------------------------------------ writing

    def allocate_version(self, cur: Any, entity_id: str, state_type: str, branch: str,
                         now: datetime) -> tuple[int, str, tuple[str | None, int | None] | None]:
        """Take the entity's next version number (creating the entity if new) and read the branch head.

        On PostgreSQL the UPDATE locks the entity's row until commit, so concurrent
        saves to one entity queue here and each reads the head its predecessor left.
        Returns (version, the entity's state type, (head id, head version) or None
        when the branch does not exist).
        """
        params = {"e": entity_id, "b": branch}
        bump = self.q_bump if self.db.is_sqlite else self.q_bump_only
        cur.execute(bump, params)
        row = cur.fetchone()
        if row is None:
            cur.execute(self.q_new_entity, {"e": entity_id, "t": state_type, "now": self.db.ts(now)})
            cur.execute(bump, params)
            row = cur.fetchone()
        if type(row[0]) is not int:
            raise IntegrityError(f"The entity row of {entity_id!r} is damaged: its version counter {row[0]!r} "
                                 "is not a number. Run verify(); nothing was saved.", entity_id=entity_id)
        kind = entity_type(entity_id, row[1]).value
        if self.db.is_sqlite:
            return row[0], kind, (branch_head(entity_id, branch, row[2], row[3]) if row[4] is not None else None)
        return row[0], kind, self.branch_head(cur, entity_id, branch)

    def branch_head(self, cur: Any, entity_id: str, branch: str) -> tuple[str | None, int | None] | None:
        """(head snapshot id, head version) of the branch, None when it does not exist."""
        cur.execute(self.q_branch, {"e": entity_id, "b": branch})
        row = cur.fetchone()
        return branch_head(entity_id, branch, row[0], row[1]) if row else None

    def existing_digests(self, cur: Any, digests: Iterable[str]) -> set[str]:
        found: set[str] = set()
        wanted = list(digests)
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ", ".join(f":d{i}" for i in range(len(part)))
            cur.execute(
                self.db.sql(f"SELECT digest FROM state_payloads WHERE digest IN ({marks})"),
                {f"d{i}": d for i, d in enumerate(part)},
            )
            found.update(r[0] for r in cur.fetchall())
        return found

    def write_chunks(self, cur: Any, chunks: Iterable[tuple[str, bytes]], skip: set[str] | None = None) -> tuple[int, int]:
        """Insert each (digest, bytes) the store lacks, letting each go before the next is asked for.

        Returns (bytes inserted, bytes the store already held), counted from the
        driver's rowcount (ON CONFLICT DO NOTHING inserts no row for a known digest).
        A digest in ``skip`` (and each one inserted, added to it) is not written or counted again.
        """
        seen = skip if skip is not None else set()
        new = known = 0
        for digest, data in chunks:
            if digest in seen:
                continue
            seen.add(digest)
            cur.execute(self.q_chunk, {"d": digest, "n": len(data), "data": data})
            if cur.rowcount == 0:
                known += len(data)
            else:
                new += len(data)
            del data  # not held while the next chunk is encoded
        return new, known

    def write_links(self, cur: Any, snapshot_id: str, digests: Iterable[str]) -> None:
        rows = [{"sid": snapshot_id, "d": d} for d in sorted(set(digests))]
        if rows:
            cur.executemany(self.q_link, rows)

    def insert_snapshot(self, cur: Any, params: dict[str, Any]) -> None:
        cur.execute(self.q_insert_snapshot, params)

    def insert_transition(self, cur: Any, t: StateTransition) -> None:
        cur.execute(
            self.q_insert_transition,
            {
                "tid": t.transition_id, "e": t.entity_id, "b": t.branch,
                "fsid": t.from_snapshot_id, "tsid": t.to_snapshot_id,
                "fv": t.from_version, "tv": t.to_version, "kind": t.transition_type.value,
                "actor": t.actor, "reason": t.reason, "now": self.db.ts(t.timestamp),
                "meta": dumps(t.metadata),
            },
        )

    def set_head(self, cur: Any, entity_id: str, branch: str, snapshot_id: str, version: int,
                 *, create: bool, base: int | None, now: datetime) -> None:
        if create:
            cur.execute(self.q_new_branch, {"e": entity_id, "b": branch, "sid": snapshot_id, "v": version,
                                            "base": base, "now": self.db.ts(now)})
        else:
            cur.execute(self.q_move_branch, {"e": entity_id, "b": branch, "sid": snapshot_id, "v": version})

    def snapshot_exists(self, cur: Any, snapshot_id: str) -> bool:
        cur.execute(self.q_exists, {"sid": snapshot_id})
        return cur.fetchone() is not None

    # ------------------------------------------------------------ reading

    def read_snapshot(self, cur: Any, entity_id: str, version: int | None, branch: str) -> SnapshotRow | None:
        if version is None:
            cur.execute(self.q_head, {"e": entity_id, "b": branch})
        else:
            cur.execute(self.q_snapshot_by_version, {"e": entity_id, "v": version})
        row = cur.fetchone()
        return full_from_row(row) if row else None

    def on_line(self, cur: Any, entity_id: str, branch: str, snap: StateSnapshot) -> bool:
        """Whether ``snap`` is on ``branch``'s line: its head, the head's parent, and so on back."""
        cur.execute(self.q_on_line, {"e": entity_id, "b": branch, "v": snap.version, "sid": snap.snapshot_id})
        return cur.fetchone() is not None

    def read_snapshot_by_id(self, cur: Any, snapshot_id: str) -> SnapshotRow | None:
        cur.execute(self.q_snapshot_by_id, {"sid": snapshot_id})
        row = cur.fetchone()
        return full_from_row(row) if row else None

    def read_chunks(self, cur: Any, digests: list[str], owner: StateSnapshot) -> dict[str, bytes]:
        """The chunks, each checked against its digest; a missing or damaged one raises IntegrityError."""
        wanted = list(dict.fromkeys(digests))
        out: dict[str, bytes] = {}
        for start in range(0, len(wanted), 200):
            part = wanted[start : start + 200]
            marks = ", ".join(f":d{i}" for i in range(len(part)))
            cur.execute(
                self.db.sql(f"SELECT digest, data FROM state_payloads WHERE digest IN ({marks})"),
                {f"d{i}": d for i, d in enumerate(part)},
            )
            for digest, data in cur.fetchall():
                # a damaged row may hold text or a number: no bytes, so it cannot match its digest
                out[digest] = bytes(data) if isinstance(data, (bytearray, memoryview)) else \
                    data if isinstance(data, bytes) else b"\x00not bytes"
        for d in wanted:
            if d not in out:
                raise _damaged(owner, f"its payload chunk {d[:12]}… is missing")
        datas = [out[d] for d in wanted]
        big = sum(map(len, datas)) >= PARALLEL_BYTES  # hashlib releases the GIL: hash large reads in parallel
        for d, actual in zip(wanted, parallel_map(digest_of, datas) if big else map(digest_of, datas), strict=True):
            if actual != d:
                raise _damaged(owner, f"its payload chunk {d[:12]}… does not match its checksum")
        return out


def _damaged(s: StateSnapshot, what: str) -> IntegrityError:
    return damaged(s, what)
