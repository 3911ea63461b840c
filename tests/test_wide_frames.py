"""Wide frames are stored as a few chunks packed by bytes, not one chunk per column.

A frame of thousands of columns and a hundred rows must take a handful of chunks,
and changing one cell must store one new chunk (the cut points between chunks
depend on types and lengths only, never on values). Appending rows writes only
the last row chunk of each group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from statekit import StateManager


def _chunks(store_url: str) -> int:
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT COUNT(*) FROM state_payloads").scalar()
    engine.dispose()
    return int(n)


def test_a_wide_frame_is_a_few_chunks_and_one_changed_cell_is_one_new_chunk(sm: StateManager, store_url: str) -> None:
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.random((100, 5_000)), columns=[f"c{i}" for i in range(5_000)])
    wide["label"] = [f"row {i}" for i in range(100)]
    first = sm.save("wide", {"df": wide})
    assert _chunks(store_url) < 40  # was one per column: 5,003
    changed = wide.copy()
    changed.iloc[50, 2_500] = -1.0
    before = _chunks(store_url)
    again = sm.save("wide", {"df": changed})
    assert _chunks(store_url) == before + 1
    assert again.new_bytes < first.new_bytes / 10
    pd.testing.assert_frame_equal(sm.load("wide", version=1)["df"], wide, check_exact=True)
    pd.testing.assert_frame_equal(sm.load("wide")["df"], changed, check_exact=True)


def test_appending_rows_rewrites_only_the_last_row_chunk_of_each_group(sm: StateManager, store_url: str) -> None:
    df = pd.DataFrame({f"c{i}": np.arange(70_000, dtype="f8") * i for i in range(3)})
    sm.save("long", {"df": df})
    before = _chunks(store_url)
    grown = pd.concat([df, df.iloc[:5]], ignore_index=True)
    sm.save("long", {"df": grown})
    assert _chunks(store_url) - before <= 3  # one per column (each a group of its own at this size)
    pd.testing.assert_frame_equal(sm.load("long")["df"], grown, check_exact=True)
