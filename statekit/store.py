"""StateManager: what users call to save, load, branch, roll back and inspect states.

A save encodes every value first (outside any transaction; a large frame or
array is only checked there and streamed into the transaction chunk by chunk),
then in one transaction takes the entity's next version number, checks the branch head
(``expected_version``), writes the chunks the store lacks, the snapshot row,
its chunk links, a transition and the new head, and commits. Nothing of a
failed save is visible. Observers run after the commit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4  # bound once: code that patches uuid.uuid4 (tests) never shifts our ids

import pandas as pd
import sqlalchemy as sa

from . import codecs, streaming, validate, writer
from .cache import CachedState, StateCache
from .db import DatabaseManager
from .errors import IntegrityError, InvalidArgumentError, NotFoundError
from .memo import FrameMemo
from .metrics import Metrics
from .models import (
    MAIN_BRANCH,
    SnapshotStatus,
    StateType,
)
from .observers import ObserverRegistry
from .repository import Repository, SnapshotRow
from .signing import SigningKey
from .snapshot import StateEvent, StateSnapshot, StateTransition
from .writer import SavePlan, StaleMemo, alive, lifetime


class StateManager:
    """A versioned state store on SQLite (default) or PostgreSQL.

    ``url`` is any SQLAlchemy URL; without one, ``$STATEKIT_URL`` or the SQLite
    file ``.statekit/state.db`` under the current directory. ``allow_pickle``
    lets saves fall back to signed pickles for values no codec handles.

    A new or empty SQLite file becomes a store; a SQLite file holding other
    tables is refused untouched unless ``create=True``. A store file you may
    not write is opened read-only: loads work, saves raise StatekitError.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        db: DatabaseManager | None = None,
        allow_pickle: bool = False,
        actor: str | None = None,
        cache_size: int = 256,
        cache_bytes: int = 512 * 1024 * 1024,
        durability: str = "full",
        lock_timeout: float = 60.0,
        create: bool = False,
    ):
        if url is not None and not isinstance(url, sa.engine.URL):
            validate.url(url)
        if db is not None and not isinstance(db, DatabaseManager):
            raise InvalidArgumentError(f"db must be a DatabaseManager, not {type(db).__name__}.")
        lock_timeout = validate.seconds(lock_timeout, "lock_timeout")  # type: ignore[assignment]
        cache_size = validate.count(cache_size, "cache_size")  # type: ignore[assignment]
        cache_bytes = validate.count(cache_bytes, "cache_bytes")  # type: ignore[assignment]
        self.allow_pickle = validate.flag(allow_pickle, "allow_pickle")
        self.actor = validate.actor(actor or validate.default_actor()) or "unknown"
        self.db = db if db is not None else DatabaseManager(url, durability=durability, lock_timeout=lock_timeout,
                                                            create=validate.flag(create, "create"))
        self.url = self.db.url
        self._repo = Repository(self.db)
        self._cache = StateCache(cache_size, cache_bytes)
        self._metrics = Metrics()
        self._observers = ObserverRegistry()
        self._memo = FrameMemo()
        self._key: SigningKey | None = None
        self._key_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StateManager({self.db.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()

    def __enter__(self) -> StateManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _signing_key(self) -> SigningKey:
        with self._key_lock:
            if self._key is None:
                self._key = SigningKey.load()
            return self._key

    # ================================================================= saving

    def save(
        self,
        entity_id: str,
        state: Mapping[str, Any],
        state_type: StateType | str | None = None,
        *,
        message: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        branch: str = MAIN_BRANCH,
        expected_version: int | None = None,
        expires_in: timedelta | float | str | None = None,
        status: SnapshotStatus | str = SnapshotStatus.ACTIVE,
        merge: bool = False,
        drop: Iterable[str] = (),
        allow_pickle: bool | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> StateSnapshot:
        """Save ``state`` (a mapping of names to values) as the next version on ``branch``.

        ``lineage`` (JSON: the code that produced this state, the names it read...) is kept with
        the version and returned by ``get(...).lineage``.

        ``expected_version`` is the head version this save must follow (0: the
        branch must be empty); if someone else moved the head, ConflictError.
        ``merge=True`` keeps the parent's values that ``state`` does not name,
        without reading or copying their bytes, except those listed in ``drop``. ``expires_in`` overrides the
        state type's default lifetime (``"never"`` for none).
        """
        started = time.perf_counter()
        drop_names = set(validate.item_names(drop, "drop"))
        try:
            plan = self._plan(entity_id, state, state_type, message=message, actor=actor,
                              metadata=metadata, branch=branch, expected_version=expected_version,
                              expires_in=expires_in, status=status, merge=merge, allow_pickle=allow_pickle)
            plan.drop = drop_names
            plan.lineage = self._lineage_text(plan.snapshot_id, lineage)
            try:
                snap, transition = self.db.run_hot(lambda cur, attempt: self._write(cur, attempt, plan), write=True)
            except (StaleMemo, streaming.StreamRefused) as exc:
                # remembered chunks were purged meanwhile (encode afresh), or a streamed value failed to
                # encode part-way (encode it whole, which refuses it or falls back to pickle, as it always did)
                refused = isinstance(exc, streaming.StreamRefused)
                if not refused:
                    self._memo.clear()
                plan = self._plan(entity_id, state, state_type, message=message, actor=actor,
                                  metadata=metadata, branch=branch, expected_version=expected_version,
                                  expires_in=expires_in, status=status, merge=merge, allow_pickle=allow_pickle,
                                  use_memo=refused, stream=not refused)
                plan.drop = drop_names
                plan.lineage = self._lineage_text(plan.snapshot_id, lineage)
                snap, transition = self.db.run_hot(lambda cur, attempt: self._write(cur, attempt, plan), write=True)
        except Exception:
            self._metrics.record("save", time.perf_counter() - started, error=True)
            raise
        self._after_save(plan, snap, transition, started)
        return snap

    def save_many(
        self,
        states: Mapping[str, Mapping[str, Any]],
        state_type: StateType | str | None = None,
        *,
        message: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        branch: str = MAIN_BRANCH,
        expires_in: timedelta | float | str | None = None,
        merge: bool = False,
    ) -> dict[str, StateSnapshot]:
        """Save several entities in one transaction: all of them or none."""
        if not isinstance(states, Mapping):
            raise InvalidArgumentError("save_many() takes a mapping of entity id to state.")
        for eid in states:  # every id is checked before any value is encoded
            validate.identifier(eid, "entity_id")
        started = time.perf_counter()

        def plan_all(**how: bool) -> list[SavePlan]:
            return [
                self._plan(eid, st, state_type, message=message, actor=actor, metadata=metadata, branch=branch,
                           expected_version=None, expires_in=expires_in, status=SnapshotStatus.ACTIVE,
                           merge=merge, allow_pickle=None, **how)
                for eid, st in states.items()
            ]

        plans = plan_all()

        def work(cur: Any, attempt: int) -> list[tuple[StateSnapshot, StateTransition]]:
            return [self._write(cur, attempt, p) for p in plans]

        try:
            results = self.db.run_hot(work, write=True)
        except streaming.StreamRefused:  # see save()
            plans = plan_all(stream=False)
            results = self.db.run_hot(work, write=True)
        out = {}
        for plan, (snap, transition) in zip(plans, results, strict=True):
            self._after_save(plan, snap, transition, started, record=False)
            out[plan.entity_id] = snap
        self._metrics.record("save_many", time.perf_counter() - started)
        return out

    def _plan(self, entity_id: str, state: Any, state_type: Any, *, message: Any, actor: Any,
              metadata: Any, branch: Any, expected_version: Any, expires_in: Any, status: Any,
              merge: bool, allow_pickle: bool | None, use_memo: bool = True, stream: bool = True) -> SavePlan:
        entity_id = validate.identifier(entity_id, "entity_id")
        branch = validate.identifier(branch, "branch")
        st = validate.state_type(state_type)
        if not isinstance(state, Mapping):
            raise InvalidArgumentError(
                f"state must be a mapping of names to values (a dict), not {type(state).__name__}."
            )
        names = [validate.item_name(n) for n in state]
        pickle_ok = self.allow_pickle if allow_pickle is None else validate.flag(allow_pickle, "allow_pickle")
        merge = validate.flag(merge, "merge")
        message = validate.optional_text(message, "message")
        actor = validate.actor(actor)
        metadata = validate.json_mapping(metadata, "metadata")
        expected_version = validate.optional_version(expected_version, "expected_version", allow_zero=True)
        expires_in = lifetime(expires_in)
        status = SnapshotStatus(validate.enum_value(status, SnapshotStatus, "status"))
        memo = None if use_memo is False else self._memo
        encoded = [codecs.encode_item(n, state[n], allow_pickle=pickle_ok, key=self._signing_key, memo=memo,
                                      stream=stream)
                   for n in names]
        return SavePlan(
            entity_id=entity_id,
            branch=branch,
            state_type=st,
            encoded=encoded,
            message=message,
            actor=actor or self.actor,
            metadata=metadata,
            expected_version=expected_version,
            expires_in=expires_in,
            status=status,
            merge=merge,
            snapshot_id=uuid4().hex,
            transition_id=uuid4().hex,
        )

    def _write(self, cur: Any, attempt: int, plan: SavePlan) -> tuple[StateSnapshot, StateTransition]:
        return writer.write_snapshot(self, cur, attempt, plan)

    def _after_save(self, plan: SavePlan, snap: StateSnapshot, transition: StateTransition,
                    started: float, record: bool = True) -> None:
        self._metrics.add("bytes_written", snap.new_bytes)
        self.db.note_write(snap.new_bytes)
        self._metrics.add("bytes_deduplicated", plan.deduplicated)
        if not plan.has_items and plan.inline_text is not None:
            # inline-only states are cached as their JSON text: immutable, so safe
            self._cache.put(CachedState(snap, snap.names, plan.inline_text, {}, len(plan.inline_text)))
        if record:
            self._metrics.record("save", time.perf_counter() - started)
        self._notify(StateEvent(transition.transition_type, snap.entity_id, snap.state_type, snap, transition))

    def _notify(self, event: StateEvent) -> None:
        if len(self._observers):
            failures = self._observers.notify(event)
            if failures:
                self._metrics.add("observer_errors", failures)

    # ================================================================= loading

    def load(
        self,
        entity_id: str,
        version: int | None = None,
        *,
        branch: str | None = None,
        names: Iterable[str] | None = None,
        include_expired: bool = False,
        as_of: datetime | str | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """The state of ``version`` (default: the head of ``branch``, default main) as a dict.

        ``as_of`` (a datetime, naive meaning UTC, or an ISO text): the head of ``branch`` as it was
        then; ``tag``: the version that tag names. Neither combines with ``version``.

        With both ``version`` and ``branch``, the version must be on that branch's line
        (its head, its parent, and so on back): NotFoundError otherwise. ``names``
        reads only those values; a name the version does not hold is a NotFoundError.
        """
        started = time.perf_counter()
        try:
            entity_id = validate.identifier(entity_id, "entity_id")
            if as_of is not None or tag is not None:
                version, branch = self._version_named(entity_id, version, branch, as_of, tag), None
            version = validate.optional_version(version, "version")
            on_line = branch is not None and version is not None
            branch = validate.branch(branch)
            only = set(validate.item_names(names)) if names is not None else None
            if version is not None and not on_line:
                sid = self._cache.lookup_version(entity_id, version)
                hit = self._cache.get(sid) if sid is not None else None
                if hit is not None and (include_expired or alive(hit.snapshot)):
                    _check_names(hit.snapshot, only)
                    state = hit.materialize(only)
                    self._metrics.record("load_cached", time.perf_counter() - started)
                    return state
            state = self.db.run_hot(
                lambda cur, _a: self._read_state(cur, entity_id, version, branch, only, include_expired, on_line),
                write=False,
            )
        except Exception:
            self._metrics.record("load", time.perf_counter() - started, error=True)
            raise
        self._metrics.record("load", time.perf_counter() - started)
        return state

    def load_many(self, entity_ids: Iterable[str], *, branch: str | None = None) -> dict[str, dict[str, Any]]:
        """The heads of several entities, read in one transaction: one consistent moment of the store."""
        if isinstance(entity_ids, (str, bytes)) or not isinstance(entity_ids, Iterable):
            raise InvalidArgumentError(
                f"load_many() takes a list of entity ids, not {type(entity_ids).__name__}; for one entity use load().")
        ids = validate.entity_ids(entity_ids)
        b = validate.branch(branch)

        def work(cur: Any, _a: int) -> dict[str, dict[str, Any]]:
            # the hot connection reads in autocommit: one explicit read transaction holds one snapshot
            cur.execute("BEGIN" if self.db.is_sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return {e: self._read_state(cur, e, None, b, None, False) for e in ids}
            finally:
                cur.execute("ROLLBACK")

        return self.db.run_hot(work, write=False)

    def _read_state(self, cur: Any, entity_id: str, version: int | None, branch: str,
                    only: set[str] | None, include_expired: bool, on_line: bool = False) -> dict[str, Any]:
        row = self._repo.read_snapshot(cur, entity_id, version, branch)
        if row is None or (on_line and not self._repo.on_line(cur, entity_id, branch, row.snapshot)):
            raise self._not_found(cur, entity_id, version, branch, on_line=row is not None)
        snap = row.snapshot
        if not include_expired and not alive(snap):
            raise NotFoundError(
                f"{entity_id!r} v{snap.version} expired at {snap.expires_at:%Y-%m-%d %H:%M} UTC; "
                "pass include_expired=True to read it until it is purged."
            )
        _check_names(snap, only)
        hit = self._cache.get(snap.snapshot_id)
        if hit is not None:
            return hit.materialize(only)
        if only is not None and not only >= set(row.items):  # decode just the names asked for
            return self._decode(cur, row, only).materialize(only)
        entry = self._decode(cur, row)
        self._cache.put(entry)
        return entry.materialize(only)

    def _decode(self, cur: Any, row: SnapshotRow, only: set[str] | None = None) -> CachedState:
        row.verify()
        snap = row.snapshot
        values: dict[str, Any] = {}

        def read(digests: list[str]) -> dict[str, bytes]:
            return self._repo.read_chunks(cur, digests, snap)

        for name, desc in row.items.items():
            if only is not None and name not in only:
                continue
            try:
                values[name] = codecs.decode_item(desc, read, self._signing_key)
            except codecs.IntegrityError as exc:
                if exc.snapshot_id is None:
                    exc.snapshot_id, exc.entity_id, exc.version = snap.snapshot_id, snap.entity_id, snap.version
                    exc.args = (f"Snapshot {snap.snapshot_id} ({snap.entity_id!r} v{snap.version}), "
                                f"value {name!r}: {exc.args[0]}",)
                raise
        return CachedState(snap, snap.names, row.state_text, values, max(snap.size_bytes, len(row.state_text)))

    def _not_found(self, cur: Any, entity_id: str, version: int | None, branch: str, *,
                   on_line: bool = False) -> NotFoundError | IntegrityError:
        cur.execute(self.db.sql("SELECT 1 FROM state_entities WHERE entity_id = :e"), {"e": entity_id})
        if cur.fetchone() is None:
            return NotFoundError(f"No entity {entity_id!r} in this store; see StateManager.entities().")
        if version is None:
            head = self._repo.branch_head(cur, entity_id, branch)
            if head is None:
                return NotFoundError(f"Entity {entity_id!r} has no branch {branch!r}; see branches({entity_id!r}).")
            if head[0] is None:
                return NotFoundError(f"{entity_id!r} has no version on branch {branch!r} (they expired).")
            return IntegrityError(
                f"Branch {branch!r} of {entity_id!r} points at snapshot {head[0]} (v{head[1]}), which is not in "
                "the store: it is damaged. Run verify(), then recover() or load an earlier version.",
                snapshot_id=head[0], entity_id=entity_id)
        if on_line:
            return NotFoundError(f"{entity_id!r} v{version} is not on branch {branch!r}'s line (its head and "
                                 f"the versions it descends from); load it without branch=, or see history().")
        cur.execute(self.db.sql("SELECT version FROM state_snapshots WHERE entity_id = :e ORDER BY version"),
                    {"e": entity_id})
        have = [v for (v,) in cur.fetchall() if isinstance(v, int)]
        return NotFoundError(f"Entity {entity_id!r} has no version {version} ({_version_ranges(have)}); "
                             "see history().")

    def get(self, entity_id: str, version: int | None = None, *, branch: str | None = None,
            include_expired: bool = False, as_of: datetime | str | None = None,
            tag: str | None = None) -> StateSnapshot:
        """A snapshot's metadata now (its checksum verified); its ``state`` is loaded on first access.

        ``branch`` with ``version``: the version must be on the branch's line, as in :meth:`load`.
        ``as_of`` and ``tag`` work as in :meth:`load`.
        """
        entity_id = validate.identifier(entity_id, "entity_id")
        if as_of is not None or tag is not None:
            version, branch = self._version_named(entity_id, version, branch, as_of, tag), None
        version = validate.optional_version(version, "version")
        on_line = branch is not None and version is not None
        b = validate.branch(branch)

        def work(cur: Any, _a: int) -> StateSnapshot:
            row = self._repo.read_snapshot(cur, entity_id, version, b)
            if row is None or (on_line and not self._repo.on_line(cur, entity_id, b, row.snapshot)):
                raise self._not_found(cur, entity_id, version, b, on_line=row is not None)
            if not include_expired and not alive(row.snapshot):
                raise NotFoundError(f"{entity_id!r} v{row.snapshot.version} has expired.")
            row.verify()
            return self._attach(row.snapshot)

        return self.db.run_hot(work, write=False)

    def _attach(self, snap: StateSnapshot) -> StateSnapshot:
        object.__setattr__(
            snap, "_loader",
            lambda: self.load(snap.entity_id, snap.version, include_expired=True),
        )
        object.__setattr__(snap, "_lineage_loader", lambda: self._read_lineage(snap))
        return snap

    def head_version(self, entity_id: str, branch: str | None = None) -> int | None:
        """The version at the head of ``branch`` (None when the entity or branch does not exist)."""
        entity_id = validate.identifier(entity_id, "entity_id")
        b = validate.branch(branch)

        def work(cur: Any, _a: int) -> int | None:
            head = self._repo.branch_head(cur, entity_id, b)
            return head[1] if head else None

        return self.db.run_hot(work, write=False)

    # ================================================================= history

    def history(self, entity_id: str, *, branch: str | None = None, include_expired: bool = False,
                limit: int | None = None, changed: str | None = None) -> pd.DataFrame:
        """One row per version (newest last); never reads payloads.

        ``changed="df"`` (or a key path, ``"params.lr"``): only the versions that changed it relative
        to their parent, with a ``changed`` column listing the items.
        """
        from . import queries

        entity_id = validate.identifier(entity_id, "entity_id")
        branch = validate.identifier(branch, "branch") if branch is not None else None
        include_expired = validate.flag(include_expired, "include_expired")
        limit = validate.count(limit, "limit", minimum=1, optional=True)
        started = time.perf_counter()
        frame = queries.history(self.db, entity_id, branch=branch, include_expired=include_expired, limit=limit)
        if changed is not None:
            frame = self._changed_only(entity_id, frame, changed, branch)
        self._metrics.record("history", time.perf_counter() - started)
        return frame

    def transitions(self, entity_id: str | None = None) -> pd.DataFrame:
        """The audit trail: one row per change, oldest first."""
        from . import queries

        eid = validate.identifier(entity_id, "entity_id") if entity_id is not None else None
        return queries.transitions(self.db, eid)

    def branches(self, entity_id: str) -> pd.DataFrame:
        """One row per branch: its name, head version and where it started."""
        from . import queries

        return queries.branches(self.db, validate.identifier(entity_id, "entity_id"))

    def entities(self) -> pd.DataFrame:
        """One row per entity: its type, number of versions, and last change."""
        from . import queries

        return queries.entities(self.db)

    # ================================================================= branches and rollback

    def create_branch(self, entity_id: str, name: str, from_version: int | None = None, *,
                      actor: str | None = None, reason: str | None = None) -> StateSnapshot:
        """Start branch ``name`` at ``from_version`` (default: the head of main). Returns its head."""
        from . import history_ops

        return history_ops.create_branch(self, entity_id, name, from_version, actor=actor, reason=reason)

    def rollback(self, entity_id: str, version: int | None = None, *, reason: str | None = None,
                 actor: str | None = None, branch: str | None = None,
                 expected_version: int | None = None) -> StateSnapshot:
        """Make a new version on ``branch`` whose state equals ``version``'s (default: the previous one).

        Nothing is deleted: the rolled-back versions stay in the history, and a
        rollback transition records who did it and why. ``expected_version`` works
        as in :meth:`save`.
        """
        from . import history_ops

        return history_ops.rollback(self, entity_id, version, reason=reason, actor=actor, branch=branch,
                                    expected_version=expected_version)

    def diff(self, entity_id: str, a: int | None = None, b: int | None = None, *,
             branch: str | None = None, max_rows: int = 1000) -> pd.DataFrame:
        """What changed from version ``a`` to ``b`` (default: head and its parent), one row per item.

        DataFrames list at most ``max_rows`` removed rows, added rows and changed
        cells each; a summary row counts the rest.
        """
        from . import history_ops

        return history_ops.diff(self, entity_id, a, b, branch=branch, max_rows=max_rows)

    # ================================================================= operating a store

    def verify(self, entity_id: str | None = None) -> pd.DataFrame:
        """Check every checksum, parent link, branch head and payload reference.

        Returns one row per problem found; an empty DataFrame means the store is healthy.
        """
        from . import maintenance

        return maintenance.verify(self, entity_id)

    def last_intact(self, entity_id: str, *, branch: str | None = None) -> StateSnapshot:
        """The newest version of ``entity_id`` whose checksums and payload all verify."""
        from . import maintenance

        return maintenance.last_intact(self, entity_id, branch=branch)

    def recover(self, entity_id: str, *, branch: str | None = None, actor: str | None = None,
                reason: str | None = None) -> StateSnapshot:
        """Make the last intact version the new head of ``branch``, recorded as a ``recover`` transition."""
        from . import maintenance

        return maintenance.recover(self, entity_id, branch, actor=actor, reason=reason)

    def purge_expired(self, *, now: datetime | None = None) -> pd.DataFrame:
        """Remove expired snapshots and the payload chunks only they used; returns what was removed."""
        from . import maintenance

        return maintenance.purge_expired(self, now=now)

    def backup(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a consistent, self-contained backup file while other writers keep saving."""
        from . import backup

        return backup.backup(self, validate.path(path, "The backup path"))

    def restore(self, path: str | os.PathLike[str], *, merge: bool = False) -> dict[str, Any]:
        """Load a backup file into this store (which must be empty unless ``merge=True``)."""
        from . import backup

        return backup.restore(self, validate.path(path, "The backup path"), merge=validate.flag(merge, "merge"))

    # ================================================================= history as data

    def tag(self, entity_id: str, name: str, version: int | None = None, *, actor: str | None = None,
            message: str | None = None) -> StateSnapshot:
        """Name ``version`` (default: the head of main) ``name``; a tag never moves (ConflictError if taken)."""
        from . import tags

        return tags.tag(self, entity_id, name, version, actor=actor, message=message)

    def tags(self, entity_id: str) -> pd.DataFrame:
        """One row per tag of ``entity_id``: tag, version, branch, snapshot_id, actor, message, created_at."""
        from . import tags

        return tags.tags(self, entity_id)

    def find(self, entities: Iterable[str] | str | None = None, name: str | None = None,
             where: Mapping[str, Any] | None = None, *, include_expired: bool = False) -> pd.DataFrame:
        """Every version (of ``entities``, default all) holding ``name`` whose inline JSON values match ``where``.

        ``where={"params.lr": 0.1}``; see :mod:`statekit.search` for what is searched.
        """
        from . import search

        return search.find(self, entities, name, where, include_expired=include_expired)

    def merge(self, entity_id: str, source: str, into: str = MAIN_BRANCH, *,
              resolve: Mapping[str, str] | None = None, message: str | None = None,
              actor: str | None = None) -> StateSnapshot:
        """Three-way merge of branch ``source`` into ``into`` from their common ancestor; a new version on ``into``.

        A value changed on both sides in the same place raises MergeConflictError (its ``conflicts``
        DataFrame lists them) and writes nothing; ``resolve={"name": "ours" | "theirs"}`` settles them.
        """
        from . import merge

        return merge.merge(self, entity_id, source, into, resolve=resolve, message=message, actor=actor)

    def retain(self, entity_id: str | None = None, *, keep_last: int | None = None,
               keep_within: timedelta | float | str | None = None, keep_daily: int | None = None,
               max_bytes: int | None = None, dry_run: bool = True, actor: str | None = None) -> pd.DataFrame:
        """The versions a retention policy removes (one row each: why, bytes freed); ``dry_run=False`` removes them.

        Never removes a branch head, a tagged version or an ancestor a merge needs.
        """
        from . import retention

        return retention.retain(self, entity_id, keep_last=keep_last, keep_within=keep_within,
                                keep_daily=keep_daily, max_bytes=max_bytes, dry_run=dry_run, actor=actor)

    def _lineage_text(self, snapshot_id: str, lineage: Mapping[str, Any] | None) -> str | None:
        from . import lineage as lin

        return lin.encode(snapshot_id, lineage)

    def _read_lineage(self, snap: StateSnapshot) -> dict[str, Any] | None:
        from . import lineage as lin

        return lin.read(self, snap)

    def _version_named(self, entity_id: str, version: Any, branch: str | None, as_of: Any, tag: Any) -> int:
        from . import timetravel

        return timetravel.resolve(self, entity_id, version, branch, as_of, tag)

    def _changed_only(self, entity_id: str, frame: pd.DataFrame, changed: str, branch: str | None) -> pd.DataFrame:
        from . import search

        found = search.changed_versions(self, entity_id, changed, branch)
        frame = frame[frame["version"].isin(list(found))].reset_index(drop=True)
        frame["changed"] = [tuple(found[int(v)]) for v in frame["version"]]
        return frame

    # ================================================================= observers and metrics

    def subscribe(self, callback: Callable[[StateEvent], object], state_type: StateType | str | None = None,
                  entity_id: str | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` after each committed change; returns a function that unsubscribes."""
        state_type = validate.state_type(state_type)
        entity_id = validate.identifier(entity_id, "entity_id") if entity_id is not None else None
        return self._observers.subscribe(callback, state_type, entity_id)

    def metrics(self, *, as_frame: bool = False) -> dict[str, Any] | pd.DataFrame:
        """Operation counts and latencies, cache hit rate, bytes written and deduplicated."""
        as_frame = validate.flag(as_frame, "as_frame")
        d = self._metrics.as_dict(self._cache.stats())
        d["frame_memo_hits"] = self._memo.hits
        return Metrics.as_frame(d) if as_frame else d

    @property
    def cache(self) -> StateCache:
        return self._cache


def _check_names(snap: StateSnapshot, only: set[str] | None) -> None:
    if only is not None and not only <= set(snap.names):
        missing = ", ".join(repr(n) for n in sorted(only - set(snap.names)))
        raise NotFoundError(f"{snap.entity_id!r} v{snap.version} holds no {missing}; it holds "
                            f"{', '.join(map(repr, snap.names)) or 'nothing'}.")


def _version_ranges(versions: list[int]) -> str:
    """'its versions are 1 to 4 and 6 to 10': the versions that exist, as runs."""
    if not versions:
        return "it has no versions left"
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    parts = [f"{a}" if a == b else f"{a} to {b}" for a, b in runs]
    shown = ", ".join(parts[:6]) + (f" and {len(parts) - 6} more runs" if len(parts) > 6 else "")
    return f"it has {len(versions)} version{'s' if len(versions) != 1 else ''}: {shown}"
