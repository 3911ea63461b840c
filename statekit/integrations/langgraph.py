"""A LangGraph checkpointer that keeps every checkpoint as a statekit version.

    from statekit.integrations.langgraph import StatekitSaver
    graph = builder.compile(checkpointer=StatekitSaver("postgresql://…"))

Each thread is an entity (``langgraph:{thread_id}``, subgraph namespaces get
``langgraph:{thread_id}/{ns}``) and each checkpoint one version of it, written
by one save, whose message gives the step and source: ``sm.history()``,
``%state log`` and the panel show the run. A checkpoint whose parent is no
longer the head of its branch (``update_state`` on a past checkpoint, a
replay) starts the branch ``fork-{checkpoint id}`` at the parent's version, so
``sm.branches()`` shows LangGraph's forks. Pending writes go to
``langgraph:{thread_id}#writes``, one version per ``put_writes``.

Channel values that are plain JSON are stored as they are (readable, diffable,
queryable from SQL); other values go through LangGraph's serializer. Loading
rebuilds the graph's own types (pydantic models, dataclasses, enums, langchain
messages) from values this saver wrote with your statekit signing key, and
only LangGraph's safe types from anything else, so loading a checkpoint someone
else wrote runs none of their code; nothing is ever unpickled (the trust rule is
spelled out in :mod:`.langgraph_serde`). A channel unchanged since the parent
checkpoint is carried over by reference (``merge=True``), not re-encoded.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_serializable_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        'statekit.integrations.langgraph needs LangGraph; install it with: pip install "statekit[langgraph]"'
    ) from exc

from ..errors import ConflictError, InvalidArgumentError
from ..models import StateType
from ..repository import SnapshotRow
from ..snapshot import StateSnapshot
from ..store import StateManager
from .langgraph_rows import CHECKPOINT_ITEM, ThreadRows, thread_entity, writes_entity
from .langgraph_serde import ValueCodec

__all__ = ["StatekitSaver"]

_LIST_BATCH = 64


@dataclass(frozen=True)
class _Known:
    """Where a checkpoint is stored, and what a child checkpoint needs to carry its channels over."""

    version: int
    branch: str
    channel_versions: dict[str, Any]
    channels: frozenset[str]


class StatekitSaver(BaseCheckpointSaver[Any]):
    """LangGraph's ``BaseCheckpointSaver`` on a statekit store (SQLite or PostgreSQL).

    ``store`` is a :class:`~statekit.StateManager`, a store URL, or None for
    the default store. ``serde`` replaces LangGraph's strict msgpack serializer
    (and with it the signed class lists of :mod:`.langgraph_serde`).
    Entities are named ``{prefix}:{thread_id}``, saved as ``state_type`` (never
    expiring by default) by ``actor``.
    """

    def __init__(
        self,
        store: StateManager | str | None = None,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "langgraph",
        actor: str = "langgraph",
        state_type: StateType | str = StateType.AGENT_STATE,
        cache_size: int = 4096,
    ) -> None:
        super().__init__(serde=serde or JsonPlusSerializer(allowed_msgpack_modules=None))
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in ":/#%~"):
            raise InvalidArgumentError(f"prefix must be a non-empty name without ':/#%~', not {prefix!r}.")
        self._owns_store = not isinstance(store, StateManager)
        self.sm = store if isinstance(store, StateManager) else StateManager(store)
        self.prefix = prefix
        self.actor = actor
        self.state_type = StateType(state_type)
        self._rows = ThreadRows(self.sm.db)
        self._codec = ValueCodec(sign=serde is None)
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[str, str], _Known] = OrderedDict()
        self._heads: dict[tuple[str, str], int] = {}
        self._cache_size = cache_size

    def close(self) -> None:
        """Release the store's connections if this saver opened the store."""
        if self._owns_store:
            self.sm.close()

    def __enter__(self) -> StatekitSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> StatekitSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def get_next_version(self, current: Any, channel: None = None) -> Any:
        """The version after ``current``, of the same kind, so a thread copied from any saver can go on.

        Integers (statekit's own, from ``1``) and floats go up by one. A string
        (SqliteSaver, PostgresSaver and InMemorySaver write ``"<32-digit counter>.<random>"``)
        gets the next counter in the same shape; a string of another shape gets
        a suffix, which still sorts after it. LangGraph only compares versions of
        one kind, so the kind a thread started with is kept.
        """
        if current is None:
            return 1
        if isinstance(current, bool) or not isinstance(current, int | float | str):
            raise InvalidArgumentError(f"A channel version must be an int, float or str, not {current!r}.")
        if not isinstance(current, str):
            return current + 1
        head = current.split(".", 1)[0]
        if head.isascii() and head.isdigit():
            following = f"{int(head) + 1:0{max(len(head), 32)}}.{random.random():016}"
            if following > current:
                return following
        return current + ".1"

    def _pack(self, value: Any) -> Any:
        return self._codec.pack(self.serde, value)

    def _unpack(self, stored: Any) -> Any:
        return self._codec.unpack(self.serde, stored)

    def entity_id(self, thread_id: str, checkpoint_ns: str = "") -> str:
        """The statekit entity holding this thread's checkpoints (for ``sm.history()``, ``sm.branches()``)."""
        return thread_entity(self.prefix, str(thread_id), checkpoint_ns)

    def writes_entity_id(self, thread_id: str) -> str:
        """The statekit entity holding this thread's pending writes."""
        return writes_entity(self.prefix, str(thread_id))

    # ------------------------------------------------------------------ caches

    def _remember(self, entity: str, checkpoint_id: str, known: _Known) -> None:
        with self._lock:
            self._known[(entity, checkpoint_id)] = known
            self._known.move_to_end((entity, checkpoint_id))
            while len(self._known) > self._cache_size:
                self._known.popitem(last=False)

    def _recall(self, entity: str, checkpoint_id: str | None) -> _Known | None:
        if checkpoint_id is None:
            return None
        with self._lock:
            return self._known.get((entity, checkpoint_id))

    def _forget(self, entities: Sequence[str]) -> None:
        gone = set(entities)
        with self._lock:
            for key in [k for k in self._known if k[0] in gone]:
                del self._known[key]
            for key in [k for k in self._heads if k[0] in gone]:
                del self._heads[key]

    # ------------------------------------------------------------------ writing

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        """Save ``checkpoint`` as the next version of its thread (or of a fork branch): one statekit save."""
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns") or ""
        parent_id = conf.get("checkpoint_id")
        entity = self.entity_id(thread_id, ns)
        values = checkpoint.get("channel_values") or {}
        if CHECKPOINT_ITEM in values:
            raise InvalidArgumentError(f"The channel name {CHECKPOINT_ITEM!r} is reserved by StatekitSaver.")
        versions = dict(checkpoint.get("channel_versions") or {})
        parent = self._parent(entity, parent_id) if parent_id else None
        if parent is None:
            changed = list(values)
        else:  # LangGraph bumps a channel's version whenever its value changes
            changed = [
                ch for ch in values
                if ch in new_versions or ch not in parent.channels or versions.get(ch) is None
                or versions.get(ch) != parent.channel_versions.get(ch)
            ]
        state = {CHECKPOINT_ITEM: self._pack({k: v for k, v in checkpoint.items() if k != "channel_values"})}
        state.update((ch, self._pack(values[ch])) for ch in changed)
        lg_meta = _json_metadata(get_serializable_checkpoint_metadata(config, metadata))
        meta = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"],
                "parent_checkpoint_id": parent_id, "langgraph": lg_meta}
        snap = self._save(entity, state, meta, _message(lg_meta, checkpoint, new_versions), parent,
                          drop=sorted(parent.channels - values.keys()) if parent else [])
        self._remember(entity, checkpoint["id"], _Known(snap.version, snap.branch, versions, frozenset(values)))
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def _parent(self, entity: str, parent_id: str) -> _Known | None:
        known = self._recall(entity, parent_id)
        if known is not None:
            return known

        def work(conn: Any, _attempt: int) -> tuple[SnapshotRow, Any] | None:
            row = self._rows.checkpoint(conn, entity, parent_id)
            if row is None:
                return None
            return row, self._rows.decode(conn, row, [CHECKPOINT_ITEM]).get(CHECKPOINT_ITEM, {})

        found = self._rows.read(work)
        if found is None:
            return None
        row, skeleton = found
        known = _known_from(row.snapshot, self._unpack(skeleton))
        self._remember(entity, parent_id, known)
        return known

    def _save(self, entity: str, state: dict[str, Any], meta: dict[str, Any], message: str,
              parent: _Known | None, drop: list[str]) -> StateSnapshot:
        common: dict[str, Any] = {"state_type": self.state_type, "message": message, "actor": self.actor,
                                  "metadata": meta}
        snap: StateSnapshot | None = None
        if parent is None:
            snap = self.sm.save(entity, state, **common)
        else:
            with self._lock:
                head = self._heads.get((entity, parent.branch))
            if head is None or head <= parent.version:  # the parent may still be its branch's head
                try:
                    snap = self.sm.save(entity, state, branch=parent.branch, expected_version=parent.version,
                                        merge=True, drop=drop, **common)
                except ConflictError:
                    snap = None
            if snap is None:  # the parent has children already: a fork
                branch = f"fork-{meta['checkpoint_id']}"
                with contextlib.suppress(ConflictError):  # an earlier attempt of this put created it
                    self.sm.create_branch(entity, branch, parent.version, actor=self.actor,
                                          reason=f"LangGraph fork from checkpoint {meta['parent_checkpoint_id']}")
                snap = self.sm.save(entity, state, branch=branch, expected_version=parent.version,
                                    merge=True, drop=drop, **common)
        assert snap is not None
        with self._lock:
            self._heads[(entity, snap.branch)] = snap.version
        return snap

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        """Record a task's writes for a checkpoint: one save on the thread's writes entity."""
        if not writes:
            return
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        state: dict[str, Any] = {}
        for idx, (channel, value) in enumerate(writes):
            state[f"{WRITES_IDX_MAP.get(channel, idx)}:{channel}"] = self._pack(value)
        meta = {
            "thread_id": thread_id, "checkpoint_ns": conf.get("checkpoint_ns") or "",
            "checkpoint_id": str(conf["checkpoint_id"]), "task_id": task_id, "task_path": task_path,
            "replace": all(ch in WRITES_IDX_MAP for ch, _ in writes),
        }
        node = task_path.rsplit(", ", 1)[-1] if task_path else f"task {task_id[:8]}"
        channels = ", ".join(dict.fromkeys(ch for ch, _ in writes))
        self.sm.save(self.writes_entity_id(thread_id), state, self.state_type, actor=self.actor, metadata=meta,
                     message=f"{node} wrote {channels} (checkpoint {meta['checkpoint_id']})")

    # ------------------------------------------------------------------ reading

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (the thread's newest without a checkpoint_id), with its pending writes."""
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns") or ""
        cid = get_checkpoint_id(config) or None  # "" means the newest, as in LangGraph's own savers
        entity = self.entity_id(thread_id, ns)
        known = self._recall(entity, cid)

        def work(conn: Any, _attempt: int) -> list[Any]:
            row = self._rows.checkpoint(conn, entity, cid, known.version if known else None)
            return self._rows.gather(conn, self.prefix, [row]) if row is not None else []

        found = self._rows.read(work)
        return self._tuple(entity, *found[0]) if found else None

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first (by checkpoint id), filtered by thread, namespace, metadata and ``before``.

        Candidates are chosen from their metadata alone; payloads are then read
        in batches, only for the ones returned.
        """
        thread_id = ns = cid = None
        if config is None:
            entities: list[str] | None = None
            prefixes = [f"{self.prefix}:"]
        else:
            conf = config.get("configurable", {})
            thread_id = str(conf["thread_id"])
            ns = conf.get("checkpoint_ns")
            cid = get_checkpoint_id(config) or None  # "": no checkpoint filter, as in LangGraph's own savers
            root = self.entity_id(thread_id)
            entities, prefixes = ([root], [root + "/"]) if ns is None else ([self.entity_id(thread_id, ns)], [])
        before_id = get_checkpoint_id(before) if before is not None else None

        def candidates(conn: Any, _attempt: int) -> tuple[list[Any], dict[str, Any]]:
            light = self._rows.listing(conn, entities, prefixes)
            threads = {m["thread_id"] for *_x, m in light}
            return light, {t: self._rows.writes_index(conn, self.writes_entity_id(t)) for t in threads}

        light, index = self._rows.read(candidates)
        chosen: dict[tuple[str, str], tuple[str, str, int, dict[str, Any]]] = {}
        for sid, eid, version, meta in light:
            if thread_id is not None and meta.get("thread_id") != thread_id:
                continue
            if ns is not None and meta.get("checkpoint_ns") != ns:
                continue
            if cid is not None and meta["checkpoint_id"] != cid:
                continue
            if before_id is not None and not meta["checkpoint_id"] < before_id:
                continue
            if filter and any(meta["langgraph"].get(k) != v for k, v in filter.items()):
                continue
            key = (eid, meta["checkpoint_id"])
            if key not in chosen or chosen[key][2] < version:  # saved twice: the newest save wins
                chosen[key] = (sid, eid, version, meta)
        ordered = sorted(chosen.values(), key=lambda r: (r[3]["checkpoint_id"], r[2]), reverse=True)
        if limit is not None:
            ordered = ordered[: max(int(limit), 0)]
        for start in range(0, len(ordered), _LIST_BATCH):
            batch = ordered[start : start + _LIST_BATCH]

            def work(conn: Any, _attempt: int, batch: builtins.list[Any] = batch) -> builtins.list[Any]:
                rows = self._rows.by_ids(conn, [b[0] for b in batch])
                return self._rows.gather(conn, self.prefix, [rows[b[0]] for b in batch if b[0] in rows], index)

            for found in self._rows.read(work):
                yield self._tuple(found[0].entity_id, *found)

    def _tuple(self, entity: str, snap: StateSnapshot, state: dict[str, Any],
               writes: Sequence[tuple[StateSnapshot, dict[str, Any]]]) -> CheckpointTuple:
        meta = snap.metadata
        skeleton = self._unpack(state.get(CHECKPOINT_ITEM, {}))
        values = {name: self._unpack(v) for name, v in state.items() if name != CHECKPOINT_ITEM}
        self._remember(entity, meta["checkpoint_id"], _known_from(snap, skeleton))
        checkpoint: Any = {**skeleton, "channel_values": values}

        def conf(checkpoint_id: str) -> RunnableConfig:
            return {"configurable": {"thread_id": meta["thread_id"], "checkpoint_ns": meta["checkpoint_ns"],
                                     "checkpoint_id": checkpoint_id}}

        parent = meta.get("parent_checkpoint_id")
        lg_meta: Any = dict(meta.get("langgraph") or {})
        return CheckpointTuple(conf(meta["checkpoint_id"]), checkpoint, lg_meta,
                               conf(parent) if parent else None, self._pending(writes))

    def _pending(self, writes: Sequence[tuple[StateSnapshot, dict[str, Any]]]) -> builtins.list[tuple[str, str, Any]]:
        """The writes in LangGraph's order: regular writes keep their first record, special ones their last."""
        found: dict[tuple[str, int], tuple[str, str, int, str, Any]] = {}
        for snap, state in writes:
            m = snap.metadata
            for name, stored in state.items():
                idx_text, channel = name.split(":", 1)
                key = (m["task_id"], int(idx_text))
                if m.get("replace") or key not in found:
                    found[key] = (m.get("task_path", ""), m["task_id"], int(idx_text), channel, stored)
        ordered = sorted(found.values(), key=lambda w: (w[0], w[1], w[2]))
        return [(task_id, channel, self._unpack(v)) for _p, task_id, _i, channel, v in ordered]

    # ------------------------------------------------------------------ threads

    def delete_thread(self, thread_id: str) -> None:
        """Remove a thread's checkpoints and writes in every namespace (one transaction, recorded in its history)."""
        from .langgraph_delete import delete_threads

        delete_threads(self, [thread_id])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints whose metadata names one of ``run_ids``, and their pending writes."""
        from .langgraph_delete import delete_for_runs

        delete_for_runs(self, run_ids)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's newest checkpoint (``"keep_latest"``) or remove the threads (``"delete"``)."""
        from .langgraph_delete import prune

        prune(self, thread_ids, strategy)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, branch and write of a thread to a new thread (see :mod:`.langgraph_copy`)."""
        from .langgraph_copy import copy_thread

        copy_thread(self, str(source_thread_id), str(target_thread_id))

    # ------------------------------------------------------------------ async (the sync calls, in a worker thread)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def _known_from(snap: StateSnapshot, skeleton: Any) -> _Known:
    versions = skeleton.get("channel_versions") if isinstance(skeleton, dict) else None
    return _Known(snap.version, snap.branch, dict(versions or {}),
                  frozenset(n for n in snap.names if n != CHECKPOINT_ITEM))


def _json_metadata(metadata: Any) -> dict[str, Any]:
    """LangGraph's metadata as plain JSON (tuples become lists, as in LangGraph's own SQL savers)."""
    try:
        return json.loads(json.dumps(metadata, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"LangGraph checkpoint metadata must be JSON-serializable: {exc}") from None


def _message(meta: dict[str, Any], checkpoint: Checkpoint, new_versions: ChannelVersions) -> str:
    """What the history shows for a checkpoint: step, source and the state keys it changed."""
    changed = sorted(
        c for c in (checkpoint.get("updated_channels") or new_versions or ())
        if not c.startswith("branch:") and not c.startswith("__")
    )
    text = f"LangGraph step {meta.get('step', '?')} ({meta.get('source', '?')})"
    if changed:
        text += ": " + ", ".join(changed[:8]) + (", …" if len(changed) > 8 else "")
    return text
