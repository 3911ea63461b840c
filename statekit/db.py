"""DatabaseManager: the engine, the schema, transactions and retries.

SQLite is tuned for a state store: WAL (readers never block the writer),
``synchronous=FULL`` (a returned save is on disk), a busy timeout, and write
transactions that start with ``BEGIN IMMEDIATE`` so two writers queue for the
lock instead of deadlocking on an upgrade. Lock and connection errors are
retried with backoff up to ``lock_timeout`` seconds; past that the error
reaches the caller.

Opening never harms what it opens. A SQLite path must be a new or empty file,
or a SQLite database (a text file, a folder or a symlink to /etc/passwd is
refused before SQLite touches it). A database that holds tables but no
``statekit_meta`` is refused unchanged (bytes and journal mode) unless
``create=True``; one holding a table named like statekit's (``state_snapshots``...)
without ``statekit_meta`` is refused even then, on PostgreSQL too, where a
schema with only unrelated tables is used as it is (shared schemas are common
there). A newer schema, or statekit tables missing columns, are refused before
anything is written; only then is the file switched to WAL. A SQLite file or
folder the user may not write is opened read-only (``mode=ro``; no WAL switch,
no checkpointer): reads work and a save is one StatekitError. Driver errors a
user can meet (a full disk, a read-only store, a damaged file) leave
``run_hot``/``run_write`` as one StatekitError line (:meth:`DatabaseManager.user_error`).

The hot paths (save, load) run a handful of prepared SQL statements on the
driver's cursor inside SQLAlchemy's transaction: an ORM session per save costs
several times a raw insert. Everything else uses SQLAlchemy Core.
"""

from __future__ import annotations

import functools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from . import models, storefile
from .checkpoint import Checkpointer
from .errors import InvalidArgumentError, SchemaVersionError, StatekitError

T = TypeVar("T")

ENV_URL = "STATEKIT_URL"
DEFAULT_PATH = Path(".statekit") / "state.db"
SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
ALL_TABLES = [
    models.meta_table,
    models.entities_table,
    models.branches_table,
    models.snapshots_table,
    models.transitions_table,
    models.payloads_table,
    models.links_table,
]
BUSY_TIMEOUT_MS = 200
"""How long SQLite itself waits for a lock before the retry loop (bounded by lock_timeout) takes over."""
PURGE_LOCK_KEY = 0x5737A7E  # PostgreSQL advisory lock: savers share it, purge takes it alone
SCHEMA_LOCK_KEY = 0x5737A7F

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}
"""``MIGRATIONS[n]`` upgrades a store from schema n to n + 1, in one transaction."""


