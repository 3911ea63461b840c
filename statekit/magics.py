"""``%state`` and ``%%state``: save, load, version and roll back notebook variables.

``%load_ext statekit`` registers :class:`StateMagics`. Its options are traits,
set with ``%config StateMagics.url = ...`` (or in ``ipython_config.py``). The
subcommands live in :mod:`statekit.notebook.commands`, change detection in
:mod:`statekit.notebook.changes` (its docstring explains how auto-checkpoint
stays cheap). A user error is one ``UsageError`` line, never a traceback.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class
from sqlalchemy.exc import SQLAlchemyError
from traitlets import Bool, Float, Unicode, observe

from .errors import StatekitError
from .models import MAIN_BRANCH
from .notebook.args import HelpShown, parse
from .notebook.changes import Baseline, assigned_names, mentioned_names, prune
from .notebook.commands import COMMANDS
from .notebook.namespace import default_entity
from .notebook.saving import SaveRequest, head_snapshot, pickle_hint, save
from .store import StateManager


def one_line(exc: BaseException) -> str:
    """An error's message on one line (SQL errors: their first line, without the SQL)."""
    text = str(exc).strip()
    if isinstance(exc, SQLAlchemyError):
        text = text.splitlines()[0] if text else type(exc).__name__
    return " ".join(text.split()) or type(exc).__name__


_API_HINTS = [
    (re.compile(r"see StateManager\.entities\(\)"), "pick one with %state use ENTITY"),
    (re.compile(r"see history\(\)"), "see %state log"),
    (re.compile(r"see branches\([^)]*\)"), "see %state branch"),
    (re.compile(r"create it with create_branch\([^)]*\)"), "create it with %state branch NAME"),
]


def notebook_words(message: str) -> str:
    """The store's advice, in the magics' terms (``see history()`` -> ``see %state log``)."""
    for pattern, words in _API_HINTS:
        message = pattern.sub(words, message)
    return message


