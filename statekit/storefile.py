"""The store's file and database as found: checked before anything is written, and errors a user can meet.

``db.DatabaseManager`` calls these while opening a store (see its module
docstring for the rules) and when a driver error leaves a transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError, InvalidArgumentError, StatekitError
from .rows import SnapshotDamage, full_columns, full_from_row, stored_checksum

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

SQLITE_MAGIC = b"SQLite format 3\x00"


class ReadOnlyStoreError(StatekitError):
    """The store may be read but not written by this user (file modes, or a PostgreSQL role)."""


def prepare_sqlite_file(path: Path) -> bool:
    """Check an existing store file (it must be a SQLite database) or create a new one readable by its owner only.

    Returns True when the file or its folder may not be written: the store is then opened read-only.
    A file that is not SQLite (text, a folder, a device, a symlink to /etc/passwd) is refused before
    SQLite opens it, so nothing is written next to it.
    """
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise InvalidArgumentError(f"{path} is a folder, not a store file; name a file in it (e.g. {path}/state.db).")
        if not path.is_file():
            raise InvalidArgumentError(f"{path} is not a regular file (or a symlink to a missing one); "
                                       "a statekit store is a SQLite file.")
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise InvalidArgumentError(f"Cannot read the store file {path}: {exc.strerror}.") from None
        if head and head != SQLITE_MAGIC:
            raise InvalidArgumentError(f"{path} is not a SQLite database, so not a statekit store; nothing was changed.")
        folder = path.resolve().parent
        return not (os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK))
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise InvalidArgumentError(f"Cannot create the store's folder {parent}: {exc.strerror}.") from None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise InvalidArgumentError(f"Cannot create the store file {path}: {exc.strerror}.") from None
    return False


def read_only_connector(path: Path, timeout: float) -> Callable[[], Any]:
    """Connections that never write: mode=ro; immutable=1 when SQLite cannot set up a WAL index beside the file.

    A WAL store whose folder we may not write has no -shm we can create: SQLite then needs
    ``immutable=1``, which is right because nobody can be writing it without a -wal file there.
    """
    uri = path.resolve().as_uri()
    wal = Path(str(path) + "-wal")

    def connect() -> Any:
        con = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=timeout)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
            return con
        except sqlite3.OperationalError:
            con.close()
            if wal.exists():
                raise
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)

    return connect


def upgrade_checksums(conn: Connection) -> None:
    """Schema 1 -> 2: widen the checksum column and give every format-1 row that verifies a format-2 checksum.

    A row whose format-1 checksum (or names) does not verify keeps it, so verify() still reports it.
    """
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.exec_driver_sql("ALTER TABLE state_snapshots ALTER COLUMN checksum TYPE VARCHAR(160)")
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    mark = "%s" if postgres else "?"
    after = ""
    while True:
        cur.execute(f"SELECT {full_columns(postgres)} FROM state_snapshots WHERE snapshot_id > {mark} "
                    f"AND length(checksum) = 64 ORDER BY snapshot_id LIMIT 200", (after,))
        rows = cur.fetchall()
        if not rows:
            return
        updates = []
        for raw in rows:
            try:
                row = full_from_row(raw)
                row.verify()
            except SnapshotDamage:
                continue
            if row.format == 1:
                updates.append((stored_checksum(row.snapshot, row.metadata_text, row.names_text),
                                row.snapshot.snapshot_id))
        if updates:
            cur.executemany(f"UPDATE state_snapshots SET checksum = {mark} WHERE snapshot_id = {mark}", updates)
        after = rows[-1][0]


def table_columns(conn: Connection, sqlite: bool) -> dict[str, set[str]]:
    """Every table of the store's database (SQLite) or schema (PostgreSQL) and its columns."""
    if sqlite:
        sql = ("SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p "
               "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'")
    else:
        sql = ("SELECT table_name, column_name FROM information_schema.columns "
               "WHERE table_schema = current_schema()")
    out: dict[str, set[str]] = {}
    for table, column in conn.exec_driver_sql(sql):
        out.setdefault(table, set()).add(column)
    return out


def check_tables(found: dict[str, set[str]], ours: dict[str, set[str]], version: int | None, *, sqlite: bool,
                 create: bool, where: str, added_in: dict[tuple[str, str], int] | None = None) -> None:
    """Refuse a database whose tables are not statekit's (``found``), before anything is written to it."""
    if version is None:
        clash = sorted(set(found) & set(ours))
        if clash:
            raise StatekitError(
                f"{where} is not a statekit store: it has tables named {', '.join(clash)} but no "
                "statekit_meta. Use another database (or schema) for statekit; nothing was changed.")
        if found and sqlite and not create:
            names = sorted(found)
            raise StatekitError(
                f"{where} is not a statekit store: it holds other tables ({', '.join(names[:5])}"
                f"{', …' if len(names) > 5 else ''}). Pass create=True to add statekit's tables to it; "
                "nothing was changed.")
        return
    for name, columns in ours.items():
        later = {c for (t, c), v in (added_in or {}).items() if t == name and version < v}  # a migration adds them
        missing = columns - found.get(name, set()) - later
        if missing:
            raise StatekitError(
                f"{where} is not a usable statekit store: its table {name} "
                f"{'is missing' if name not in found else 'lacks the columns ' + ', '.join(sorted(missing))}. "
                "Nothing was changed.")


def explain(exc: BaseException, where: str) -> BaseException:
    """A driver error a user can meet (full disk, read-only, damaged file) as one StatekitError; else ``exc``."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0][:200] if str(orig).strip() else type(orig).__name__
    low = text.lower()
    code = getattr(orig, "sqlstate", None) or ""
    if "disk is full" in low or "no space left" in low or code == "53100":
        return StatekitError(f"The store's disk is full ({text}); nothing was written. Free some space and "
                             "try again: earlier versions are intact.")
    if "readonly database" in low or "read-only" in low or code in ("25006", "42501"):
        return ReadOnlyStoreError(f"This store cannot be written ({text}): it is read-only for you, so reading "
                             "works but nothing can be saved; nothing was changed.")
    if "not a database" in low or "malformed" in low or "disk i/o error" in low or "corrupt" in low:
        return IntegrityError(f"{where} is damaged or not a statekit store ({text}). Restore it "
                              "from a backup; nothing was changed.")
    if "state_snapshots.entity_id, state_snapshots.version" in text or "uq_state_snapshots_entity_version" in text:
        return IntegrityError(f"{where} is damaged: an entity's version counter is behind the versions it holds "
                              f"({text}). Run verify(); nothing was saved.")
    if "unable to open database" in low:
        return StatekitError(f"{where} cannot be opened ({text}); check that it is a file you may "
                             "read, in a folder you may enter.")
    return exc
