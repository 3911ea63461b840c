"""The state panel: pick an entity, see its versions on a timeline, diff two, load or roll back.

``panel(store, entity)`` returns a :class:`StatePanel`: stock ipywidgets
(``panel_controls``) around a plotly ``FigureWidget`` (``panel_figure``).

- **Choosing versions.** Dropdowns A (from) and B (to); clicking a marker makes
  it B and the previous B becomes A, so two clicks compare two versions. Each
  change shows ``sm.diff(entity, A, B)`` as a table, kept as ``panel.diff_frame``.
  The x axis shows save times, or version numbers (evenly spaced) for bursts.
- **Acting.** *Load B…* and *Roll back to B…* first ask Confirm/Cancel. Load puts
  B's variables into the IPython namespace when there is one (and always on
  ``panel.loaded``). Roll back records a rollback to B on B's branch (reason
  "rolled back from the panel"), refused if that branch's head moved since the
  panel last looked; it changes the store, not the namespace.
- **Staying current.** The panel subscribes to its StateManager: changes made
  through it (``%state save`` in this kernel) redraw the panel once the running
  cell finishes, keeping the selection and the zoom. Observers fire only in the
  process, and for the StateManager object, that made the change: saves from
  another process (a colleague on the shared PostgreSQL store, a script,
  another kernel) show after *Refresh*, or by themselves with
  ``panel(..., poll=seconds)``, which checks the branch heads while the kernel
  is idle (``panel_watch``). Opening a new panel on the same StateManager and
  entity closes the previous one; ``close()`` unsubscribes and stops polling.
- **Where widgets cannot render** (nbconvert to HTML, GitHub's viewer) the
  output also carries ``text/html`` (``panel_static``): a static plotly figure,
  the diff table and the latest versions. nbconvert uses it when the notebook
  has no saved widget state; where no scripts run (GitHub) the tables show.
"""

from __future__ import annotations

import asyncio
import html
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..errors import InvalidArgumentError
from ..lineage import of_entity
from ..models import MAIN_BRANCH
from ..snapshot import StateEvent
from ..store import StateManager
from . import figure as pf
from . import static as ps
from .controls import PanelView, names_html, status_html, summary_html, version_label
from .watch import HeadPoller, heads_fingerprint

ROLLBACK_REASON = "rolled back from the panel"


def panel(store: StateManager | str | None = None, entity: str | None = None, *,
          poll: float | None = None) -> StatePanel:
    """Open a state panel on ``store`` (a StateManager, a store URL, or None for the default store).

    ``entity`` defaults to the first entity in the store. ``poll`` (seconds)
    makes the panel notice saves made by other processes; see the module doc.
    """
    if isinstance(store, StateManager):
        sm, owns = store, False
    elif store is None or isinstance(store, str):
        sm, owns = StateManager(store), True
    else:
        raise InvalidArgumentError(
            f"panel() takes a StateManager, a store URL or None, not {type(store).__name__}."
        )
    try:
        p = StatePanel(sm, entity, owns_store=owns, poll=poll)
    except Exception:
        if owns:
            sm.close()
        raise
    # Re-running a cell with `%state panel` must not pile up hidden panels that all refresh on
    # each save: a new panel on the same StateManager and entity closes the previous one.
    key = (id(sm), p.entity)
    previous = _open_panels.get(key)
    old = previous() if previous is not None else None
    if old is not None and old is not p and old.sm is sm:
        old.close()
    _open_panels[key] = weakref.ref(p)
    return p


_open_panels: dict[tuple[int, str | None], weakref.ref[StatePanel]] = {}


