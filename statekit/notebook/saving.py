"""Saving the namespace: ``%state save``, ``%%state save`` and each auto-checkpoint.

One routine serves the four ways to save; they differ in which variables they
consider (:class:`SaveRequest.mode`):

- ``names``: exactly the named ones; each must exist and be storable, or the
  save is refused (a UsageError) and nothing is written;
- ``all``: every data variable; those the store cannot take are skipped and
  reported, and variables deleted since the last save or load are dropped;
- ``cell``: what a ``%%state save`` cell assigned, plus what it changed in place;
- ``auto``: like ``all``, but nothing is written when nothing changed.

Values the baseline (see :mod:`statekit.notebook.changes`) shows unchanged are
not passed to the store at all: the save uses ``merge=True``, so the store
carries them over from the head by reference, another writer's changes
included (:mod:`statekit.notebook.merging`). Every save names the head it
expects to follow; when another writer moves it meanwhile, the save looks again.

A value is recorded as saved only when it was: a variable the store refuses
(it needs pickle, or is now a function) is skipped and dropped from the new
version, never left there with an older value, and the save line says so.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from IPython.core.error import UsageError

from ..errors import ConflictError, NotFoundError, UnserializableError
from ..formatting import human_bytes
from .changes import Baseline, Entry, aliases_changed, check, make_entry
from .lineage import collect as collect_lineage
from .lineage import mark as mark_lineage
from .merging import carried_note, conflict_text, reconcile, remember_behind
from .namespace import approx_size, code_kind, describe_type, refused_name, user_variables
from .progress import CountingState, Progress

if TYPE_CHECKING:
    from ..magics import StateMagics
    from ..snapshot import StateSnapshot

MAX_LISTED = 12
_NOTHING = object()


@dataclass
class SaveRequest:
    mode: str  # "names", "all", "cell" or "auto"
    names: list[str] = field(default_factory=list)
    message: str | None = None
    mentioned: set[str] = field(default_factory=set)  # auto and cell: names the cell's text reaches
    assigned: set[str] = field(default_factory=set)  # cell: names it binds or modifies
    deleted: set[str] = field(default_factory=set)  # cell: names it deletes
    overwrite: bool = False  # keep this kernel's values where another writer changed the same names


@dataclass
class _Plan:
    to_save: dict[str, Any]
    labels: dict[str, str]  # name -> changed / new / saved / unchanged / deleted
    unchanged: list[str]
    deleted: set[str]
    skipped: dict[str, str]  # name -> why
    fresh: dict[str, Entry]  # entries computed while checking, for the baseline
    valid: bool
    code: dict[str, str] = field(default_factory=dict)  # tracked names that must leave the version: why
    dropped: dict[str, str] = field(default_factory=dict)  # names removed from the new version: why
    theirs: set[str] = field(default_factory=set)  # names another writer changed since the baseline
    conflicts: dict[str, int] = field(default_factory=dict)  # name -> this kernel's base version
    synced: set[str] = field(default_factory=set)  # changed alike on both sides
    on_top: int | None = None  # the head, when another writer had moved it since the baseline


def head_snapshot(magics: StateMagics, entity: str, branch: str) -> StateSnapshot | None:
    """The head of ``branch`` (metadata only), or None when nothing is saved there yet."""
    try:
        return magics.store().get(entity, branch=branch)
    except NotFoundError:
        return None


def save(magics: StateMagics, request: SaveRequest) -> StateSnapshot | None:
    """Save as ``request`` says; print the one-line confirmation; None when auto found nothing to save.

    Auto-checkpoint first compares the namespace with the baseline alone, so a
    cell that changed nothing costs no database round trip.
    """
    started = time.perf_counter()
    entity, branch = magics.entity_id, magics.branch
    baseline = magics.baseline
    trusted = baseline.entity == entity and baseline.version is not None
    plan = _plan(magics, request, valid=trusted)
    if request.mode == "auto" and trusted and not plan.to_save and not plan.deleted and not plan.code:
        _refresh(magics, plan)
        return None
    for attempt in range(3):
        if attempt:
            plan = _plan(magics, request, valid=trusted)
        parent = head_snapshot(magics, entity, branch)
        if parent is None and plan.valid:  # the branch is gone: everything the namespace holds is new
            plan = _plan(magics, request, valid=False)
        reconcile(magics, request, plan, parent)
        _settle(plan, parent, baseline)
        try:
            snap = _write(magics, request, plan, parent, entity, branch)
        except ConflictError:
            if attempt == 2:
                raise
            continue
        if snap is None and plan.valid and parent is not None:
            _remember(magics, entity, parent.version, plan)  # nothing to write: the kernel is now at the head
        elif snap is None:
            _refresh(magics, plan)
        else:
            _remember(magics, entity, snap.version, plan)
            mark_lineage(magics)
            print(confirmation(request, snap, plan, time.perf_counter() - started, baseline.version, magics.behind))
        _report(magics, request, plan, parent)
        return snap
    return None  # pragma: no cover - the loop returns or raises


def _report(magics: StateMagics, request: SaveRequest, plan: _Plan, parent: StateSnapshot | None) -> None:
    """The skipped variables (once per reason for auto), and auto's conflicts (once per head)."""
    auto = request.mode == "auto"
    skipped = {n: why for n, why in plan.skipped.items()
               if n not in plan.dropped and magics.note_skip(n, why, auto)}
    if skipped:
        print("skipped " + _listing([f"{n} ({why})" for n, why in skipped.items()]))
    if plan.conflicts and auto and not request.overwrite and parent is not None:
        fresh = {n: b for n, b in plan.conflicts.items() if magics.note_skip(n, f"conflict at v{parent.version}", True)}
        if fresh:
            print(f"statekit auto-checkpoint: {conflict_text(fresh, parent.version, explicit=False)}", file=sys.stderr)


