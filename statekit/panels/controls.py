"""What the state panel looks like: its stock widgets, their layout, and the text it shows.

``PanelView`` builds and arranges the widgets; ``panel.StatePanel`` subclasses
it and adds the behaviour (what happens when the user picks, clicks or
confirms), so each module keeps to one concern.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from . import figure as pf


class PanelView(widgets.VBox):
    """The panel's widgets, top to bottom: entity picker, Refresh, x-axis toggle and summary; the
    timeline; versions A and B; Load and Roll back; the confirmation bar; a status line; the diff."""

    def __init__(self, figure: widgets.DOMWidget, **kwargs: Any):
        self.figure = figure
        self.entity_picker = widgets.Dropdown(description="Entity", layout=widgets.Layout(width="320px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh",
                                             tooltip="Re-read the store (saves from other processes)")
        self.x_axis = widgets.ToggleButtons(options=[("time", "time"), ("version", "version")], value="time",
                                            tooltip="x axis: when each version was saved, or its number",
                                            style={"button_width": "70px"})
        self.summary = widgets.HTML()
        self.version_a = widgets.Dropdown(description="A (from)", layout=widgets.Layout(width="440px"))
        self.version_b = widgets.Dropdown(description="B (to)", layout=widgets.Layout(width="440px"))
        self.load_button = widgets.Button(description="Load B…", icon="download",
                                          tooltip="Put version B's variables into the namespace")
        self.rollback_button = widgets.Button(description="Roll back to B…", icon="undo", button_style="warning",
                                              tooltip="Record a new version equal to B on B's branch")
        self.confirm_box = ConfirmBar()
        self.confirm_text = self.confirm_box.text
        self.confirm_button = self.confirm_box.confirm_button
        self.cancel_button = self.confirm_box.cancel_button
        self.status = widgets.HTML()
        self.diff_view = widgets.HTML()
        rows = [
            widgets.HBox([self.entity_picker, self.refresh_button, self.x_axis, self.summary],
                         layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.version_a, self.version_b]),
            widgets.HBox([self.load_button, self.rollback_button]),
        ]
        super().__init__(children=[rows[0], figure, rows[1], rows[2], self.confirm_box, self.status,
                                   self.diff_view], **kwargs)
        self.add_class("statekit-panel")
        self._parts: tuple[widgets.Widget, ...] = (
            figure, self.entity_picker, self.refresh_button, self.x_axis, self.summary, self.version_a,
            self.version_b, self.load_button, self.rollback_button, self.confirm_box, self.status,
            self.diff_view, *rows)

    def close(self) -> None:
        """Close every widget of the panel (their views leave the page)."""
        for w in self._parts:
            w.close()
        super().close()


class ConfirmBar(widgets.HBox):
    """A question with Confirm and Cancel, hidden until ``ask()``; Confirm runs the action once."""

    def __init__(self) -> None:
        self.text = widgets.HTML()
        self.confirm_button = widgets.Button(description="Confirm", button_style="danger")
        self.cancel_button = widgets.Button(description="Cancel")
        super().__init__([self.text, self.confirm_button, self.cancel_button],
                         layout=widgets.Layout(display="none", align_items="center"))
        self._action: Callable[[], Any] | None = None
        self.confirm_button.on_click(lambda _b: self._confirm())
        self.cancel_button.on_click(lambda _b: self.hide())

    def ask(self, question_html: str, action: Callable[[], Any]) -> None:
        self._action = action
        self.text.value = question_html
        self.layout.display = "flex"

    def hide(self) -> None:
        self._action = None
        self.layout.display = "none"

    @property
    def pending(self) -> bool:
        return self._action is not None

    def _confirm(self) -> None:
        action = self._action
        self.hide()
        if action is not None:
            action()

    def close(self) -> None:
        for w in (self.text, self.confirm_button, self.cancel_button):
            w.close()
        super().close()


def version_label(row: Any) -> str:
    """A history row as a dropdown option: ``v12 · main · 2024-05-01 12:00:03 · update · message``."""
    msg = pf.cell_text(row.message)
    when = pf.utc_naive(row.created_at)
    text = f"v{int(row.version)} · {row.branch} · {when:%Y-%m-%d %H:%M:%S} · {row.kind}"
    return text + (f" · {pf.shorten(msg, 30)}" if msg else "")


def summary_html(entity: str | None, tl: pf.Timeline) -> str:
    """One line: the entity, how many versions, each branch's head."""
    if entity is None:
        return "<i>No entities in this store yet: save one and it appears here.</i>"
    heads = ", ".join(f"{html.escape(b)} → v{v}" for b, v in tl.heads.items())
    n = len(tl.versions)
    return (f"<b>{html.escape(entity)}</b>: {n} version{'s' if n != 1 else ''}"
            + (f"; heads {heads}" if heads else "; no versions yet"))


def names_html(names: Any, limit: int = 12) -> str:
    """The first ``limit`` variable names of a version, escaped, for a confirmation question."""
    names = [str(n) for n in names]
    shown = ", ".join(html.escape(n) for n in names[:limit]) + (" …" if len(names) > limit else "")
    return shown or "(nothing)"


def status_html(text: str, *, error: bool = False) -> str:
    colour = "#b00020" if error else "#333333"
    return f'<span style="color:{colour}">{text}</span>' if text else ""
