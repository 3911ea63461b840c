"""Bad input gets a clear statekit error and changes nothing."""

from __future__ import annotations

import threading

import pytest

from statekit import (
    InvalidArgumentError,
    NotFoundError,
    StatekitError,
    StateManager,
    UnserializableError,
)


def test_unknown_entity_or_version_is_a_lookup_error(sm: StateManager) -> None:
    with pytest.raises(LookupError, match="No entity 'nope'"):
        sm.load("nope")
    sm.save("exp", {"a": 1})
    with pytest.raises(NotFoundError, match="no version 7") as err:
        sm.load("exp", 7)
    assert isinstance(err.value, LookupError) and isinstance(err.value, StatekitError)
    with pytest.raises(NotFoundError, match="no branch 'dev'"):
        sm.load("exp", branch="dev")
    with pytest.raises(NotFoundError):
        sm.get("exp", 2)
    with pytest.raises(NotFoundError):
        sm.diff("exp", 1, 9)
    with pytest.raises(NotFoundError):
        sm.create_branch("exp", "x", from_version=5)
    with pytest.raises(NotFoundError):
        sm.rollback("exp", 3)
    assert sm.head_version("exp") == 1 and sm.branches("exp")["branch"].tolist() == ["main"]


def test_an_unserializable_value_names_key_and_type_and_writes_nothing(sm: StateManager) -> None:
    sm.save("exp", {"a": 1})
    for allow in (False, True):
        with pytest.raises(UnserializableError) as err:
            sm.save("exp", {"a": 2, "lock": threading.Lock()}, allow_pickle=allow)
        assert err.value.name == "lock" and "lock" in str(err.value)
        assert "_thread.lock" in str(err.value) or "lock" in (err.value.type_name or "")
    assert sm.head_version("exp") == 1 and sm.load("exp") == {"a": 1}
    assert len(sm.transitions("exp")) == 1


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda sm: sm.save(42, {"a": 1}), "entity_id must be a string"),
        (lambda sm: sm.save("e", [("a", 1)]), "state must be a mapping"),
        (lambda sm: sm.save("e", {1: "a"}), "State keys must be strings"),
        (lambda sm: sm.save("e", {"": 1}), "must not be empty"),
        (lambda sm: sm.save("e", {"a": 1}, "no_such_type"), "state_type must be one of"),
        (lambda sm: sm.save("e", {"a": 1}, message=5), "message must be a string"),
        (lambda sm: sm.save("e", {"a": 1}, metadata=["x"]), "metadata must be a dict"),
        (lambda sm: sm.save("e", {"a": 1}, metadata={"t": object()}), "plain JSON"),
        (lambda sm: sm.save("e", {"a": 1}, expected_version="1"), "expected_version must be a whole number"),
        (lambda sm: sm.save("e", {"a": 1}, expected_version=-1), "0 or more"),
        (lambda sm: sm.save("e", {"a": 1}, expires_in="soon"), "expires_in"),
        (lambda sm: sm.save("e", {"a": 1}, expires_in=-5), "negative"),
        (lambda sm: sm.save("e", {"a": 1}, status="done"), "status must be one of"),
        (lambda sm: sm.save("e", {"a": 1}, branch=""), "branch must not be empty"),
        (lambda sm: sm.load("e", version=0), "version must be 1 or more"),
        (lambda sm: sm.load("e", version=1.5), "whole number"),
        (lambda sm: sm.load("e", version=True), "whole number"),
        (lambda sm: sm.subscribe("not callable"), "callable"),
        (lambda sm: sm.save_many([("e", {})]), "mapping"),
    ],
)
def test_arguments_of_the_wrong_type_or_value(sm: StateManager, call, fragment: str) -> None:  # noqa: ANN001
    with pytest.raises(InvalidArgumentError, match=fragment) as err:
        call(sm)
    assert isinstance(err.value, (ValueError, TypeError))
    assert sm.entities().empty


@pytest.mark.parametrize("bad", ["", "   ", "x" * 256, "tab\there", "nul\x00", "bad \udc80"])
def test_unusable_entity_ids_are_refused(sm: StateManager, bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        sm.save(bad, {"a": 1})
    assert sm.entities().empty


@pytest.mark.parametrize(
    "entity_id",
    [
        "x" * 255,
        "données-été ☃ 日本語",
        "'; DROP TABLE state_snapshots; --",
        'exp" OR 1=1 --',
        "%(e)s :e ? $1",
        "Robert'); DELETE FROM state_payloads;--",
    ],
)
def test_long_unicode_and_sql_looking_ids_are_stored_literally(sm: StateManager, entity_id: str) -> None:
    sm.save(entity_id, {"a": 1}, message="'; DROP TABLE x; --")
    sm.save(entity_id, {"a": 2})
    assert sm.load(entity_id) == {"a": 2}
    assert sm.load(entity_id, 1) == {"a": 1}
    assert sm.entities()["entity_id"].tolist() == [entity_id]
    assert sm.history(entity_id)["message"].iloc[0] == "'; DROP TABLE x; --"
    sm.create_branch(entity_id, entity_id)
    assert set(sm.branches(entity_id)["branch"]) == {"main", entity_id}


def test_a_store_url_that_cannot_work_says_so(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError):
        StateManager("")
    with pytest.raises(InvalidArgumentError, match="supports SQLite and PostgreSQL"):
        StateManager("mysql://root@127.0.0.1/test")
    with pytest.raises(InvalidArgumentError, match=r'pip install "statekit\[postgres\]"'):
        StateManager("postgresql+psycopg2://postgres@127.0.0.1/test")  # a driver statekit does not install
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidArgumentError, match="Cannot create"):
        StateManager(f"sqlite:///{blocker}/sub/state.db")