def _plan(magics: StateMagics, request: SaveRequest, *, valid: bool) -> _Plan:
    """What to pass to the store: the changed values (all of them when the baseline is not ``valid``)."""
    shell = magics.ip
    ns = shell.user_ns
    data, code = user_variables(ns, shell.user_ns_hidden)
    for n in [n for n, v in magics.unstorable.items() if ns.get(n, _NOTHING) is not v]:
        del magics.unstorable[n]
    skipped: dict[str, str] = {}
    deleted: set[str] = set()
    if request.mode == "names":
        names = list(dict.fromkeys(request.names))
        missing = [n for n in names if n not in ns]
        if missing:
            raise UsageError(f"not defined: {', '.join(missing)}"
                             + (" (a message with spaces needs quotes: -m \"...\")" if request.message else ""))
        for n in names:
            reason = refused_name(n, shell.user_ns_hidden)
            if reason is not None:
                raise UsageError(f"{n} is {reason}: statekit never saves it, and a load never binds it "
                                 "(rename the variable to save it)")
            if code_kind(ns[n]) is not None:
                raise UsageError(f"{n} is a {code_kind(ns[n])}: code is not state, save the data it produces")
        candidates = {n: ns[n] for n in names}
    elif request.mode == "cell":
        wanted = request.assigned | request.mentioned
        candidates = {n: data[n] for n in data if n in wanted}
        skipped = {n: kind for n, kind in code.items() if n in request.assigned}
        deleted = {n for n in request.deleted if n not in ns}
    else:
        candidates = data
        skipped = dict(code) if request.mode == "all" else {n: r for n, r in code.items() if r.startswith("shadows")}
        if magics.baseline.entity == magics.entity_id:
            deleted = {n for n in [*magics.baseline.entries, *magics.baseline.gone] if n not in ns}
    # a variable saved as data and now bound to code (or renamed away) leaves the version, not its old value
    tracked = magics.baseline.entries if magics.baseline.entity == magics.entity_id else {}
    now_code = {n: (f"now a {kind}" if not kind.startswith("shadows") else kind) for n, kind in code.items()
                if n in tracked and request.mode != "names" and (request.mode != "cell" or n in request.assigned)}
    to_save: dict[str, Any] = {}
    unchanged: list[str] = []
    fresh: dict[str, Entry] = {}
    entries = magics.baseline.entries
    for n, value in candidates.items():
        if (request.mode == "auto" and magics.unstorable.get(n, _NOTHING) is value
                and n not in request.mentioned):
            if n in tracked:  # the version still holds an older value: it leaves (a retried save)
                now_code[n] = magics.not_saved.get(n, "cannot be stored")
            continue  # the store refused this very object before; retry when a cell mentions it
        if valid:
            look = request.mode != "auto" or n in request.mentioned
            changed, entry = check(entries.get(n), value, look)
            if entry is not None:
                fresh[n] = entry
        else:
            changed = True
        if not changed:
            unchanged.append(n)
        elif request.mode != "cell" or n in request.assigned or valid:
            to_save[n] = value  # (a cell's mentioned-only names are saved only when known to have changed)
    if valid and magics.ahead and (request.mode != "auto" or to_save or deleted):
        for n in [n for n in unchanged if n in magics.ahead]:  # loaded from an older version than the head
            unchanged.remove(n)
            to_save[n] = candidates[n]
    for n in aliases_changed({n: candidates[n] for n in unchanged}, to_save, magics.baseline) if valid else ():
        unchanged.remove(n)  # another name for an object whose content changed
        to_save[n] = candidates[n]
    return _Plan(to_save, {}, unchanged, deleted, skipped, fresh, valid, code=now_code)


