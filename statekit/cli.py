"""The ``statekit`` command: the store outside a notebook, as a thin shell over the library.

Every subcommand calls one library function (``StateManager`` methods,
``statekit.maintenance``) and prints its result: a table by default, JSON with
``--json``. Everything printed for people has its control, bidi and invisible
characters escaped (``\\x1b``, ``\\u202e``): stored text never acts on the terminal.
``--json`` is ASCII-only standard JSON (NaN and infinities as null, non-text keys
as text); ``show`` gives frames and arrays as shape, dtypes and first rows
(``--rows``), reading only those. ``--url`` defaults to what ``StateManager()`` uses: ``$STATEKIT_URL``,
else ``.statekit/state.db``. Commands that read a SQLite store refuse a file
that does not exist instead of creating an empty store (``restore`` creates it).

Exit codes scripts can rely on; on failure, one line on stderr:

====  ===========================================================================
0     success (``verify`` found no errors; warnings alone still exit 0)
1     any other statekit error (e.g. a store of a newer schema)
2     bad arguments or options
3     integrity: ``verify`` found damage, or a damaged or untrusted payload was read
4     not found: no such store, entity, version or branch
5     conflict: e.g. a restore into a store that is not empty, without ``--merge``
====  ===========================================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pandas as pd
import sqlalchemy as sa

from . import maintenance
from .cli_output import cell, echo, head_table, preview_json, records, say, size, snapshot_dict, summary, table
from .db import resolve_url
from .errors import ConflictError, IntegrityError, InvalidArgumentError, NotFoundError, StatekitError
from .formatting import json_safe, terminal_safe
from .preview import HEAD_ROWS, preview
from .store import StateManager
from .validate import MAX_INT

EXIT_ERROR, EXIT_USAGE, EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 2, 3, 4, 5
CODES: list[tuple[type[BaseException], int]] = [
    (InvalidArgumentError, EXIT_USAGE), (IntegrityError, EXIT_INTEGRITY),
    (NotFoundError, EXIT_NOT_FOUND), (ConflictError, EXIT_CONFLICT),
]


def _fail(message: str, code: int) -> None:
    text = terminal_safe(" ".join(str(message).split()))  # always one line, no terminal controls
    echo(f"statekit: error: {text}", err=True)
    sys.exit(code)


class _Shell(click.Group):
    """A group whose failures are one line on stderr and a documented exit code, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name or "statekit", complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, EXIT_USAGE)
        except click.exceptions.Abort:
            _fail("aborted", EXIT_ERROR)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except StatekitError as exc:
            _fail(str(exc), next((code for cls, code in CODES if isinstance(exc, cls)), EXIT_ERROR))
        except sa.exc.ArgumentError as exc:
            _fail(f"bad store URL: {exc}", EXIT_USAGE)
        except sa.exc.SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            _fail(f"cannot use the store: {str(orig).strip().splitlines()[0] if str(orig).strip() else orig!r}",
                  EXIT_ERROR)
        except BrokenPipeError:  # the reader (e.g. `| head`) stopped reading: nothing left to say
            _quiet_stdout()
            sys.exit(EXIT_ERROR)
        except Exception as exc:  # noqa: BLE001 - a defect: one line, never a traceback, still exit 1
            _fail(f"internal error ({type(exc).__name__}: {exc}); please report it", EXIT_ERROR)
        sys.exit(rv if isinstance(rv, int) else 0)