def resolve_url(url: str | None) -> str:
    """The explicit URL, else ``$STATEKIT_URL``, else ``sqlite:///.statekit/state.db``."""
    if url is None:
        url = os.environ.get(ENV_URL) or f"sqlite:///{DEFAULT_PATH}"
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgumentError(f"The store URL must be a non-empty string, not {url!r}.")
    if _CONTROL.search(url):
        raise InvalidArgumentError(f"The store URL {url!r} holds control characters; check it.")
    if "://" not in url:  # a bare path to a SQLite file
        if ":" in (url[2:] if _DRIVE.match(url) else url):
            raise InvalidArgumentError(
                f"{url!r} is neither a database URL (sqlite:///path/to/state.db, postgresql+psycopg://...) "
                "nor a plain path to a store file; check it (a path with ':' in it goes as sqlite:///path)."
            )
        if url.endswith(("/", os.sep)):
            raise InvalidArgumentError(f"{url!r} names a folder; name the store file in it (e.g. {url}state.db).")
        url = f"sqlite:///{url}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        make_url(url)
    except sa.exc.ArgumentError:
        raise InvalidArgumentError(f"{url!r} is not a valid database URL; check it.") from None
    return url


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: Any) -> datetime | None:
    """Timestamps come back naive (SQLite) or aware (PostgreSQL); hand out aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _user_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Driver errors a user can meet (disk full, read-only, damaged file) leave as one StatekitError."""

    @functools.wraps(method)
    def wrapper(self: DatabaseManager, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except self.driver_errors as exc:
            mapped = self.user_error(exc)
            if mapped is exc:
                raise
            raise mapped from None

    return wrapper


class DatabaseManager:
    """Owns the engine, creates or upgrades the schema, and runs transactions.

    Public for advanced use: several ``StateManager`` objects may share one, and
    maintenance code can use :meth:`write` and :meth:`read` directly.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        durability: str = "full",
        lock_timeout: float = 60.0,
        engine: Engine | None = None,
        create: bool = False,
    ):
        if durability not in ("full", "normal"):
            raise InvalidArgumentError("durability must be 'full' (fsync every save) or 'normal'.")
        self.durability = durability
        self.create = bool(create)  # allow making a store in a SQLite file that holds other tables
        self.read_only = False  # a SQLite file or folder we may not write: opened mode=ro, never changed
        self._wal = False  # switch a SQLite file to WAL only once it is known to be a statekit store
        self.checkpointer: Checkpointer | None = None
        self.lock_timeout = float(lock_timeout)
        if engine is not None:
            self.engine = engine
            self.url = engine.url.render_as_string(hide_password=False)
        else:
            self.url = resolve_url(url)
            self.engine = self._create_engine(self.url)
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidArgumentError(
                f"statekit supports SQLite and PostgreSQL, not {self.dialect!r}."
            )
        self.is_sqlite = self.dialect == "sqlite"
        self._sql_cache: dict[str, str] = {}
        self._hot: list[Any] = []
        self._hot_lock = threading.Lock()
        self._hot_pid = os.getpid()
        self._begin_write = "BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN"
        # A store with one shared connection (in-memory SQLite) cannot run two transactions at once:
        # every transaction on it holds this lock (re-entrant, so a transaction may call run_hot).
        self._serial_lock = threading.RLock() if isinstance(self.engine.pool, StaticPool) else None
        self._driver_errors: tuple[type[BaseException], ...] = (self.engine.dialect.loaded_dbapi.Error,)
        try:
            self.ensure_schema()
        except BaseException:
            self.dispose()
            raise

    @property
    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exception classes (sqlite3.Error or psycopg.Error), and SQLAlchemy's wrapper."""
        return (*self._driver_errors, DBAPIError)

    # ------------------------------------------------------------ engine

    def _create_engine(self, url: str) -> Engine:
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            database = u.database
            kwargs: dict[str, Any] = {}
            if not database or database == ":memory:":
                kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            else:
                path = Path(database)
                self.read_only = storefile.prepare_sqlite_file(path)
                kwargs = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}}
                if self.read_only:  # never write, never create -wal/-shm files we could not remove
                    kwargs = {"creator": storefile.read_only_connector(path, BUSY_TIMEOUT_MS / 1000)}
                else:
                    self.checkpointer = Checkpointer(database)
            engine = sa.create_engine(u, **kwargs)
            self._install_sqlite_hooks(engine, in_memory=not database or database == ":memory:")
            return engine
        if u.get_backend_name() == "postgresql":
            try:
                return sa.create_engine(u, pool_pre_ping=True)
            except ModuleNotFoundError as exc:  # the driver is an optional extra
                raise InvalidArgumentError(
                    f"The PostgreSQL driver {exc.name!r} is not installed. Use a postgresql+psycopg:// URL "
                    'and install its driver with: pip install "statekit[postgres]"'
                ) from None
        raise InvalidArgumentError(
            f"statekit supports SQLite and PostgreSQL URLs, not {u.get_backend_name()!r}."
        )

    def _install_sqlite_hooks(self, engine: Engine, in_memory: bool) -> None:
        sync = "FULL" if self.durability == "full" else "NORMAL"

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if not in_memory and not self.read_only:  # per connection: nothing here writes to the file
                cur.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint.py does it off the save path
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # short: run_hot's retries keep the bound
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = "IMMEDIATE" if conn.info.get("statekit_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

    def dispose(self) -> None:
        with self._hot_lock:
            hot, self._hot = self._hot, []
            mine = self._hot_pid == os.getpid()
        if mine:
            for raw in hot:
                self._return_to_pool(raw)
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()

    def note_write(self, nbytes: int) -> None:
        """Tell the checkpointer a commit wrote about ``nbytes`` (SQLite files only)."""
        if self.checkpointer is not None:
            self.checkpointer.note_write(nbytes)

    # ------------------------------------------------------------ transactions

    @contextmanager
    def _serial(self) -> Iterator[None]:
        """Hold the shared connection's lock while a transaction runs on it (in-memory SQLite only)."""
        if self._serial_lock is None:
            yield
            return
        with self._serial_lock:
            yield

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (no retry: see :meth:`run_write`)."""
        with self._serial(), self.engine.connect() as conn:
            conn.info["statekit_write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info["statekit_write"] = False

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent view of the store."""
        with self._serial(), self.engine.connect() as conn:
            conn.info["statekit_write"] = False
            with conn.begin():
                yield conn

    def run_write(self, fn: Callable[[Connection, int], T]) -> T:
        """Run ``fn(conn, attempt)`` in a write transaction, retrying lock and connection errors.

        ``attempt`` counts from 0; a retried ``fn`` must check whether its
        earlier attempt committed after all (the connection may have died
        after the commit reached the server).
        """
        return self._retry(fn, write=True)

    def run_read(self, fn: Callable[[Connection, int], T]) -> T:
        return self._retry(fn, write=False)

    @_user_errors
    def _retry(self, fn: Callable[[Connection, int], T], *, write: bool) -> T:
        deadline = time.monotonic() + self.lock_timeout
        attempt = 0
        delay = 0.002
        while True:
            try:
                with (self.write() if write else self.read()) as conn:
                    return fn(conn, attempt)
            except DBAPIError as exc:
                if not self.is_retryable(exc) or time.monotonic() + delay > deadline:
                    if self.is_retryable(exc):
                        raise StatekitError(
                            f"The store stayed busy for {self.lock_timeout:g} s "
                            f"({_short(exc)}); try again, or raise lock_timeout."
                        ) from exc
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)
            attempt += 1

    def is_retryable(self, exc: DBAPIError) -> bool:
        if exc.connection_invalidated:
            return True
        if self.is_sqlite:
            text = str(exc.orig).lower()
            return "locked" in text or "busy" in text
        code = getattr(exc.orig, "sqlstate", None) or ""
        return code in ("40001", "40P01", "57P01", "57P02", "57P03") or code.startswith("08")

    # ------------------------------------------------------------ hot paths on the driver connection

    @_user_errors
    def run_hot(self, fn: Callable[[Any, int], T], *, write: bool) -> T:
        """Run ``fn(cursor, attempt)`` on a driver connection, retrying lock and connection errors.

        The connection comes from a small stack of connections checked out of
        SQLAlchemy's pool (``engine.raw_connection()``) and kept in autocommit
        mode: a write is an explicit ``BEGIN [IMMEDIATE]`` ... ``COMMIT``, a read is
        one or two plain statements. This skips the pool checkout and event
        dispatch that cost more than the statements themselves on a 1 KB save.
        """
        deadline = time.monotonic() + self.lock_timeout
        attempt = 0
        delay = 0.002
        while True:
            with self._serial():  # the sleep below runs outside it
                raw = self._acquire()
                healthy = True
                try:
                    cur = raw.driver_connection.cursor()
                    try:
                        if not write:
                            return fn(cur, attempt)
                        cur.execute(self._begin_write)
                        try:
                            result = fn(cur, attempt)
                            cur.execute("COMMIT")
                        except BaseException:
                            try:
                                cur.execute("ROLLBACK")
                            except Exception:  # noqa: BLE001 - the connection is gone; it is dropped below
                                healthy = False
                            raise
                        return result
                    finally:
                        try:
                            cur.close()
                        except Exception:  # noqa: BLE001
                            healthy = False
                except self._driver_errors as exc:
                    retry = self._raw_retryable(exc)
                    if self._connection_broken(exc):
                        healthy = False
                    if not retry:
                        raise
                    if time.monotonic() + delay > deadline:
                        raise StatekitError(
                            f"The store stayed busy for {self.lock_timeout:g} s ({_short(exc)}); "
                            "try again, or raise lock_timeout."
                        ) from exc
                finally:
                    self._release(raw, healthy)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)
            attempt += 1

    def _acquire(self) -> Any:
        with self._hot_lock:
            if self._hot_pid != os.getpid():  # never share driver connections across fork()
                self._hot = []
                self._hot_pid = os.getpid()
            if self._hot:
                return self._hot.pop()
        raw = self.engine.raw_connection()
        if not self.is_sqlite:
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
        return raw

    def _release(self, raw: Any, healthy: bool) -> None:
        if not healthy and self._serial_lock is None:  # closing an in-memory store's one connection loses it
            raw.invalidate()
            return
        with self._hot_lock:
            if self._hot_pid == os.getpid() and len(self._hot) < 4:
                self._hot.append(raw)
                return
        self._return_to_pool(raw)

    def _return_to_pool(self, raw: Any) -> None:
        try:
            if not self.is_sqlite:
                raw.driver_connection.autocommit = False
            raw.close()
        except Exception:  # noqa: BLE001 - a dead connection: drop it
            raw.invalidate()

    def _raw_retryable(self, exc: BaseException) -> bool:
        if self.is_sqlite:
            text = str(exc).lower()
            return "locked" in text or "busy" in text
        code = getattr(exc, "sqlstate", None) or ""
        return self._connection_broken(exc) or code in ("40001", "40P01", "57P01", "57P02", "57P03") \
            or code.startswith("08")

    def _connection_broken(self, exc: BaseException) -> bool:
        if self.is_sqlite:
            return False
        import psycopg

        return isinstance(exc, psycopg.OperationalError) and (
            getattr(exc, "sqlstate", None) in (None, "57P01", "57P02", "57P03") or
            str(getattr(exc, "sqlstate", "") or "").startswith("08")
        )

    # ------------------------------------------------------------ raw SQL for hot paths

    def sql(self, text: str) -> str:
        """``text`` with ``:name`` parameters, in this driver's paramstyle."""
        if self.is_sqlite:
            return text
        out = self._sql_cache.get(text)
        if out is None:
            out = re.sub(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)", r"%(\1)s", text)
            self._sql_cache[text] = out
        return out

    @staticmethod
    def cursor(conn: Connection) -> Any:
        """The DBAPI cursor on this connection, inside its current transaction."""
        return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as this driver stores it (naive-UTC text on SQLite, as SQLAlchemy does)."""
        if value is None:
            return None
        if self.is_sqlite:  # the text SQLAlchemy's SQLite DateTime reads and writes (naive UTC)
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return value

    def json_param(self, text: str) -> Any:
        return text

    def lock_for_save(self, cur: Any) -> None:
        """On PostgreSQL, keep purge from deleting chunks this save reuses (shared lock)."""
        if not self.is_sqlite:
            cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PURGE_LOCK_KEY,))

    def lock_for_purge(self, conn: Connection) -> None:
        if not self.is_sqlite:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PURGE_LOCK_KEY})")

    # ------------------------------------------------------------ schema

    def ensure_schema(self) -> None:
        """Create the tables in a new store, upgrade an older one, refuse a newer one or a foreign database.

        A store already at this schema is only read, so opening one never waits
        behind a writer; creating or upgrading takes the write lock and checks again.
        Nothing is written (not even SQLite's journal mode) before the database is
        known to be a statekit store, or empty, or ``create=True`` was given.
        """
        try:
            with self.read() as conn:
                current = self._stored_version(conn)
                self._check_tables(conn, current)
        except self.driver_errors as exc:
            raise self.user_error(exc) from None
        if current == models.SCHEMA_VERSION or (self.read_only and current is not None
                                                 and READABLE_FROM <= current < models.SCHEMA_VERSION):
            self._use_wal()
            return
        if self.read_only:
            raise StatekitError(
                f"{self.url} is read-only and holds no statekit store of this version "
                f"(schema {current}); nothing was changed.")

        def work(conn: Connection, _attempt: int) -> None:
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
            found = self._stored_version(conn)
            self._check_tables(conn, found)
            if found is None:
                models.SQLModel.metadata.create_all(conn, tables=ALL_TABLES)
                _create_views(conn)
                if not self.is_sqlite:  # chunks are mostly compressed already: skip pglz, store out of line
                    conn.exec_driver_sql("ALTER TABLE state_payloads ALTER COLUMN data SET STORAGE EXTERNAL")
                conn.execute(
                    models.meta_table.insert(),
                    [{"key": "schema_version", "value": str(models.SCHEMA_VERSION)},
                     {"key": "created_at", "value": utcnow().isoformat()}],
                )
                return
            while found < models.SCHEMA_VERSION:
                MIGRATIONS[found](conn)
                found += 1
                conn.execute(
                    models.meta_table.update()
                    .where(models.meta_table.c.key == "schema_version")
                    .values(value=str(found))
                )

        self._use_wal()
        try:
            self.run_write(work)
        except storefile.ReadOnlyStoreError:
            if current is None or current < READABLE_FROM:
                raise
            # a role that may only read an older store (PostgreSQL): read it as it is, until its owner upgrades it

    def _use_wal(self) -> None:
        """Switch a writable SQLite file to WAL (persistent), once it is known to be a statekit store."""
        if not self.is_sqlite or self.read_only or self.checkpointer is None or self._wal:
            return
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA journal_mode=WAL").fetchall()  # type: ignore[union-attr]
        except self._driver_errors as exc:
            raise self.user_error(exc) from None
        finally:
            raw.close()
        self._wal = True

    def _stored_version(self, conn: Connection) -> int | None:
        if not sa.inspect(conn).has_table(models.meta_table.name):
            return None
        row = conn.execute(
            sa.select(models.meta_table.c.value).where(models.meta_table.c.key == "schema_version")
        ).first()
        try:
            found = int(row[0]) if row else None
        except (TypeError, ValueError):
            found = None
        if found is None or found < 1:
            raise StatekitError(f"{self._where()} has a statekit_meta table without a readable schema version; "
                                "it is damaged or not a statekit store. Nothing was changed.")
        if found > models.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"This store uses schema version {found}, newer than this statekit "
                f"understands ({models.SCHEMA_VERSION}). Upgrade statekit "
                "(pip install -U statekit) to open it; nothing was changed."
            )
        return found

    def _check_tables(self, conn: Connection, version: int | None) -> None:
        """Refuse a database whose tables are not statekit's: it must not be changed, or misread."""
        ours = {t.name: {c.name for c in t.columns} for t in ALL_TABLES}
        storefile.check_tables(storefile.table_columns(conn, self.is_sqlite), ours, version, sqlite=self.is_sqlite,
                               create=self.create, where=self._where(), added_in=ADDED_IN)

    def _where(self) -> str:
        u = self.engine.url
        return f"The file {u.database}" if self.is_sqlite else f"The database {u.render_as_string(hide_password=True)}"

    def user_error(self, exc: BaseException) -> BaseException:
        """A driver error a user can meet (full disk, read-only or damaged file...) as one StatekitError line.

        Errors statekit cannot explain are returned unchanged.
        """
        return storefile.explain(exc, self._where())

    def schema_version(self) -> int:
        with self.read() as conn:
            found = self._stored_version(conn)
        return found or 0


MIGRATIONS[1] = storefile.upgrade_checksums


def _upgrade_history(conn: Connection) -> None:
    """Schema 2 -> 3: the ``changed`` and ``lineage`` columns and the history views (see history_schema.py)."""
    from .history_schema import upgrade

    upgrade(conn)


def _create_views(conn: Connection) -> None:
    from .history_schema import create_find_index, create_views

    create_views(conn)
    create_find_index(conn)


MIGRATIONS[2] = _upgrade_history
ADDED_IN = {("state_snapshots", "changed"): 3, ("state_snapshots", "lineage"): 3}
"""Columns a migration adds: an older store lacks them until it is upgraded."""
READABLE_FROM = 1
"""The oldest schema a read-only store may have and still be read (schema 1 differs only in checksum format)."""


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    return str(orig).strip().splitlines()[0][:200]