def _settle(plan: _Plan, parent: StateSnapshot | None, baseline: Baseline) -> None:
    """With the head known: drop only names it holds, and label each saved name."""
    parent_names = set(parent.names) if parent else set()
    plan.deleted &= parent_names
    plan.dropped.update({n: why for n, why in plan.code.items() if n in parent_names})
    plan.labels = {}
    for n in plan.to_save:
        if n not in parent_names:
            plan.labels[n] = "new"
        else:
            plan.labels[n] = "changed" if plan.valid and n in baseline.entries else "saved"
        if n in plan.conflicts:
            plan.labels[n] += ", over another writer's"
    for n in plan.deleted:
        plan.labels[n] = "deleted"
    for n, why in plan.dropped.items():
        plan.labels[n] = f"dropped: {why}"


def _write(magics: StateMagics, request: SaveRequest, plan: _Plan, parent: StateSnapshot | None,
           entity: str, branch: str) -> StateSnapshot | None:
    """Save, skipping (or, for named variables, refusing) the values the store cannot take."""
    sizes = {n: approx_size(v) for n, v in plan.to_save.items()}
    # the store encodes in this order and stops at the first value it refuses; frames and arrays
    # (large, and nearly always storable) go last so that a refusal wastes little work
    state = dict(sorted(plan.to_save.items(), key=lambda kv: _encode_order(kv[1])))
    sm = magics.store()
    parent_names = set(parent.names) if parent else set()
    while True:
        if request.mode == "auto" and not state and not plan.deleted and not plan.dropped:
            return None
        total = sum(sizes[n] for n in state)
        with Progress(f"saving {entity}", total, magics.progress_delay) as progress:
            try:
                return sm.save(entity, CountingState(state, sizes, progress), message=_message(request, plan, state),
                               branch=branch, merge=True, drop=sorted(plan.deleted | set(plan.dropped)),
                               expected_version=parent.version if parent else 0,
                               allow_pickle=magics.allow_pickle, lineage=collect_lineage(magics))
            except UnserializableError as exc:
                if request.mode == "names" or exc.name not in state:
                    raise UsageError(pickle_hint(str(exc), magics.allow_pickle)) from None
                why = skip_reason(str(exc), state[exc.name], magics.allow_pickle)
                _skip(magics, plan, state, exc.name, why, exc.name in parent_names)


def _message(request: SaveRequest, plan: _Plan, state: Mapping[str, Any]) -> str | None:
    """The user's message; an auto-save says what it saved (``auto: df (changed), total (new)``)."""
    if request.message is not None or request.mode != "auto":
        return request.message
    return "auto: " + ", ".join(f"{n} ({label})" for n, label in plan.labels.items()
                                if n in state or label == "deleted" or n in plan.dropped)


