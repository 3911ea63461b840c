"""Backup and restore: one self-contained SQLite file, consistent while other writers keep saving.

**The file** is a SQLite database with statekit's own tables (the same DDL as a
SQLite store, ``statekit_meta`` included) plus a ``statekit_backup`` manifest:
format and format version, the source's schema version and dialect, when it was
taken, and the row count of every table. It is portable (SQLite or PostgreSQL
in, either out) and inspectable with any SQLite tool. Timestamps are stored as
naive-UTC text and JSON columns as the very text the source stored (the
checksums cover that text), exactly as in a SQLite store. The file is created
readable by its owner only.

**backup(path)** reads the source in one read transaction (SQLite: a WAL read
transaction; PostgreSQL: REPEATABLE READ, READ ONLY), so it sees one moment of
the store while saves go on; rows are streamed in batches (a server-side
cursor on PostgreSQL). It writes a temporary file beside ``path`` and renames
it into place once complete and synced, so a crash never leaves a half-written
backup under the final name. A missing or unwritable folder is an
InvalidArgumentError before anything is written.

**restore(path, merge=False)** first checks the whole file without touching
the target (a SQLite file, the manifest, ``PRAGMA quick_check``, the row counts,
then every snapshot checksum, chunk digest, link, parent and branch head, with
the same checks as ``verify()``); then it inserts everything in one
transaction, in batches. A file that is not a backup is an
InvalidArgumentError, a truncated or damaged one an IntegrityError, a backup of
a newer schema a SchemaVersionError; in every case the target is unchanged.
Into a store that is not empty it refuses (ConflictError) unless
``merge=True``. A merge skips snapshots, transitions and chunks already present
(same ids); a snapshot id with different content, a version number taken by a
different snapshot, or an entity of another state type is a ConflictError and
nothing is written. It then sets each entity's ``last_version`` to the larger
of the two, adds missing branches, moves a branch head to the file's head when
that is a newer version, and writes one ``restore`` transition per entity it
changed (with counts and moved heads in its metadata). A restore into an empty
store writes no transition, so the copy's audit trail is identical to the
source's; the fact is recorded in ``statekit_meta`` (key ``last_restore``).

A backup of schema 1 restores as it is: its rows keep their format-1
checksums, which still verify (see ``rows.py``). For an older schema than
that: open a copy of the file with ``StateManager("sqlite:///copy.db")``, which
upgrades it in place, then back that up.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from . import __version__, models
from .codecs import dumps
from .db import ALL_TABLES, READABLE_FROM, SQLITE_TS_FORMAT, as_utc, utcnow
from .errors import ConflictError, IntegrityError, InvalidArgumentError, SchemaVersionError, StatekitError
from .integrity import SqlSource, consistent_read, find_problems, stream
from .snapshot import StateTransition

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .store import StateManager

FORMAT = "statekit-backup"
FORMAT_VERSION = 1
MANIFEST = "statekit_backup"
SQLITE_MAGIC = b"SQLite format 3\x00"
BATCH = {"state_payloads": 16, "state_snapshots": 200}  # rows per fetch; the rest use 1000
PK = {t.name: [c.name for c in t.primary_key.columns] for t in ALL_TABLES}


def _kinds(table: sa.Table) -> tuple[list[str], set[str], set[str], set[str]]:
    cols = [c.name for c in table.columns]
    js = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
    ts = {c.name for c in table.columns if isinstance(c.type, sa.DateTime)}
    blob = {c.name for c in table.columns if isinstance(c.type, sa.LargeBinary)}
    return cols, js, ts, blob


def _normalize(row: tuple[Any, ...], cols: list[str], js: set[str], ts: set[str], blob: set[str],
               ts_out: Any) -> tuple[Any, ...]:
    """One row as the other side stores it: JSON text verbatim, timestamps in UTC, blobs as bytes."""
    out = []
    for name, v in zip(cols, row, strict=True):
        if v is not None:
            if name in js:  # verbatim: the checksum covers the stored text
                v = v if isinstance(v, str) else dumps(v)
            elif name in ts:
                v = ts_out(as_utc(v))
            elif name in blob and not isinstance(v, bytes):
                v = bytes(v)
        out.append(v)
    return tuple(out)


def _file_ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime(SQLITE_TS_FORMAT)


# ================================================================ backup


def backup(sm: StateManager, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write a consistent, self-contained backup of the whole store to ``path``; returns its manifest."""
    target = _writable_target(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise InvalidArgumentError(f"Cannot write the backup {target}: {exc.strerror} in {target.parent}.") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        manifest = _write_file(sm, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise StatekitError(f"Could not write the backup {target}: {exc}; nothing was written.") from exc
        raise
    return {"path": str(target), **manifest, "bytes": target.stat().st_size}


def _writable_target(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InvalidArgumentError(f"The backup path must be a file path, not {path!r}.")
    target = Path(path).expanduser().absolute()
    folder = target.parent
    if not folder.is_dir():
        raise InvalidArgumentError(f"Cannot write the backup {target}: the folder {folder} does not exist.")
    if target.is_dir():
        raise InvalidArgumentError(f"Cannot write the backup to {target}: it is a folder; name a file in it.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"Cannot write the backup {target}: the folder {folder} is not writable.")
    return target


def _write_file(sm: StateManager, tmp: Path) -> dict[str, Any]:
    out = sqlite3.connect(tmp, isolation_level=None)
    try:
        out.execute("PRAGMA journal_mode=OFF")  # a temp file: it is thrown away on failure
        out.execute("PRAGMA synchronous=OFF")
        out.execute("BEGIN")
        dialect = sqlite_dialect.dialect()
        for table in ALL_TABLES:
            out.execute(str(CreateTable(table).compile(dialect=dialect)))
        out.execute(f"CREATE TABLE {MANIFEST} (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)")
        counts: dict[str, int] = {}
        with consistent_read(sm.db) as conn:
            created_at = utcnow()
            for table in ALL_TABLES:
                counts[table.name] = _copy_out(sm, conn, out, table)
        schema_version = out.execute(
            f"SELECT value FROM {models.meta_table.name} WHERE key = 'schema_version'").fetchone()
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": created_at.isoformat(),
            "statekit_version": __version__, "source_dialect": sm.db.dialect,
            "source_schema_version": int(schema_version[0]) if schema_version else models.SCHEMA_VERSION,
            "counts": counts,
        }
        out.executemany(f"INSERT INTO {MANIFEST} (key, value) VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in manifest.items()])
        for table in ALL_TABLES:
            for index in table.indexes:
                out.execute(str(CreateIndex(index).compile(dialect=dialect)))
        out.execute("COMMIT")
        return manifest
    finally:
        out.close()


def _copy_out(sm: StateManager, conn: Connection, out: sqlite3.Connection, table: sa.Table) -> int:
    cols, js, ts, blob = _kinds(table)
    insert = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    n = 0
    exprs = [f"{c}::text" if c in js and not sm.db.is_sqlite else c for c in cols]
    select = f"SELECT {', '.join(exprs)} FROM {table.name} ORDER BY {', '.join(PK[table.name])}"
    for rows in stream(sm.db, conn, select, batch=BATCH.get(table.name, 1000)):
        try:
            normalized = [_normalize(r, cols, js, ts, blob, _file_ts) for r in rows]
        except (ValueError, TypeError, OverflowError, AttributeError):
            bad = next(r for r in rows if not _normalizes(r, cols, js, ts, blob))
            raise IntegrityError(
                f"The store is damaged: the {table.name} row {dict(zip(cols, bad, strict=True))[cols[0]]!r} "
                "holds a value that is not what its column stores; run verify(). Nothing was written.") from None
        out.executemany(insert, normalized)
        n += len(rows)
    return n


def _normalizes(row: tuple[Any, ...], cols: list[str], js: set[str], ts: set[str], blob: set[str]) -> bool:
    try:
        _normalize(row, cols, js, ts, blob, _file_ts)
    except (ValueError, TypeError, OverflowError, AttributeError):
        return False
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ================================================================ restore


def restore(sm: StateManager, path: str | os.PathLike[str], merge: bool = False) -> dict[str, Any]:
    """Load the backup at ``path`` into this store; see the module docstring for the rules."""
    source = Path(path).expanduser() if isinstance(path, (str, os.PathLike)) else None
    if source is None or not source.is_file():
        raise InvalidArgumentError(f"No backup file at {path!r}.")
    try:
        con = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise InvalidArgumentError(f"Cannot open {source}: {exc}.") from None
    try:
        con.execute("BEGIN")  # one read transaction: the file is checked and copied as one version
        manifest = _check_file(con, source)
        try:
            summary = sm.db.run_write(lambda conn, attempt: _load(sm, conn, con, source, manifest, bool(merge)))
        except sm.db.engine.dialect.loaded_dbapi.IntegrityError as exc:  # a save raced the merge for an id
            raise ConflictError(f"Someone saved to the entities being restored meanwhile ({exc}); nothing was "
                                "changed. Try again.") from None
    finally:
        con.close()
    return {"path": str(source), "backup_created_at": manifest["created_at"], "merge": bool(merge), **summary}


def _check_file(con: sqlite3.Connection, source: Path) -> dict[str, Any]:
    with open(source, "rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise InvalidArgumentError(f"{source} is not a statekit backup (not a SQLite file).")
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if MANIFEST not in tables:
            raise InvalidArgumentError(f"{source} is not a statekit backup: it has no {MANIFEST} manifest.")
        try:
            manifest = {k: json.loads(v) for k, v in con.execute(f"SELECT key, value FROM {MANIFEST}")}
        except (ValueError, TypeError):
            manifest = {}
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("counts"), dict) \
                or not isinstance(manifest.get("created_at"), str):
            raise InvalidArgumentError(f"{source} is not a statekit backup: its manifest is not one.")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise SchemaVersionError(f"{source} uses backup format {manifest['format_version']}, newer than this "
                                     f"statekit reads ({FORMAT_VERSION}); upgrade statekit. Nothing was changed.")
        missing = [t.name for t in ALL_TABLES if t.name not in tables]
        if missing:
            raise IntegrityError(f"{source} is damaged: tables {', '.join(missing)} are missing. Nothing was changed.")
        row = con.execute(f"SELECT value FROM {models.meta_table.name} WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if not READABLE_FROM <= version <= models.SCHEMA_VERSION:  # schema 1 rows differ only in checksum format
            newer = version > models.SCHEMA_VERSION
            raise SchemaVersionError(
                f"{source} holds a store of schema version {version}, "
                + (f"newer than this statekit understands ({models.SCHEMA_VERSION}); upgrade statekit."
                   if newer else f"older than this statekit's ({models.SCHEMA_VERSION}); open a copy of it with "
                   "StateManager('sqlite:///copy.db') to upgrade it, then back that up.") + " Nothing was changed.")
        check = con.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise IntegrityError(f"{source} is damaged ({check[0] if check else 'no answer'}). Nothing was changed.")
        for name in PK:
            expected = manifest["counts"].get(name)
            n = con.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            if n != expected:
                raise IntegrityError(f"{source} is damaged: {name} holds {n} rows, its manifest says {expected}. "
                                     "Nothing was changed.")
        problems = [p for p in find_problems(SqlSource(con.cursor, lambda s: s, False)) if p["severity"] == "error"]
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{source} is damaged or truncated ({exc}). Nothing was changed.") from None
    if problems:
        p = problems[0]
        raise IntegrityError(
            f"{source} fails verification ({len(problems)} problems; first: {p['problem']} in {p['entity_id']!r} "
            f"v{p['version']}: {p['detail']}). Nothing was changed.")
    return manifest


def _file_rows(con: sqlite3.Connection, table: sa.Table) -> Iterator[list[tuple[Any, ...]]]:
    """The backup's rows of ``table`` in this schema's column order; columns an older backup lacks are NULL."""
    present = {r[1] for r in con.execute(f"PRAGMA table_info({table.name})")}
    cols = [c.name if c.name in present else f"NULL AS {c.name}" for c in table.columns]
    cur = con.execute(f"SELECT {', '.join(cols)} FROM {table.name} ORDER BY {', '.join(PK[table.name])}")
    try:
        while rows := cur.fetchmany(BATCH.get(table.name, 1000)):
            yield rows
    finally:
        cur.close()


def _load(sm: StateManager, conn: Connection, con: sqlite3.Connection, source: Path, manifest: dict[str, Any],
          merge: bool) -> dict[str, Any]:
    db = sm.db
    cur = db.cursor(conn)
    ts_out = db.ts

    def insert(table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        cols, js, ts, blob = _kinds(table)
        text = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
        cur.executemany(db.sql(text), [dict(zip(cols, _normalize(r, cols, js, ts, blob, ts_out), strict=True))
                                       for r in rows])

    def existing(text: str, keys: list[Any]) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), 400):
            part = keys[start : start + 400]
            marks = ", ".join(f":k{i}" for i in range(len(part)))
            cur.execute(db.sql(text.format(marks=marks)), {f"k{i}": k for i, k in enumerate(part)})
            found += cur.fetchall()
        return found

    if not merge:
        for t in ("state_entities", "state_snapshots", "state_transitions", "state_branches"):
            cur.execute(f"SELECT 1 FROM {t} LIMIT 1")
            if cur.fetchone() is not None:
                raise ConflictError(f"This store is not empty ({t} has rows); restore into an empty store, or pass "
                                    "merge=True (--merge) to add the backup's history to it. Nothing was changed.")
    file_entities = {r[0]: r for rows in _file_rows(con, models.entities_table) for r in rows}
    names = sorted(file_entities)
    if not db.is_sqlite and names:  # the order saves lock in: entity rows, then the chunk lock
        cur.execute("SELECT entity_id FROM state_entities WHERE entity_id = ANY(%(ids)s) ORDER BY entity_id "
                    "FOR UPDATE", {"ids": names})
    db.lock_for_save(cur)
    target_entities = {e: (t, int(n)) for e, t, n in existing(
        "SELECT entity_id, state_type, last_version FROM state_entities WHERE entity_id IN ({marks})", names)}
    for e, (t, _n) in target_entities.items():
        if file_entities[e][1] != t:
            raise ConflictError(f"Entity {e!r} holds {t} snapshots here but {file_entities[e][1]} in the backup; "
                                "nothing was changed.")
    changed: dict[str, dict[str, Any]] = {}
    stats = {"snapshots_added": 0, "snapshots_skipped": 0, "transitions_added": 0, "chunks_added": 0}

    at = {c.name: i for i, c in enumerate(models.snapshots_table.columns)}
    for rows in _file_rows(con, models.snapshots_table):
        have = {sid: (e, int(v), ck) for sid, e, v, ck in existing(
            "SELECT snapshot_id, entity_id, version, checksum FROM state_snapshots WHERE snapshot_id IN ({marks})",
            [r[at["snapshot_id"]] for r in rows])}
        fresh = []
        for r in rows:
            sid, e, v, ck = r[at["snapshot_id"]], r[at["entity_id"]], int(r[at["version"]]), r[at["checksum"]]
            if sid in have:
                if have[sid] != (e, v, ck):
                    raise ConflictError(f"Snapshot {sid} differs between this store and the backup; nothing was changed.")
                stats["snapshots_skipped"] += 1
            else:
                fresh.append(r)
        for e, v, sid in _taken_versions(cur, db, [(r[at["entity_id"]], int(r[at["version"]])) for r in fresh]):
            raise ConflictError(f"{e!r} v{v} is already a different snapshot ({sid}) in this store; merging the "
                                "backup would duplicate that version. Nothing was changed.")
        if fresh:
            insert(models.snapshots_table, fresh)
            ids = [r[at["snapshot_id"]] for r in fresh]
            for start in range(0, len(ids), 400):
                part = ids[start : start + 400]
                links = con.execute(f"SELECT snapshot_id, digest FROM state_snapshot_payloads WHERE snapshot_id IN "
                                    f"({', '.join('?' * len(part))})", part).fetchall()
                if links:
                    insert(models.links_table, links)
            stats["snapshots_added"] += len(fresh)
            for r in fresh:
                c = changed.setdefault(r[at["entity_id"]], {"snapshots_added": 0, "versions": []})
                c["snapshots_added"] += 1
                c["versions"].append(int(r[at["version"]]))

    for rows in _digest_pages(con):
        have_d = {r[0] for r in existing("SELECT digest FROM state_payloads WHERE digest IN ({marks})", rows)}
        missing = [d for d in rows if d not in have_d]
        for start in range(0, len(missing), 16):
            part = missing[start : start + 16]
            data = con.execute(f"SELECT digest, size, data FROM state_payloads WHERE digest IN "
                               f"({', '.join('?' * len(part))})", part).fetchall()
            # ON CONFLICT DO NOTHING: a save running meanwhile may write the same chunk (same bytes)
            cur.executemany(sm._repo.q_chunk, [{"d": d, "n": n, "data": bytes(b)} for d, n, b in data])
            stats["chunks_added"] += len(data)

    for rows in _file_rows(con, models.transitions_table):
        have_t = {r[0] for r in existing("SELECT transition_id FROM state_transitions WHERE transition_id IN ({marks})",
                                         [r[0] for r in rows])}
        fresh_t = [r for r in rows if r[0] not in have_t]
        if fresh_t:
            insert(models.transitions_table, fresh_t)
            stats["transitions_added"] += len(fresh_t)

    now = utcnow()
    fresh_e = [row for e, row in file_entities.items() if e not in target_entities]
    for start in range(0, len(fresh_e), 1000):
        insert(models.entities_table, fresh_e[start : start + 1000])
    for e, row in file_entities.items():
        if e in target_entities and int(row[2]) > target_entities[e][1]:
            cur.execute(db.sql("UPDATE state_entities SET last_version = :n WHERE entity_id = :e"), {"n": int(row[2]), "e": e})
    if stats["snapshots_added"]:  # an older backup has no ``changed`` column: work it out as the upgrade does
        from .history_schema import backfill

        backfill(conn)
    for rows in _file_rows(con, models.branches_table):
        if not merge:  # the target was empty: the branches go in as they are
            insert(models.branches_table, rows)
            continue
        for row in rows:  # entity_id, name, head_snapshot_id, head_version, base_version, created_at
            e, name, hsid, hv = row[0], row[1], row[2], row[3]
            cur.execute(db.sql("SELECT head_snapshot_id, head_version FROM state_branches WHERE entity_id = :e "
                               "AND name = :b"), {"e": e, "b": name})
            here = cur.fetchone()
            if here is None:
                insert(models.branches_table, [row])
            elif hv is not None and (here[1] is None or int(hv) > int(here[1])):
                cur.execute(db.sql("UPDATE state_branches SET head_snapshot_id = :s, head_version = :v WHERE "
                                   "entity_id = :e AND name = :b"), {"s": hsid, "v": hv, "e": e, "b": name})
            else:
                continue
            if here is not None:
                changed.setdefault(e, {"snapshots_added": 0, "versions": []}).setdefault("heads", {})[name] = [
                    here[1], hv]
    if merge:
        for e, c in sorted(changed.items()):
            versions = c.pop("versions")
            sm._repo.insert_transition(cur, StateTransition(
                transition_id=uuid.uuid4().hex, entity_id=e, branch=None, transition_type=models.TransitionType.RESTORE,
                from_snapshot_id=None, to_snapshot_id=None, from_version=min(versions, default=None),
                to_version=max(versions, default=None), actor=sm.actor,
                reason=f"merged from backup {source.name} taken {manifest['created_at']}", timestamp=now,
                metadata={"backup": source.name, "backup_created_at": manifest["created_at"], **c},
            ))
    else:
        record = json.dumps({"path": str(source), "backup_created_at": manifest["created_at"], "restored_at":
                             now.isoformat(), "counts": manifest["counts"]})
        cur.execute(db.sql("DELETE FROM statekit_meta WHERE key = 'last_restore'"))
        cur.execute(db.sql("INSERT INTO statekit_meta (key, value) VALUES ('last_restore', :v)"), {"v": record})
    return {**stats, "entities_changed": len(changed) if merge else len(file_entities)}


def _digest_pages(con: sqlite3.Connection, size: int = 500) -> Iterator[list[str]]:
    cur = con.execute("SELECT digest FROM state_payloads ORDER BY digest")
    try:
        while rows := cur.fetchmany(size):
            yield [r[0] for r in rows]
    finally:
        cur.close()


def _taken_versions(cur: Any, db: Any, pairs: list[tuple[str, int]]) -> list[tuple[str, int, str]]:
    """Of ``(entity_id, version)`` pairs, those already used by a snapshot in this store."""
    taken = []
    for start in range(0, len(pairs), 200):
        part = pairs[start : start + 200]
        cond = " OR ".join(f"(entity_id = :e{i} AND version = :v{i})" for i in range(len(part)))
        params = {k: val for i, (e, v) in enumerate(part) for k, val in ((f"e{i}", e), (f"v{i}", v))}
        cur.execute(db.sql(f"SELECT entity_id, version, snapshot_id FROM state_snapshots WHERE {cond}"), params)
        taken += cur.fetchall()
    return taken
