"""The sizes of a run: the issue's (full) or tiny ones (``--smoke``, to keep the code working in CI)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PG_URL = os.environ.get("STATEKIT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Config:
    smoke: bool = False
    small_saves: int = 2000  # workload 1: saves of a ~1 KB dict to one entity
    small_loads: int = 1000  # workload 1 (and 7): loads of random versions
    history_versions: int = 2000  # workload 2
    history_reps: int = 15
    frame_rows: int = 1_000_000  # workloads 3-5
    frame_reps: int = 5
    notebook_rows: int = 2_000_000  # workload 6
    notebook_reps: int = 3
    scale: int = 1_000_000  # workload 7: snapshots in the big store
    scale_ops: int = 300
    pg_procs: int = 8  # workload 8
    pg_saves: int = 150  # per process, to its own entity and as many to the shared one
    pg_url: str = PG_URL
    tmp_root: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def smoke_sized(cls) -> Config:
        return cls(smoke=True, small_saves=25, small_loads=25, history_versions=25, history_reps=2,
                   frame_rows=20_000, frame_reps=1, notebook_rows=2_000, notebook_reps=1, scale=400,
                   scale_ops=10, pg_procs=2, pg_saves=5)

    @property
    def scale_shape(self) -> tuple[int, int]:
        """(entities, versions each) for the scale store: a square-ish split of ``scale`` snapshots."""
        entities = max(1, round(math.sqrt(self.scale)))
        return entities, max(1, self.scale // entities)

    def with_(self, **kw: Any) -> Config:
        return replace(self, **kw)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["pg_url"] = self.pg_url.split("@")[-1]
        return d
