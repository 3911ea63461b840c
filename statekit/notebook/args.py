"""The ``%state`` command line: an argparse parser whose errors are one-line UsageErrors.

As in jupysql's ``%sqlcmd``, every subcommand has its own parser (so each has
``-h``), and ``error()`` raises IPython's ``UsageError`` instead of exiting.
``-h`` prints the help and raises :class:`HelpShown`, which the magic turns
into "nothing to do".
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError

MAX_VERSION = 2**63 - 1
_VERSION = re.compile(r"[vV]?([0-9]+)")


class HelpShown(Exception):
    """``-h`` printed the help: the command has nothing else to do."""


class StateArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that never exits the process."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("%state").strip()
        hint = f"%state {command} -h" if command else "%state -h"
        raise UsageError(f"{self.prog}: {_one_line(message)} (see {hint})")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status == 0:
            raise HelpShown()
        raise UsageError(f"{self.prog}: {_one_line(message or 'invalid arguments')}")


def _one_line(message: str) -> str:
    """argparse quotes arguments as typed: a newline or tab inside one is shown escaped."""
    return message.strip().replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def version_number(text: str, *, allow_v: bool = True) -> int:
    """``3`` (or ``v3``) -> 3; anything else is an argparse error."""
    m = _VERSION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or (not allow_v and not text.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (write 3 or v3)")
    value = int(m.group(1))
    if not 1 <= value <= MAX_VERSION:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (versions start at 1)")
    return value


def is_version(text: str) -> bool:
    try:
        version_number(text)
    except argparse.ArgumentTypeError:
        return False
    return True


COMMANDS = ("save", "load", "rollback", "log", "diff", "branch", "checkout", "status", "verify",
            "auto", "use", "panel", "tag", "tags", "merge", "show")


def build_parser() -> tuple[StateArgumentParser, dict[str, StateArgumentParser]]:
    """The parser for ``%state COMMAND ...`` (for help and unknown commands), and one per command."""
    parser = StateArgumentParser(
        prog="%state", description="Save, load, version and roll back notebook variables in the statekit store.",
        epilog="Each command has its own help: %state save -h. Options: %config StateMagics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=StateArgumentParser)
    commands: dict[str, StateArgumentParser] = {}

    def add(name: str, summary: str, description: str | None = None) -> StateArgumentParser:
        p: StateArgumentParser = sub.add_parser(name, help=summary, description=description or summary,
                                                prog=f"%state {name}")
        commands[name] = p
        return p

    p = add("save", "save variables as a new version",
            "Save the named variables, or every user variable that can be saved, as a new version. "
            "Variables not named are carried over from the previous version; unchanged ones are not "
            "encoded again. Only what this kernel changed is written, on top of the current head: another "
            "writer's changes to other variables are kept. In a cell: %%state save [-m MSG] runs the cell, "
            "then saves what it assigned.")
    p.add_argument("names", nargs="*", metavar="NAME", help="variables to save (default: all that can be saved)")
    p.add_argument("-m", "--message", help="a note for the history (quote it if it has spaces)")
    p.add_argument("--overwrite", action="store_true",
                   help="save your values even where another writer changed the same variable since this "
                        "kernel last loaded or saved (by default the save is refused and says which)")

    p = add("load", "put a version's variables into the namespace",
            "Load a version (default: the head of the current branch) into the namespace; "
            "after a kernel restart, %load_ext statekit then %state load brings the work back.")
    p.add_argument("target", nargs="*", metavar="[VERSION] NAME",
                   help="a version number (first), then the variables to load (default: all)")
    p.add_argument("--as-of", metavar="TIME", help="the head as it was then, e.g. '2026-11-30 17:00' (UTC)")

    p = add("rollback", "restore a version as a new version",
            "Make a new version equal to VERSION (default: the one before the head), record the rollback, "
            "and put its variables back; variables it does not hold are left alone.")
    p.add_argument("version", nargs="?", type=version_number, metavar="VERSION")
    p.add_argument("-r", "--reason", help="why, for the audit trail")

    p = add("log", "the history, one row per version")
    p.add_argument("changed", nargs="?", metavar="NAME", help="only the versions that changed NAME (or a.key.path)")
    p.add_argument("-b", "--branch", help="only this branch (default: all)")
    p.add_argument("-n", "--limit", type=_positive, metavar="N", help="only the last N versions")
    p.add_argument("-a", "--all-columns", action="store_true", help="every column of StateManager.history()")
    p.add_argument("-c", "--code", action="store_true", help="the code recorded with each version (its lineage)")

    p = add("diff", "what changed, one row per item",
            "With no argument: the namespace against the head. With A: version A against the head. "
            "With A and B: version A against version B.")
    p.add_argument("a", nargs="?", type=version_number, metavar="A")
    p.add_argument("b", nargs="?", type=version_number, metavar="B")

    p = add("branch", "list branches, or start one and switch to it")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-f", "--from", dest="from_version", type=version_number, metavar="VERSION",
                   help="start at this version (default: the version the namespace was last saved or loaded as)")

    p = add("checkout", "switch to a branch, or load a version, into the namespace")
    p.add_argument("target", metavar="NAME|VERSION")

    add("status", "entity, branch, head, and what changed in the namespace since the last save or load")

    p = add("verify", "check the stored checksums and links")
    p.add_argument("--all", action="store_true", help="the whole store, not only this entity")

    p = add("auto", "turn auto-checkpoint on or off",
            "on: after each cell that succeeds, save what it changed as a new version (nothing if nothing changed).")
    p.add_argument("switch", choices=["on", "off"], metavar="on|off")

    p = add("use", "work on another entity")
    p.add_argument("entity", metavar="ENTITY")

    add("panel", "the interactive history panel")
    from .history_commands import add_parsers

    add_parsers(add)
    for p in commands.values():
        # fix the usage text now: parse_intermixed_args %-formats it again, and "%state" holds "%s"
        p.usage = p.format_usage().removeprefix("usage: ").strip().replace("%", "%%")
    return parser, commands


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_VERSION:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


_PARSERS: tuple[StateArgumentParser, dict[str, StateArgumentParser]] | None = None


def parse(line: str) -> argparse.Namespace:
    """Split ``line`` like a shell and parse it; UsageError (one line) on anything wrong.

    Options and names may come in any order (``save a -m note b``).
    """
    global _PARSERS
    if _PARSERS is None:
        _PARSERS = build_parser()
    top, commands = _PARSERS
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%state: cannot read the arguments: {exc} (check the quotes)") from None
    if not words:
        raise UsageError(f"%state needs a command: {', '.join(COMMANDS)} (see %state -h)")
    command = commands.get(words[0])
    if command is None:
        top.parse_args(words)  # prints the help, or raises the UsageError for an unknown command
        raise UsageError(f"%state needs a command: {', '.join(COMMANDS)} (see %state -h)")
    args: Any = command.parse_intermixed_args(words[1:])
    args.command = words[0]
    return args
