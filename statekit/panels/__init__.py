"""The state panel: a plotly timeline of an entity's versions and the diff of two, as ipywidgets.

``widget`` wires the controls and the store together, ``figure`` builds the
timeline from history alone (never payloads), ``controls`` lays out the
widgets, ``static`` renders the view for places where widgets cannot run, and
``watch`` polls for saves made by other processes.
"""

from .widget import ROLLBACK_REASON, StatePanel, panel

__all__ = ["ROLLBACK_REASON", "StatePanel", "panel"]