def _quiet_stdout() -> None:
    with contextlib.suppress(OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed pipe until exit


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--json`` on every subcommand too, so they may follow the subcommand's name."""
    fn = click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON instead of a table.")(fn)
    return click.option("--url", default=None, metavar="URL", help="The store (default: as StateManager()).")(fn)


@click.group(cls=_Shell, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 ok, 1 error, 2 bad arguments, 3 integrity problem, 4 not found, 5 conflict.")
@click.option("--url", default=None, metavar="URL", help="The store: a SQLAlchemy URL or a SQLite file "
              "(default: $STATEKIT_URL, else .statekit/state.db).")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON for scripts instead of tables.")
@click.version_option(package_name="statekit")
@click.pass_context
def cli(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """Inspect and operate a statekit store: list, log, show, diff, verify, purge, back up, restore."""
    ctx.obj = {"url": url, "json": as_json}


class _Run:
    """What a subcommand needs: the store (opened on first use) and the output mode."""

    def __init__(self, ctx: click.Context, url: str | None, as_json: bool, *, create: bool = False):
        self.url = url or ctx.obj["url"]
        self.json = as_json or ctx.obj["json"]
        self.create = create
        self._sm: StateManager | None = None

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sm is not None:
            self._sm.close()

    @property
    def sm(self) -> StateManager:
        if self._sm is None:
            url = sa.engine.make_url(resolve_url(self.url))
            db = url.database
            if url.get_backend_name() == "sqlite" and db and db != ":memory:" and not self.create \
                    and not Path(db).exists():
                raise NotFoundError(f"No store at {db}; pass --url or set STATEKIT_URL.")
            self._sm = StateManager(self.url)
        return self._sm

    def out(self, data: Callable[[], Any], human: Callable[[], None]) -> None:
        """Print ``data()`` as JSON (ASCII only, no NaN: any JSON reader takes it) or call ``human()``."""
        if self.json:
            indent = 2 if sys.stdout.isatty() else None
            click.echo(json.dumps(json_safe(data()), ensure_ascii=True, allow_nan=False, indent=indent))
        else:
            human()


# ================================================================ subcommands


@cli.command()
@_common
@click.pass_context
def entities(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """List the entities in the store."""
    with _Run(ctx, url, as_json) as run:
        frame = run.sm.entities()
        run.out(lambda: records(frame), lambda: table(frame, "no entities"))


@cli.command()
@click.argument("entity")
@click.option("--branch", "-b", default=None, help="Only this branch's versions.")
@click.option("--limit", "-n", type=click.IntRange(min=1, max=MAX_INT), default=None, help="Only the newest N versions.")
@click.option("--include-expired", is_flag=True, help="Also list expired versions not purged yet.")
@click.option("--changed", default=None, metavar="NAME", help="Only versions that changed NAME (or a.key.path).")
@_common
@click.pass_context
def log(ctx: click.Context, entity: str, branch: str | None, limit: int | None, include_expired: bool,
        changed: str | None, url: str | None, as_json: bool) -> None:
    """The versions of ENTITY, oldest first."""
    with _Run(ctx, url, as_json) as run:
        frame = run.sm.history(entity, branch=branch, include_expired=include_expired, limit=limit, changed=changed)
        if frame.empty and entity not in set(run.sm.entities()["entity_id"]):
            raise NotFoundError(f"No entity {entity!r} in this store; see 'statekit entities'.")
        cols = ["version", "branch", "parent_version", "kind", "created_at", "actor", "message", "names", "size_bytes"]
        run.out(lambda: records(frame), lambda: table(frame[cols], "no versions"))


@cli.command()
@click.argument("entity")
@click.argument("version", type=click.IntRange(min=1, max=MAX_INT), required=False)
@click.option("--branch", "-b", default=None, help="The branch whose head to show (default main).")
@click.option("--include-expired", is_flag=True, help="Show a version that has expired but is not purged yet.")
@click.option("--rows", "-r", type=click.IntRange(min=0, max=10_000), default=HEAD_ROWS, show_default=True,
              help="How many first rows of each DataFrame or Series to show.")
@click.option("--as-of", default=None, metavar="TIME", help="The head as it was then ('2026-11-30 17:00', UTC).")
@click.option("--tag", default=None, help="The version this tag names.")
@_common
@click.pass_context
def show(ctx: click.Context, entity: str, version: int | None, branch: str | None, include_expired: bool,
         rows: int, as_of: str | None, tag: str | None, url: str | None, as_json: bool) -> None:
    """One version of ENTITY (default: the head): its metadata and values (frames: shape, dtypes, first rows)."""
    with _Run(ctx, url, as_json) as run:
        if as_of is not None or tag is not None:  # resolve the version first; the preview reads only what it shows
            version = run.sm.get(entity, version, branch=branch, include_expired=include_expired,
                                 as_of=as_of, tag=tag).version
            branch = None
        snap, previews = preview(run.sm, entity, version, branch=branch, include_expired=include_expired, rows=rows)
        meta = snapshot_dict(snap)

        def human() -> None:
            width = max(map(len, meta))
            for k, v in meta.items():
                echo(f"{k:<{width}}  {cell(v)}")
            echo("")
            listing = [{"name": n, "type": p.type_name, "value": summary(p)} for n, p in previews.items()]
            table(pd.DataFrame(listing, columns=["name", "type", "value"]), "no values")
            for n, p in previews.items():
                if isinstance(p.head, (pd.DataFrame, pd.Series)) and len(p.head):
                    echo("")
                    say(f"{n}: first {len(p.head)} of {p.shape[0] if p.shape else '?'} rows")
                    head_table(p.head)

        run.out(lambda: {"snapshot": meta, "state": {k: preview_json(p) for k, p in previews.items()}}, human)


@cli.command()
@click.argument("entity")
@click.argument("a", type=click.IntRange(min=1, max=MAX_INT))
@click.argument("b", type=click.IntRange(min=1, max=MAX_INT), required=False)
@click.option("--branch", default=None, help="The branch whose head B defaults to (default main).")
@_common
@click.pass_context
def diff(ctx: click.Context, entity: str, a: int, b: int | None, branch: str | None, url: str | None,
         as_json: bool) -> None:
    """What changed in ENTITY from version A to version B (default: the head)."""
    with _Run(ctx, url, as_json) as run:
        frame = run.sm.diff(entity, a, b, branch=branch)
        run.out(lambda: records(frame), lambda: table(frame, "no differences"))


@cli.command()
@click.argument("entity", required=False)
@_common
@click.pass_context
def verify(ctx: click.Context, entity: str | None, url: str | None, as_json: bool) -> int:
    """Check checksums, payloads, parents and branch heads (of ENTITY, or the whole store)."""
    with _Run(ctx, url, as_json) as run:
        frame = maintenance.verify(run.sm, entity)
        run.out(lambda: records(frame), lambda: table(frame, "OK: no problems found"))
    errors = frame[frame["severity"] == "error"]
    if errors.empty:
        return 0
    echo(f"statekit: error: verify found {len(errors)} integrity problems in "
         f"{errors['snapshot_id'].nunique()} snapshots", err=True)
    return EXIT_INTEGRITY


@cli.command()
@click.argument("entity")
@click.option("--branch", "-b", default=None, help="The branch to recover (default main).")
@click.option("--reason", default=None, help="Why, for the audit trail.")
@_common
@click.pass_context
def recover(ctx: click.Context, entity: str, branch: str | None, reason: str | None, url: str | None,
            as_json: bool) -> None:
    """Make ENTITY's last intact version its new head (recorded as a 'recover' transition)."""
    with _Run(ctx, url, as_json) as run:
        snap = maintenance.recover(run.sm, entity, branch, reason=reason)
        run.out(lambda: snapshot_dict(snap), lambda: say(f"{entity} v{snap.version} ({snap.kind}): {snap.message}"))


@cli.command("purge-expired")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, and remove nothing.")
@_common
@click.pass_context
def purge_expired(ctx: click.Context, dry_run: bool, url: str | None, as_json: bool) -> None:
    """Remove expired snapshots and the payloads only they used."""
    with _Run(ctx, url, as_json) as run:
        frame = maintenance.purge_expired(run.sm, dry_run=dry_run)

        def human() -> None:
            snaps, chunks = frame[frame["kind"] == "snapshot"], frame[frame["kind"] == "chunk"]
            branches = frame[frame["kind"] == "branch"]
            verb = "Would remove" if dry_run else "Removed"
            say(f"{verb} {len(snaps)} snapshots, {len(chunks)} payload chunks "
                f"({size(int(chunks['size_bytes'].sum()))}) and {len(branches)} branches.")
            if len(snaps):
                table(snaps[["entity_id", "version", "branch", "expires_at", "size_bytes"]], "")

        run.out(lambda: records(frame), human)


@cli.command()
@click.argument("entity", required=False)
@click.option("--keep-last", type=click.IntRange(min=0), default=None, help="Keep the newest N versions.")
@click.option("--keep-within", default=None, metavar="SPAN", help="Keep versions this recent: 7d, 12h, 30m.")
@click.option("--keep-daily", type=click.IntRange(min=0), default=None, help="Keep the newest of each of N days.")
@click.option("--max-bytes", type=click.IntRange(min=0), default=None, help="Remove the oldest until it fits.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, and remove nothing.")
@_common
@click.pass_context
def retain(ctx: click.Context, entity: str | None, keep_last: int | None, keep_within: str | None,
           keep_daily: int | None, max_bytes: int | None, dry_run: bool, url: str | None, as_json: bool) -> None:
    """Remove old versions of ENTITY (or every entity) by policy; heads, tags and merge ancestors stay."""
    with _Run(ctx, url, as_json) as run:
        frame = run.sm.retain(entity, keep_last=keep_last, keep_within=keep_within, keep_daily=keep_daily,
                              max_bytes=max_bytes, dry_run=dry_run)

        def human() -> None:
            verb = "Would remove" if dry_run else "Removed"
            say(f"{verb} {len(frame)} versions, freeing {size(int(frame['bytes_freed'].sum()))}.")
            if len(frame):
                table(frame[["entity_id", "version", "branch", "reason", "bytes_freed"]], "")

        run.out(lambda: records(frame), human)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@_common
@click.pass_context
def backup(ctx: click.Context, path: str, url: str | None, as_json: bool) -> None:
    """Write a consistent backup of the whole store to PATH (while others keep saving)."""
    with _Run(ctx, url, as_json) as run:
        info = run.sm.backup(path)
        counts = info["counts"]
        run.out(lambda: info, lambda: say(
            f"Backed up {counts['state_entities']} entities, {counts['state_snapshots']} snapshots and "
            f"{counts['state_transitions']} transitions to {info['path']} ({size(info['bytes'])})."))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--merge", is_flag=True, help="Add the backup's history to a store that is not empty.")
@_common
@click.pass_context
def restore(ctx: click.Context, path: str, merge: bool, url: str | None, as_json: bool) -> None:
    """Load the backup at PATH into the store (which must be empty unless --merge)."""
    with _Run(ctx, url, as_json, create=True) as run:
        info = run.sm.restore(path, merge=merge)
        run.out(lambda: info, lambda: say(
            f"Restored {info['snapshots_added']} snapshots ({info['snapshots_skipped']} already present), "
            f"{info['transitions_added']} transitions and {info['chunks_added']} payload chunks from {path}."))


def main() -> None:
    """Console entry point (``statekit``) and ``python -m statekit``."""
    cli.main(prog_name="statekit")
