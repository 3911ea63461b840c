"""Start groups of ``workers.py`` processes together and collect what they report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

WORKERS = Path(__file__).parent / "workers.py"


class WorkerGroup:
    """Processes that all wait for one go-file, so they really run at the same time."""

    def __init__(self, folder: Path):
        self.go = folder / "go"
        self.stop = folder / "stop"
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    def spawn(self, role: str, url: str, entity: str, *args: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKERS), role, url, entity, str(self.go), str(self.stop), *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.procs.append((f"{role} {' '.join(map(str, args))}".strip(), proc))
        return proc

    def go_all(self, timeout: float = 120.0) -> None:
        """Wait until every worker has imported statekit and opened the store, then let them all go."""
        for name, proc in self.procs:
            line = proc.stdout.readline().strip()  # type: ignore[union-attr]
            if line != "ready":
                rest = proc.communicate(timeout=timeout)[0]
                raise AssertionError(f"worker {name} did not start:\n{line}\n{rest}")
        self.go.touch()

    def result(self, proc: subprocess.Popen[str], timeout: float = 600.0) -> dict[str, Any]:
        """The worker's figures; fails with its output if it exited with an error."""
        out = proc.communicate(timeout=timeout)[0]
        name = next(n for n, p in self.procs if p is proc)
        assert proc.returncode == 0, f"worker {name} failed (an error reached the caller):\n{out[-4000:]}"
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert lines, f"worker {name} reported nothing"
        return json.loads(lines[-1])

    def stop_all(self) -> None:
        self.stop.touch()

    def kill_all(self) -> None:
        for _name, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
