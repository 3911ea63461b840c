"""A test shell with statekit loaded: history off, errors raised (the jupysql / storemagic model)."""

from __future__ import annotations

import atexit

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


def make_shell(url: str | None, entity: str | None = None, *, progress_delay: float | None = None) -> InteractiveShell:
    """A fresh shell with ``%load_ext statekit`` done and the store and entity configured."""
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    atexit.unregister(shell.atexit_operations)
    shell.run_line_magic("load_ext", "statekit")
    if url is not None:
        shell.run_line_magic("config", f"StateMagics.url = {url!r}")
    if entity is not None:
        shell.run_line_magic("config", f"StateMagics.entity = {entity!r}")
    if progress_delay is not None:
        shell.run_line_magic("config", f"StateMagics.progress_delay = {progress_delay!r}")
    return shell
