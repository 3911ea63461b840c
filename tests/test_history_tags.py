"""Tags: a name for a version, recorded as a transition, never moved."""

from __future__ import annotations

from pathlib import Path

import pytest

from statekit import ConflictError, InvalidArgumentError, NotFoundError, StateManager


def test_tag_names_a_version_and_never_moves(sm: StateManager) -> None:
    sm.save("e", {"x": 1})
    sm.save("e", {"x": 2})
    snap = sm.tag("e", "baseline", message="first good model")
    assert snap.version == 2
    sm.tag("e", "start", 1)
    sm.save("e", {"x": 3})
    assert sm.load("e", tag="baseline") == {"x": 2}
    assert sm.get("e", tag="start").version == 1
    with pytest.raises(ConflictError, match="never moves"):
        sm.tag("e", "baseline")
    assert sm.load("e", tag="baseline") == {"x": 2}
    tags = sm.tags("e")
    assert list(tags["tag"]) == ["baseline", "start"]
    assert list(tags["version"]) == [2, 1]
    assert tags.loc[0, "message"] == "first good model"
    kinds = sm.transitions("e")["transition_type"].tolist()
    assert kinds.count("tag") == 2


def test_tag_errors(sm: StateManager) -> None:
    with pytest.raises(NotFoundError):
        sm.tag("e", "x")
    sm.save("e", {"x": 1})
    with pytest.raises(NotFoundError):
        sm.tag("e", "x", 9)
    with pytest.raises(NotFoundError, match="no tag"):
        sm.load("e", tag="nope")
    sm.tag("e", "t")
    with pytest.raises(InvalidArgumentError):
        sm.load("e", 1, tag="t")
    with pytest.raises(InvalidArgumentError):
        sm.tag("e", "")
    assert sm.tags("other").empty


def test_tags_survive_backup_and_restore(sm: StateManager, tmp_path: Path) -> None:
    sm.save("e", {"x": 1})
    sm.tag("e", "v1")
    sm.backup(tmp_path / "b.db")
    with StateManager(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        copy.restore(tmp_path / "b.db")
        assert copy.load("e", tag="v1") == {"x": 1}
        with pytest.raises(ConflictError):
            copy.tag("e", "v1")
