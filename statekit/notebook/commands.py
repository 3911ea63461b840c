"""The ``%state`` subcommands other than save: one function each, dispatched from ``COMMANDS``.

Each takes the ``StateMagics`` instance and the parsed arguments, calls the
store, prints at most a line or two, and returns what the notebook should
display (a DataFrame for ``log``, ``diff``, ``branch``; the panel widget), or None.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
from IPython.core.error import UsageError

from .. import validate
from ..diff import diff_states
from ..formatting import human_bytes
from .args import is_version, version_number
from .changes import Baseline, check, make_entry
from .lineage import code_of
from .lineage import mark as mark_lineage
from .merging import changed_between, rebase
from .namespace import split_loadable, user_variables
from .progress import Progress
from .saving import SaveRequest, head_snapshot, save

if TYPE_CHECKING:
    from ..magics import StateMagics
    from ..snapshot import StateSnapshot

LOG_COLUMNS = ["version", "branch", "kind", "created_at", "actor", "message", "names", "size_bytes", "new_bytes"]


def nothing_saved(magics: StateMagics) -> UsageError:
    return UsageError(f"nothing saved yet for {magics.entity_id!r} on branch {magics.branch!r}: "
                      "%state save first, or %state use ENTITY")


def _head_or_error(magics: StateMagics) -> StateSnapshot:
    snap = head_snapshot(magics, magics.entity_id, magics.branch)
    if snap is None:
        raise nothing_saved(magics)
    return snap


def _load_into_namespace(magics: StateMagics, snap: StateSnapshot, names: list[str] | None,
                         *, keep: bool = False) -> dict[str, Any]:
    """Read ``snap``'s values (all, or ``names``) into the namespace and make them the baseline.

    Names a save would refuse (``_``-names, IPython's own, builtins) are never bound: one line says so.
    The baseline moves to the branch head; loaded values that differ from it (an older version was
    loaded) are written by the next save. With ``keep`` (``%state load``), variables the kernel tracked
    and did not load stay tracked at the version they match, so a later save does not write them back
    over another writer's change; otherwise (checkout, rollback) the baseline is the loaded values alone.
    """
    with Progress(f"loading v{snap.version} ({human_bytes(snap.size_bytes)})", None, magics.progress_delay):
        state = magics.store().load(snap.entity_id, snap.version, names=names, include_expired=True)
    state, refused = split_loadable(state, magics.ip.user_ns_hidden)
    if refused:
        print(f"not loaded: {', '.join(refused[:12])}{' …' if len(refused) > 12 else ''} "
              "(statekit never binds _-names, IPython's own names or Python builtins)")
    magics.ip.push(state, interactive=True)
    head = head_snapshot(magics, magics.entity_id, magics.branch)
    version = head.version if head is not None else snap.version
    old = magics.baseline
    entries: dict[str, Any] = {}
    gone: set[str] = set()
    behind: dict[str, int] = {}
    ahead: set[str] = set()
    if old.entity == snap.entity_id and old.version is not None and (keep or names is not None):
        entries, gone, behind, ahead = dict(old.entries), set(old.gone), dict(magics.behind), set(magics.ahead)
        if names is None and snap.version == version:
            behind = {}  # the whole head was loaded: what it lacks, the kernel has now seen it lack
        elif old.version != version:
            for n in [*entries, *gone]:
                behind.setdefault(n, old.version)
    for n, v in state.items():
        entries[n] = make_entry(v)
        behind.pop(n, None)
        gone.discard(n)
        ahead.discard(n)
        magics.not_saved.pop(n, None)
    if version != snap.version:
        differ = changed_between(magics, snap.version, version, set(state))
        ahead |= set(state) if differ is None else differ
    magics.baseline = Baseline(snap.entity_id, version, entries, gone)
    magics.behind, magics.ahead = behind, ahead
    mark_lineage(magics)
    return state


def _listing_of(parts: list[str]) -> str:
    return ", ".join(parts[:12]) + (f", … and {len(parts) - 12} more" if len(parts) > 12 else "")


def _names(state: dict[str, Any]) -> str:
    names = list(state)
    shown = ", ".join(names[:12]) + (f", … and {len(names) - 12} more" if len(names) > 12 else "")
    return shown or "no variables"


# ---------------------------------------------------------------- subcommands


def cmd_save(magics: StateMagics, args: argparse.Namespace) -> None:
    mode = "names" if args.names else "all"
    save(magics, SaveRequest(mode=mode, names=list(args.names), message=args.message,
                             overwrite=bool(args.overwrite)))


def cmd_load(magics: StateMagics, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    words = list(args.target)
    version = None
    if words and words[0].isascii() and words[0].isdigit():
        try:
            version = version_number(words.pop(0), allow_v=False)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"%state load: {exc}") from None
    sm = magics.store()
    if args.as_of is not None:
        if version is not None:
            raise UsageError("%state load: give a VERSION or --as-of, not both")
        snap = sm.get(magics.entity_id, branch=magics.branch, as_of=args.as_of, include_expired=True)
    elif version is None:
        snap = _head_or_error(magics)
    else:
        snap = sm.get(magics.entity_id, version, include_expired=True)
    missing = [n for n in words if n not in snap.names]
    if missing:
        hint = ""
        if version is None and len(words) == 1 and is_version(words[0]):
            hint = f" (to load version {version_number(words[0])}, write %state load {version_number(words[0])})"
        raise UsageError(f"v{snap.version} holds no {', '.join(map(repr, missing))}{hint}; "
                         f"it holds: {', '.join(snap.names) or 'nothing'}")
    state = _load_into_namespace(magics, snap, list(dict.fromkeys(words)) or None, keep=True)
    where = "" if snap.branch == magics.branch else f" (on branch {snap.branch})"
    print(f"loaded v{snap.version}{where}: {_names(state)}; {human_bytes(snap.size_bytes)}; "
          f"{time.perf_counter() - started:.2f} s")


def cmd_rollback(magics: StateMagics, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    sm = magics.store()
    head = _head_or_error(magics)
    target = args.version if args.version is not None else head.parent_version
    if target is None:
        raise UsageError(f"v{head.version} is the first version of {magics.entity_id!r} on {magics.branch!r}: "
                         "nothing earlier to roll back to")
    snap = sm.rollback(magics.entity_id, target, reason=args.reason, branch=magics.branch)
    state = _load_into_namespace(magics, snap, None)
    data, _code = user_variables(magics.ip.user_ns, magics.ip.user_ns_hidden)
    left = [n for n in data if n not in state]
    tail = f"; left alone: {', '.join(left[:12])}{' …' if len(left) > 12 else ''}" if left else ""
    print(f"rolled back {snap.branch} to v{target} as v{snap.version}: restored {_names(state)}{tail}; "
          f"{time.perf_counter() - started:.2f} s")


def cmd_log(magics: StateMagics, args: argparse.Namespace) -> pd.DataFrame | None:
    frame = magics.store().history(magics.entity_id, branch=args.branch, limit=args.limit, changed=args.changed)
    if frame.empty:
        print(f"no versions of {magics.entity_id!r}" + (f" on branch {args.branch!r}" if args.branch else ""))
        return None
    if args.code:
        sm = magics.store()
        frame["code"] = [code_of(sm.get(magics.entity_id, int(v), include_expired=True).lineage)
                         for v in frame["version"]]
    tags = magics.store().tags(magics.entity_id)
    extra = ["changed"] if args.changed else []
    if not tags.empty:  # a column only for entities that have tags, so other logs keep their shape
        named = tags.groupby("version")["tag"].agg(", ".join)
        frame["tags"] = frame["version"].map(named).fillna("")
        extra.append("tags")
    if not args.all_columns:  # sizes as people read them; sm.history() keeps the numbers
        frame = frame[LOG_COLUMNS + extra + (["code"] if args.code else [])].assign(
            size=frame["size_bytes"].map(human_bytes), new=frame["new_bytes"].map(human_bytes))
        frame = frame.drop(columns=["size_bytes", "new_bytes"])
    return frame


def cmd_diff(magics: StateMagics, args: argparse.Namespace) -> pd.DataFrame:
    sm = magics.store()
    if args.a is not None:
        return sm.diff(magics.entity_id, args.a, args.b, branch=magics.branch)
    head = _head_or_error(magics)
    ns = magics.ip.user_ns
    data, _code = user_variables(ns, magics.ip.user_ns_hidden)
    names = list(dict.fromkeys([*head.names, *data]))
    if magics.baseline.matches(magics.entity_id, head.version):  # compare only what may have changed
        entries = magics.baseline.entries
        stale = magics.behind.keys() | magics.ahead  # values that differ from the head's without a local change
        names = [n for n in names if n not in data or n not in entries or n in stale
                 or check(entries[n], data[n], True)[0]]
    stored = [n for n in names if n in head.names]
    old = sm.load(magics.entity_id, head.version, names=stored, include_expired=True) if stored else {}
    new = {n: data[n] for n in names if n in data}
    return diff_states(old, new)


def cmd_branch(magics: StateMagics, args: argparse.Namespace) -> pd.DataFrame | None:
    sm = magics.store()
    if args.name is None:
        frame = sm.branches(magics.entity_id)
        if frame.empty:
            print(f"no branches: nothing saved yet for {magics.entity_id!r}")
            return None
        frame.insert(1, "current", frame["branch"] == magics.branch)
        return frame
    name = validate.identifier(args.name, "branch name")
    start = args.from_version
    if start is None:
        b = magics.baseline
        start = b.version if b.entity == magics.entity_id and b.version else _head_or_error(magics).version
    base = sm.create_branch(magics.entity_id, name, start)
    rebase(magics, base.version)
    magics.branch = name
    print(f"created branch {name} from v{base.version}; now on {name} (%state checkout {base.branch} to go back)")
    return None


def cmd_checkout(magics: StateMagics, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    sm = magics.store()
    target = args.target
    branches = sm.branches(magics.entity_id)
    if target in set(branches["branch"]):
        magics.branch = target
        snap = _head_or_error(magics)
        state = _load_into_namespace(magics, snap, None)
        print(f"on branch {target} (head v{snap.version}): loaded {_names(state)}; "
              f"{time.perf_counter() - started:.2f} s")
        return
    if not is_version(target):
        known = ", ".join(branches["branch"]) or "none yet"
        raise UsageError(f"no branch or version {target!r} in {magics.entity_id!r} (branches: {known})")
    snap = sm.get(magics.entity_id, version_number(target), include_expired=True)
    magics.branch = snap.branch
    state = _load_into_namespace(magics, snap, None)
    head = _head_or_error(magics)
    note = "" if head.version == snap.version else (
        f" (not the head: a save goes after v{head.version}; %state branch NAME starts a branch from v{snap.version})")
    print(f"checked out v{snap.version} on {snap.branch}: loaded {_names(state)}{note}; "
          f"{time.perf_counter() - started:.2f} s")


def cmd_status(magics: StateMagics, args: argparse.Namespace) -> None:
    sm = magics.store()
    head = head_snapshot(magics, magics.entity_id, magics.branch)
    url = sm.db.engine.url.render_as_string(hide_password=True)
    at = f"head v{head.version}" if head else "nothing saved yet"
    print(f"entity {magics.entity_id!r} · branch {magics.branch} · {at} · store {url}")
    data, code = user_variables(magics.ip.user_ns, magics.ip.user_ns_hidden)
    b = magics.baseline
    ns = magics.ip.user_ns
    if head is None or b.entity != magics.entity_id or not b.version:
        basis = "nothing saved or loaded in this session" if b.entity != magics.entity_id or not b.version \
            else f"last saved or loaded as v{b.version}, which branch {magics.branch} does not hold"
        print(f"namespace: {len(data)} variables; {basis}")
    else:
        changes = []
        for n, v in data.items():
            changed, _ = check(b.entries.get(n), v, True)
            if n in magics.not_saved:
                changes.append(f"{n} (not saved: {magics.not_saved[n]})")
            elif changed:
                changes.append(f"{n} ({'changed' if n in b.entries else 'new'})")
        changes += [f"{n} (deleted)" for n in [*b.entries, *sorted(b.gone)] if n not in ns]
        changes += [f"{n} ({code[n]}: not saved)" for n in code if n in b.entries]
        older = sorted(n for n in magics.behind if n in ns or n in b.entries)
        since = f"since v{b.version}" + ("" if b.version == head.version else f" (the head is v{head.version})")
        if changes:
            print(f"namespace {since}: " + _listing_of(changes))
        else:
            print(f"namespace: matches v{b.version}" + ("" if b.version == head.version else
                                                         f" (the head is v{head.version})"))
        if older:
            print("older than the store (another writer changed them; %state load NAME takes theirs): "
                  + _listing_of(older))
    print(f"auto-checkpoint {'on' if magics.auto else 'off'} · pickle {'on' if magics.allow_pickle else 'off'}")


def cmd_verify(magics: StateMagics, args: argparse.Namespace) -> pd.DataFrame | None:
    sm = magics.store()
    try:
        problems = sm.verify(None if args.all else magics.entity_id)
    except ImportError as exc:
        raise UsageError(f"verify is not available in this installation ({exc})") from None
    scope = "the whole store" if args.all else repr(magics.entity_id)
    if problems is None or len(problems) == 0:
        print(f"verified {scope}: no problems found")
        return None
    print(f"verify found {len(problems)} problem(s) in {scope}")
    return problems


def cmd_auto(magics: StateMagics, args: argparse.Namespace) -> None:
    on = args.switch == "on"
    if magics.auto == on:
        print(f"auto-checkpoint is already {args.switch}")
    magics.auto = on


def cmd_use(magics: StateMagics, args: argparse.Namespace) -> None:
    magics.entity = validate.identifier(args.entity, "entity")
    head = head_snapshot(magics, magics.entity_id, magics.branch)
    print(f"using entity {magics.entity_id!r}: " + (f"head v{head.version} on {head.branch}" if head
                                                     else "nothing saved yet"))


def cmd_panel(magics: StateMagics, args: argparse.Namespace) -> Any:
    try:
        module = importlib.import_module("statekit.panels")
    except ImportError as exc:
        raise UsageError(f"the panel is not available yet: statekit.panels cannot be imported ({exc})") from None
    show = getattr(module, "panel", None)
    if not callable(show):
        raise UsageError("the panel is not available yet: statekit.panels has no panel() function")
    return show(store=magics.store(), entity=magics.entity_id)


COMMANDS: dict[str, Callable[[StateMagics, argparse.Namespace], Any]] = {
    "save": cmd_save, "load": cmd_load, "rollback": cmd_rollback, "log": cmd_log, "diff": cmd_diff,
    "branch": cmd_branch, "checkout": cmd_checkout, "status": cmd_status, "verify": cmd_verify,
    "auto": cmd_auto, "use": cmd_use, "panel": cmd_panel,
}
from .history_commands import HISTORY_COMMANDS  # noqa: E402 - tag, tags, merge

COMMANDS.update(HISTORY_COMMANDS)
