"""Record the figures a reliability test measured: printed, and merged into ``test-artifacts/reliability.json``.

The JSON file is keyed by test (``"crash[sqlite]"``...), so a partial run
updates its own entries and keeps the others. Writers take an exclusive
``flock`` so parallel pytest workers do not lose each other's entries.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "reliability.json"
SESSION: list[tuple[str, dict[str, Any]]] = []
"""What this pytest process recorded, for the terminal summary (conftest.py)."""


def record(key: str, /, *, merge: bool = False, **figures: Any) -> dict[str, Any]:
    """Print ``figures`` under ``key`` and store them in the artifact file; returns what was stored.

    ``merge=True`` adds to the figures already under ``key`` (tests that each contribute one case).
    """
    entry = {**figures, "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"\n[reliability] {key}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    SESSION.append((key, figures))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    with open(ARTIFACT.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(ARTIFACT.read_text()) if ARTIFACT.exists() else {}
        except ValueError:
            data = {}
        data[key] = {**data.get(key, {}), **entry} if merge else entry
        tmp = ARTIFACT.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, ARTIFACT)
    return entry
