"""The ``%state`` subcommands for history as data: ``tag``, ``tags``, ``merge``; and ``log NAME`` / ``load --as-of``.

``%state tag NAME [VERSION]`` names a version (default: the head of the current branch);
``%state tags`` lists them; ``%state merge BRANCH [--ours NAME ...] [--theirs NAME ...]`` merges
BRANCH into the current branch, shows the conflicts as a table when there are any (writing
nothing), and puts the merged variables into the namespace.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
from IPython.core.error import UsageError

from ..errors import MergeConflictError
from .args import version_number

if TYPE_CHECKING:
    from ..magics import StateMagics
    from .args import StateArgumentParser

NAMES = ("tag", "tags", "merge", "show")


def add_parsers(add: Callable[..., StateArgumentParser]) -> None:
    """Register the parsers of NAMES with ``build_parser``'s ``add``."""
    p = add("tag", "name a version (a tag never moves)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", nargs="?", type=version_number, metavar="VERSION",
                   help="default: the head of the current branch")
    p.add_argument("-m", "--message", help="a note for the tag")
    add("tags", "the tags of this entity")
    p = add("merge", "merge a branch into the current one",
            "Three-way merge of BRANCH into the current branch from their common ancestor. Conflicts are "
            "shown as a table and nothing is written; --ours/--theirs NAME settle them for those variables.")
    p.add_argument("source", metavar="BRANCH")
    p.add_argument("--ours", nargs="+", default=[], metavar="NAME", help="keep this branch's value on conflict")
    p.add_argument("--theirs", nargs="+", default=[], metavar="NAME", help="take BRANCH's value on conflict")
    p.add_argument("-m", "--message", help="a note for the history")
    p = add("show", "one version: what it is, what it holds, and (--code) the code that produced it")
    p.add_argument("version", nargs="?", type=version_number, metavar="VERSION",
                   help="default: the head of the current branch")
    p.add_argument("-c", "--code", action="store_true", help="print the code recorded with it")


def cmd_show(magics: StateMagics, args: argparse.Namespace) -> None:
    from ..formatting import human_bytes
    from .lineage import code_of

    sm = magics.store()
    if args.version is None:
        snap = sm.get(magics.entity_id, branch=magics.branch, include_expired=True)
    else:
        snap = sm.get(magics.entity_id, args.version, include_expired=True)
    message = f" {snap.message!r}" if snap.message else ""
    print(f"v{snap.version} on {snap.branch}: {snap.kind.value} by {snap.actor}{message}; "
          f"{', '.join(snap.names) or 'no variables'}; {human_bytes(snap.size_bytes)}")
    if args.code:
        lineage = snap.lineage
        print(code_of(lineage) if lineage and lineage.get("cells") else "no code recorded with this version")
        if lineage and lineage.get("reads"):
            print(f"# read: {', '.join(lineage['reads'])}")


def cmd_tag(magics: StateMagics, args: argparse.Namespace) -> None:
    sm = magics.store()
    version = args.version if args.version is not None else sm.head_version(magics.entity_id, magics.branch)
    if version is None:
        raise UsageError(f"nothing saved yet for {magics.entity_id!r} on branch {magics.branch!r}")
    snap = sm.tag(magics.entity_id, args.name, version, message=args.message)
    print(f"tagged v{snap.version} as {args.name!r}")


def cmd_tags(magics: StateMagics, args: argparse.Namespace) -> pd.DataFrame | None:
    frame = magics.store().tags(magics.entity_id)
    if frame.empty:
        print(f"no tags on {magics.entity_id!r}")
        return None
    return frame[["tag", "version", "branch", "actor", "message", "created_at"]]


def cmd_merge(magics: StateMagics, args: argparse.Namespace) -> pd.DataFrame | None:
    from .commands import _load_into_namespace, _names

    both = set(args.ours) & set(args.theirs)
    if both:
        raise UsageError(f"{', '.join(sorted(both))}: named with both --ours and --theirs")
    resolve = {**{n: "ours" for n in args.ours}, **{n: "theirs" for n in args.theirs}}
    sm = magics.store()
    try:
        snap = sm.merge(magics.entity_id, args.source, magics.branch, resolve=resolve or None, message=args.message)
    except MergeConflictError as exc:
        names = ", ".join(dict.fromkeys(exc.conflicts["name"].astype(str)))
        print(f"{len(exc.conflicts)} conflict(s), nothing written: settle them with --ours or --theirs "
              f"({names})")
        return exc.conflicts  # type: ignore[no-any-return]
    state = _load_into_namespace(magics, snap, None)
    print(f"merged {args.source} into {snap.branch} as v{snap.version}: {_names(state)}")
    return None


HISTORY_COMMANDS: dict[str, Callable[[StateMagics, argparse.Namespace], Any]] = {
    "tag": cmd_tag, "tags": cmd_tags, "merge": cmd_merge, "show": cmd_show,
}
