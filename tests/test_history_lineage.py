"""Lineage: save(lineage=...) is kept with the version and checked when read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from statekit import IntegrityError, InvalidArgumentError, StateManager

CODE = {"cells": [{"execution_count": 3, "source": "df = load()\nlr = 0.1"}], "reads": ["load"]}


def test_lineage_round_trips_and_is_checked(sm: StateManager, tmp_path: Path) -> None:
    snap = sm.save("e", {"lr": 0.1}, lineage=CODE)
    assert snap.lineage == CODE
    assert sm.get("e").lineage == CODE
    sm.save("e", {"lr": 0.2})
    assert sm.get("e").lineage is None
    assert sm.get("e", version=1).lineage == CODE
    with pytest.raises(InvalidArgumentError):
        sm.save("e", {"lr": 0.3}, lineage={"code": object()})
    with pytest.raises(InvalidArgumentError):
        sm.save("e", {"lr": 0.3}, lineage="print(1)")
    assert sm.head_version("e") == 2
    sm.backup(tmp_path / "b.db")
    with StateManager(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        copy.restore(tmp_path / "b.db")
        assert copy.get("e", version=1).lineage == CODE
    edited = "REPLACE(CAST(lineage AS TEXT), 'lr = 0.1', 'lr = 9')"
    if not sm.db.is_sqlite:
        edited = f"CAST({edited} AS JSON)"
    with sm.db.engine.begin() as conn:  # someone edits the code recorded for v1
        conn.execute(sa.text(f"UPDATE state_snapshots SET lineage = {edited} WHERE version = 1"))
    with pytest.raises(IntegrityError, match="lineage"):
        _ = sm.get("e", version=1).lineage