class StatePanel(PanelView):
    """The panel widget; see the module docstring for what each part does."""

    # defaults, so close() (also called by Widget.__del__) works on a panel whose __init__ failed
    _closed = False
    _owns_store = False
    _unsubscribe: Callable[[], None] | None = None
    _poller: HeadPoller | None = None
    _catch_up_scheduled = False
    _parts: tuple[widgets.Widget, ...] = ()
    _x_mode = "time"

    def __init__(self, sm: StateManager, entity: str | None = None, *, owns_store: bool = False,
                 poll: float | None = None, **kwargs: Any):
        from .. import validate

        if entity is not None:
            entity = validate.identifier(entity, "entity")
        if poll is not None and (not isinstance(poll, (int, float)) or isinstance(poll, bool) or poll <= 0):
            raise InvalidArgumentError(f"poll must be a positive number of seconds, not {poll!r}.")
        self.sm = sm
        self.entity: str | None = entity
        self.diff_frame: pd.DataFrame | None = None
        """The diff of the chosen versions (None until two are chosen)."""
        self.loaded: dict[str, Any] | None = None
        """The variables of the last version loaded with the Load button."""
        self.timeline = pf.Timeline()
        self.history = pd.DataFrame()
        self._owns_store = owns_store
        self._busy = False  # set while the panel itself changes dropdowns, so observers do not re-enter
        self._fingerprint: Any = None

        self._x_mode = "time"
        ids = [str(e) for e in sm.entities()["entity_id"]]
        if self.entity is None and ids:
            self.entity = ids[0]
        self._read()
        super().__init__(pf.build_figure(self.timeline, self.entity, self._default_selection()), **kwargs)
        self._wire_figure()
        self._set_entities(ids)

        self.entity_picker.observe(self._on_entity, names="value")
        self.x_axis.observe(lambda _c: self._guard(self._redraw), names="value")
        self.version_a.observe(self._on_version, names="value")
        self.version_b.observe(self._on_version, names="value")
        self.refresh_button.on_click(lambda _b: self._guard(self.refresh))
        self.load_button.on_click(lambda _b: self._ask("load"))
        self.rollback_button.on_click(lambda _b: self._ask("rollback"))
        self._unsubscribe = sm.subscribe(self._on_event)
        self._apply(reset=True, redraw=False)
        if poll is not None:
            self._poller = HeadPoller(sm, float(poll), lambda: self.entity, lambda: self._guard(self.refresh),
                                      lambda exc: self._say(html.escape(f"Polling failed: {exc}"), error=True))
            self._poller.last = self._fingerprint
            if not self._poller.start():
                self._say("poll= needs a running event loop (a Jupyter kernel); press Refresh instead.",
                          error=True)

    # ------------------------------------------------------------ reading the store

    def refresh(self, *, reset: bool = False) -> None:
        """Re-read the entity's history and redraw; keeps the chosen versions unless ``reset``."""
        self._read()
        self._apply(reset=reset)

    def _read(self) -> None:
        """Read the entity's metadata (history, transitions, branches; never payloads)."""
        entity = self.entity
        if entity is None:
            hist = pd.DataFrame(columns=["version", "branch", "parent_version", "kind", "created_at", "actor",
                                         "message", "names", "size_bytes", "new_bytes"])
            trans = branches = lineage = None
        else:
            hist = self.sm.history(entity)
            trans = self.sm.transitions(entity)
            branches = self.sm.branches(entity)
            lineage = of_entity(self.sm, entity)  # one query, the lineage column only: for the hover
            self._fingerprint = heads_fingerprint(branches)
            if self._poller is not None:
                self._poller.last = self._fingerprint
        self.history = hist
        self._frames = (hist, trans, branches)
        self._lineage = lineage
        self.timeline = pf.build_timeline(hist, trans, branches, x_mode=self._x_mode, lineage=lineage)

    def _redraw(self) -> None:
        """Switch the x axis between time and version number (no store access)."""
        self._x_mode = self.x_axis.value
        self.timeline = pf.build_timeline(*self._frames, x_mode=self._x_mode, lineage=self._lineage)
        self._apply(reset=False)

    def _default_selection(self) -> tuple[int | None, int | None]:
        """B: the newest version; A: its parent. Opening the panel shows the latest change."""
        if not self.timeline.versions:
            return None, None
        b = max(self.timeline.versions)
        parent = self.history.loc[self.history["version"] == b, "parent_version"].iloc[0]
        a = int(parent) if pd.notna(parent) and int(parent) in self.timeline.versions else None
        return a, b

    def _apply(self, *, reset: bool, redraw: bool = True) -> None:
        """Show what ``_read`` found: figure, dropdowns, summary; the diff when the selection moved."""
        if reset:
            a, b = self._default_selection()
        else:
            known = set(self.timeline.versions)
            a, b = self.version_a.value, self.version_b.value
            a, b = (a if a in known else None), (b if b in known else None)
        if redraw and pf.update_figure(self.figure, self.timeline, self.entity, (a, b)):
            self._wire_figure()
        options = [(version_label(row), int(row.version)) for row in self.history.iloc[::-1].itertuples(index=False)]
        changed = reset or (a, b) != (self.version_a.value, self.version_b.value)
        self._busy = True
        try:
            for dropdown, value in ((self.version_a, a), (self.version_b, b)):
                dropdown.options = options
                dropdown.value = value
        finally:
            self._busy = False
        self._update_summary()
        self._update_buttons()
        if changed:
            self._show_diff()

    def _wire_figure(self) -> None:
        self.figure.data[pf.MARKERS].on_click(self._on_click)

    def _load_entities(self) -> None:
        ids = [str(e) for e in self.sm.entities()["entity_id"]]
        if self.entity is None and ids:
            self.entity = ids[0]
        self._set_entities(ids)

    def _set_entities(self, ids: list[str]) -> None:
        if self.entity is not None and self.entity not in ids:
            ids.append(self.entity)  # a notebook's entity before its first save
        self._busy = True
        try:
            self.entity_picker.options = ids
            self.entity_picker.value = self.entity
        finally:
            self._busy = False

    def _update_summary(self) -> None:
        self.summary.value = summary_html(self.entity, self.timeline)

    # ------------------------------------------------------------ choosing versions

    def select(self, a: int | None, b: int | None) -> None:
        """Choose versions A and B (as the dropdowns do) and show their diff."""
        known = set(self.timeline.versions)
        for v in (a, b):
            if v is not None and v not in known:
                raise InvalidArgumentError(f"{self.entity!r} has no version {v} on the timeline.")
        self._busy = True
        try:
            self.version_a.value = a
            self.version_b.value = b
        finally:
            self._busy = False
        self.confirm_box.hide()
        self._update_buttons()
        self._show_diff()

    def _on_version(self, _change: dict[str, Any]) -> None:
        if self._busy:
            return
        self._say("")
        self.confirm_box.hide()
        self._update_buttons()
        self._show_diff()

    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        """A click on a marker makes it B; the previous B becomes A."""
        if not points.point_inds:
            return  # plotly calls every trace's handler; only the clicked one has points
        version = self.timeline.versions[points.point_inds[0]]
        previous = self.version_b.value
        if version == previous:
            return
        self._say("")
        self._guard(lambda: self.select(previous if previous is not None else self.version_a.value, version))

    def _show_diff(self) -> None:
        a, b = self.version_a.value, self.version_b.value
        pf.update_selection(self.figure, self.timeline, (a, b))
        if b is None or self.entity is None:
            self.diff_frame = None
            self.diff_view.value = "<i>Choose version B (and A) above, or click markers on the timeline.</i>"
            return
        self.diff_view.value = f"<i>Comparing v{a} and v{b}…</i>" if a is not None else "<i>Comparing…</i>"
        try:
            frame = self.sm.diff(self.entity, a, b)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the panel keeps working
            self.diff_frame = None
            self.diff_view.value = ""
            self._say(html.escape(f"Cannot diff v{a} and v{b}: {exc}"), error=True)
            return
        self.diff_frame = frame
        self.diff_view.value = ps.diff_html(frame, a, b)

    def _on_entity(self, change: dict[str, Any]) -> None:
        if self._busy or change["new"] == self.entity:
            return
        self.entity = change["new"]
        self.confirm_box.hide()
        self._say("")
        self._guard(lambda: self.refresh(reset=True))

    # ------------------------------------------------------------ acting on a version

    def _update_buttons(self) -> None:
        off = self.version_b.value is None
        self.load_button.disabled = off
        self.rollback_button.disabled = off

    def _ask(self, action: str) -> None:
        """Show the confirmation bar for Load or Roll back, acting on the current B."""
        b = self.version_b.value
        if b is None:
            return
        if action == "load":
            names = self.history.loc[self.history["version"] == b, "names"].iloc[0]
            where = "the notebook's namespace" if _shell() is not None else "<code>panel.loaded</code>"
            question = f"Load v{b} into {where}? It sets: {names_html(names)}."
            self.confirm_box.ask(question, lambda: self._guard(lambda: self.load(b)))
        else:
            branch = html.escape(self.timeline.y[self.timeline.versions.index(b)])
            question = (f"Roll <b>{branch}</b> back to v{b}? This records a new version equal to v{b}; "
                        "nothing is deleted. The namespace is not changed (use Load for that).")
            self.confirm_box.ask(question, lambda: self._guard(lambda: self.rollback(b)))

    def load(self, version: int) -> dict[str, Any]:
        """Load ``version``: into the IPython namespace when there is one, and onto ``self.loaded``."""
        if self.entity is None:
            raise InvalidArgumentError("The panel shows no entity.")
        state = self.sm.load(self.entity, version)
        self.loaded = state
        names = html.escape(", ".join(state)) or "(nothing)"
        shell = _shell()
        if shell is not None:
            shell.push(state)
            self._say(f"Loaded v{version} into the namespace: {names}.")
        else:
            self._say(f"Loaded v{version} into <code>panel.loaded</code>: {names}.")
        return state

    def rollback(self, version: int) -> Any:
        """Record a rollback to ``version`` on its own branch; returns the new StateSnapshot."""
        if self.entity is None:
            raise InvalidArgumentError("The panel shows no entity.")
        pos = self.timeline.position(version)
        branch = pos[1] if pos is not None else MAIN_BRANCH
        head = self.timeline.heads.get(branch)
        if head == version:
            self._say(f"v{version} is already the head of {html.escape(branch)}: nothing to roll back.")
            return None
        # expected_version: if someone else moved the head since the panel last looked, refuse
        snap = self.sm.rollback(self.entity, version, reason=ROLLBACK_REASON, branch=branch,
                                expected_version=head)
        # our own observer has refreshed the timeline by now; show what the rollback undid
        if snap.version not in self.timeline.versions:
            self.refresh()
        self.select(head if head in self.timeline.versions else version, snap.version)
        self._say(f"Rolled {html.escape(branch)} back to v{version}: new version v{snap.version}.")
        return snap

    # ------------------------------------------------------------ staying current

    def _on_event(self, event: StateEvent) -> None:
        """Called by the store after each committed change made through ``self.sm``.

        In a kernel the refresh is deferred to the event loop: a cell that
        saves a hundred versions pays for one refresh, after it finishes, and
        each save returns without waiting for the panel.
        """
        if self._closed:
            return
        if event.entity_id != self.entity and event.entity_id in self.entity_picker.options:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # plain Python, or a thread of its own: refresh now
            self._guard(self._catch_up)
            return
        if not self._catch_up_scheduled:
            self._catch_up_scheduled = True
            loop.call_soon(lambda: self._guard(self._catch_up))

    def _catch_up(self) -> None:
        self._catch_up_scheduled = False
        if self._closed:
            return
        was_empty = self.entity is None
        self._load_entities()
        self.refresh(reset=was_empty)

    def close(self) -> None:
        """Unsubscribe, stop polling, close the child widgets (and the store, if the panel opened it)."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._poller is not None:
            self._poller.stop()
        if self._owns_store:
            self.sm.close()
        super().close()  # closes every widget of the panel

    # ------------------------------------------------------------ messages and static output

    def _say(self, text_html: str, *, error: bool = False) -> None:
        self.status.value = status_html(text_html, error=error)

    def _guard(self, fn: Callable[[], Any]) -> None:
        """Run a callback from the browser; show errors in the panel (they would vanish in the JS console)."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the user sees it in the status line
            self._say(html.escape(f"{type(exc).__name__}: {exc}"), error=True)

    def static_html(self) -> str:
        """The panel as plain HTML: a static plotly figure, the diff table and the latest versions."""
        return ps.static_html(self.timeline, self.entity, (self.version_a.value, self.version_b.value),
                              summary=self.summary.value, history=self.history, diff_frame=self.diff_frame)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        """The widget view, plus a static ``text/html`` for places where widgets cannot run."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        bundle["text/html"] = self.static_html()
        return bundle


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()