def _encode_order(value: Any) -> int:
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return 2
    return 1 if isinstance(value, np.ndarray) else 0


def _skip(magics: StateMagics, plan: _Plan, state: dict[str, Any], name: str, reason: str, stored: bool) -> None:
    """Leave ``name`` out of this save; when the head holds an older value of it, drop that too."""
    plan.skipped[name] = reason
    magics.unstorable[name] = state.pop(name)
    magics.not_saved[name] = reason
    plan.labels.pop(name, None)
    plan.to_save.pop(name, None)
    plan.fresh.pop(name, None)
    if stored:
        plan.dropped[name] = reason
        plan.labels[name] = f"dropped: {reason}"


def skip_reason(message: str, value: Any, allow_pickle: bool) -> str:
    kind = describe_type(value)
    if "without pickle" in message and not allow_pickle:
        return f"{kind}: needs pickle, which is off"
    return f"{kind}: cannot be pickled" if allow_pickle else f"{kind}: cannot be stored"


def pickle_hint(message: str, allow_pickle: bool) -> str:
    """The store's message, with the notebook's way to allow pickling."""
    if not allow_pickle:
        message = message.replace("Pass allow_pickle=True", "Run %config StateMagics.allow_pickle = True")
    return message


def _refresh(magics: StateMagics, plan: _Plan) -> None:
    """Nothing was saved, but some variables were found equal to the baseline under a new object."""
    if plan.valid:
        magics.baseline.entries.update({n: e for n, e in plan.fresh.items() if n in plan.unchanged})


def _remember(magics: StateMagics, entity: str, version: int, plan: _Plan) -> None:
    """The namespace now matches ``version`` for the saved names, and (if the baseline was trusted)
    for the unchanged ones it already knew; names another writer changed are behind."""
    old = magics.baseline
    entries: dict[str, Entry] = {}
    out = plan.deleted | set(plan.dropped) | set(plan.code)
    if plan.valid:
        entries = {n: e for n, e in old.entries.items() if n not in out and n not in plan.skipped}
        entries.update({n: e for n, e in plan.fresh.items() if n in plan.unchanged})
    for n, value in plan.to_save.items():
        fresh = plan.fresh.get(n)
        entries[n] = fresh if fresh is not None and fresh.obj is value else make_entry(value)
        magics.not_saved.pop(n, None)
    for n in out:
        if n not in plan.skipped:
            magics.not_saved.pop(n, None)
    gone = {n for n in old.gone if n in plan.conflicts} if plan.valid else set()
    magics.ahead = {n for n in magics.ahead if n not in plan.to_save and n not in out} if plan.valid else set()
    magics.behind = remember_behind(magics, plan, old.version if old.entity == entity else None)
    magics.baseline = Baseline(entity, version, entries, gone)


def confirmation(request: SaveRequest, snap: StateSnapshot, plan: _Plan, seconds: float,
                 old_version: int | None = None, behind: Mapping[str, int] | None = None) -> str:
    """``saved v3 on main: df (changed), model (new); 12.3 MB new; 0.21 s``."""
    verb = "auto-saved" if request.mode == "auto" else "saved"
    behind = behind or {}
    parts = [f"{n} ({label})" for n, label in plan.labels.items()]
    if request.mode == "names":
        parts += [f"{n} (unchanged{'; the head holds a newer value' if n in behind else ''})"
                  for n in plan.unchanged]
    elif plan.unchanged:
        parts.append(f"{len(plan.unchanged)} unchanged")
    what = _listing(parts) if parts else "no changes"
    on_top = carried_note(plan, old_version)
    return (f"{verb} v{snap.version} on {snap.branch}{on_top}: {what}; {human_bytes(snap.new_bytes)} new; "
            f"{seconds:.2f} s")


def _listing(parts: list[str]) -> str:
    if len(parts) > MAX_LISTED:
        return ", ".join(parts[:MAX_LISTED]) + f", … and {len(parts) - MAX_LISTED} more"
    return ", ".join(parts)
