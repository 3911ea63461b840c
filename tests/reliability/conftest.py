"""Show the reliability figures at the end of the run, so the CI log has them even without ``-s``."""

from __future__ import annotations

from typing import Any

from .figures import SESSION


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SESSION:
        return
    terminalreporter.section("reliability figures (also in test-artifacts/reliability.json)")
    for key, figures in SESSION:
        shown = ", ".join(f"{k}={v}" for k, v in figures.items() if k not in ("paths", "saved_value_types"))
        terminalreporter.write_line(f"{key}: {shown}")