@magics_class
class StateMagics(Magics):
    """Save, load, version and roll back notebook variables in a statekit store.

    Usage::

      %state save [NAMES...] [-m MSG] [--overwrite]   save the named variables, or all that can be saved
      %state load [VERSION] [NAMES...]  put a version (default: the head) into the namespace
      %state rollback [VERSION] [-r REASON]   restore a version (default: the previous one)
      %state log [-b BRANCH] [-n N]     the history, as a DataFrame
      %state diff [A] [B]               what changed (no argument: the namespace vs the head)
      %state branch [NAME] [-f VERSION] list branches, or start one and switch to it
      %state checkout NAME|VERSION      switch branch, or load a version
      %state status                     entity, branch, head, unsaved changes
      %state verify [--all]             check checksums and links
      %state auto on|off                save what each successful cell changed
      %state use ENTITY                 work on another entity
      %state panel                      the interactive history panel

      %%state save [-m MSG]             run the cell, then save what it assigned

    Every command has ``-h``. Options (``%config StateMagics.<name> = value``):
    ``url`` (the store; default $STATEKIT_URL, else .statekit/state.db),
    ``entity`` (default: the notebook's file name, else "notebook"),
    ``allow_pickle`` (default False), ``auto`` (default False),
    ``progress_delay`` (seconds before a progress bar appears; default 1).

    After a kernel restart, ``%load_ext statekit`` then ``%state load`` brings
    the variables back. Modules, functions, classes, IPython's own names,
    ``_``-names and names of Python builtins are never saved, nor bound by a load.

    A save writes only what this kernel changed since it last loaded or saved,
    on top of the head: another kernel's changes are kept. When both changed the
    same variable, ``%state save`` refuses and says which (``--overwrite`` keeps
    yours, ``%state load NAME`` takes theirs); an auto-checkpoint saves the rest
    and warns.
    """

    url = Unicode(None, allow_none=True, help="The store's SQLAlchemy URL. Default: $STATEKIT_URL, "
                  "else the SQLite file .statekit/state.db under the current directory.").tag(config=True)
    entity = Unicode(None, allow_none=True, help="The entity the notebook's variables are saved as. Default: "
                     "the notebook's file name without suffix when the kernel knows it, else 'notebook'.").tag(config=True)
    allow_pickle = Bool(False, help="Store values no codec handles as signed pickles.").tag(config=True)
    auto = Bool(False, help="After each successful cell, save what it changed as a new version.").tag(config=True)
    progress_delay = Float(1.0, help="Seconds a save or load runs before a progress bar appears.").tag(config=True)

    _ready = False

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self._sm: StateManager | None = None
        self.branch = MAIN_BRANCH
        self.baseline = Baseline()
        self.unstorable: dict[str, Any] = {}  # name -> the object the store refused (auto does not retry it)
        self.not_saved: dict[str, str] = {}  # name -> why its latest value is not in the store (for status)
        self.behind: dict[str, int] = {}  # name -> the older version its value matches (see notebook.merging)
        self.ahead: set[str] = set()  # names loaded from an older version: the next save writes them
        self.pending: set[str] = set()  # names mentioned by cells that failed: checked after the next one
        self._noted: set[tuple[str, str]] = set()
        self._in_cell_magic = False
        self._hooked = False
        self._ready = True
        self._set_hook(True)

    # ------------------------------------------------------------ store and entity

    @property
    def ip(self) -> InteractiveShell:
        """The shell these magics run in."""
        if self.shell is None:
            raise UsageError("the %state magics need an IPython shell")
        return self.shell

    @property
    def entity_id(self) -> str:
        """The configured entity, else the notebook's file name, else ``notebook``."""
        return self.entity or default_entity(self.ip.user_ns)

    def store(self) -> StateManager:
        """The StateManager for ``url``, opened on first use."""
        if self._sm is None:
            try:
                self._sm = StateManager(self.url, allow_pickle=self.allow_pickle)
            except (StatekitError, SQLAlchemyError, OSError, ValueError, ImportError) as exc:
                shown = self.url or "the default store"
                raise UsageError(f"cannot open {shown}: {one_line(exc)}") from None
        return self._sm

    def close(self) -> None:
        """Close the store's connections (the next command opens it again)."""
        if self._sm is not None:
            self._sm.close()
            self._sm = None

    def _forget(self) -> None:
        self.baseline = Baseline()
        self.unstorable.clear()
        self.not_saved.clear()
        self.behind.clear()
        self.ahead.clear()
        self.pending.clear()

    @observe("url")
    def _url_changed(self, change: Any) -> None:
        if self._ready:
            self.close()
            self.branch = MAIN_BRANCH
            self._forget()
            if self.auto:
                self._adopt_head()

    @observe("entity")
    def _entity_changed(self, change: Any) -> None:
        if self._ready and change.old != change.new:
            self.branch = MAIN_BRANCH
            self._forget()
            if self.auto:
                self._adopt_head()

    @observe("allow_pickle")
    def _pickle_changed(self, change: Any) -> None:
        if self._ready:
            self.unstorable.clear()
            if self._sm is not None:
                self._sm.allow_pickle = bool(change.new)

    @observe("auto")
    def _auto_changed(self, change: Any) -> None:
        if not self._ready:
            return
        if not change.new:
            print("auto-checkpoint off")
            return
        print(f"auto-checkpoint on for {self.entity_id!r} on {self.branch}: "
              "each successful cell that changes a variable saves a version")
        self._adopt_head()
        self.check_after_cell("", everything=True)

    def _adopt_head(self) -> None:
        """Without a baseline, start from the head as it is now, so that what another kernel saves
        from here on is recognised as theirs (see :mod:`statekit.notebook.merging`)."""
        if self.baseline.entity == self.entity_id and self.baseline.version is not None:
            return
        try:
            head = head_snapshot(self, self.entity_id, self.branch)
        except (UsageError, StatekitError, SQLAlchemyError, sqlite3.Error, OSError):
            return  # the auto-checkpoint that follows reports the problem
        self.baseline = Baseline(self.entity_id, head.version if head is not None else 0, {})
        self.behind.clear()
        self.ahead.clear()

    # ------------------------------------------------------------ the magic

    @line_cell_magic
    def state(self, line: str, cell: str | None = None) -> Any:
        """Save, load, version and roll back notebook variables: ``%state -h`` for the commands."""
        try:
            args = parse(line)
        except HelpShown:
            return None
        if cell is not None:
            return self._cell(args, cell)
        return self._run(lambda: COMMANDS[args.command](self, args))

    def _run(self, work: Any) -> Any:
        try:
            return work()
        except HelpShown:
            return None
        except UsageError as exc:
            raise UsageError(one_line(exc)) from None
        except StatekitError as exc:
            raise UsageError(notebook_words(pickle_hint(one_line(exc), self.allow_pickle))) from None
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise UsageError(f"store error: {one_line(exc)}") from None

    def _cell(self, args: Any, cell: str) -> Any:
        if args.command != "save":
            raise UsageError(f"%%state runs only 'save' (%%state save [-m MSG]); use %state {args.command} "
                             "as a line magic")
        if args.names:
            raise UsageError("%%state save takes no names: it saves what the cell assigns "
                             "(%state save NAMES saves named variables)")
        try:
            assigned, deleted = assigned_names(self.ip.transform_cell(cell))
        except (SyntaxError, ValueError):
            assigned, deleted = set(), set()  # the cell will fail to run and nothing is saved
        self._in_cell_magic = True
        try:
            result = self.ip.run_cell(cell, store_history=False)
        finally:
            self._in_cell_magic = False
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            raise UsageError(f"nothing saved: the cell failed ({type(error).__name__})")
        mentioned = mentioned_names(cell, self.ip.user_ns)
        request = SaveRequest(mode="cell", message=args.message, assigned=assigned, deleted=deleted,
                              mentioned=mentioned, overwrite=bool(getattr(args, "overwrite", False)))
        self._run(lambda: save(self, request))
        return None

    # ------------------------------------------------------------ auto-checkpoint

    def _set_hook(self, on: bool) -> None:
        """Register (or remove) the post_run_cell hook: auto-checkpoint when ``auto`` is on,
        else it only lets the baseline drop deleted variables."""
        events = self.ip.events
        if on and not self._hooked:
            events.register("post_run_cell", self._after_cell)
            self._hooked = True
        elif not on and self._hooked:
            events.unregister("post_run_cell", self._after_cell)
            self._hooked = False

    def _after_cell(self, result: Any) -> None:
        """IPython's post_run_cell hook: save what a successful cell changed (auto on), else
        let go of deleted and rebound variables."""
        if self._in_cell_magic:
            return
        if not self.auto:
            ns = self.ip.user_ns
            prune(self.baseline, ns)
            for name in [n for n, v in self.unstorable.items() if ns.get(n, self) is not v]:
                del self.unstorable[name]
            return
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", None) or ""
        if not getattr(result, "success", False):
            self.pending |= mentioned_names(source, self.ip.user_ns)
            return
        self.check_after_cell(source)

    def check_after_cell(self, source: str, *, everything: bool = False) -> None:
        """Save what changed; never raises (an error is one line on stderr)."""
        ns = self.ip.user_ns
        mentioned = set(ns) if everything else mentioned_names(source, ns) | (self.pending & ns.keys())
        try:
            save(self, SaveRequest(mode="auto", mentioned=mentioned))
            self.pending.clear()
        except (UsageError, StatekitError, SQLAlchemyError, sqlite3.Error, OSError) as exc:
            words = notebook_words(pickle_hint(one_line(exc), self.allow_pickle))
            print(f"statekit auto-checkpoint: not saved: {words}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a hook must never break the user's cell
            print(f"statekit auto-checkpoint: not saved: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)

    def note_skip(self, name: str, why: str, auto: bool) -> bool:
        """Whether to report a skipped variable: always for explicit saves, once per reason for auto."""
        if not auto:
            return True
        key = (name, why)
        if key in self._noted:
            return False
        self._noted.add(key)
        return True


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%state``/``%%state`` (replacing an instance from an earlier load)."""
    unload_ipython_extension(ipython)
    ipython.register_magics(StateMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Turn off auto-checkpoint and close the store of a registered StateMagics, if any."""
    old = ipython.magics_manager.registry.get("StateMagics")
    if isinstance(old, StateMagics):
        old._set_hook(False)
        old.close()
        if old in ipython.configurables:
            ipython.configurables.remove(old)


StateMagics.state.__doc__ = StateMagics.__doc__  # so that %state? shows the full usage
