"""State-aware sessions, agents and workflows, in one process, on SQLite and PostgreSQL.

Restarts in fresh processes are in test_analytics_restart.py. Here: one
snapshot and one transition per change, restore on construction, rollback,
metrics, workflow progress and status, concurrency, and bad input that
changes nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from statekit import (
    ConflictError,
    InvalidArgumentError,
    SnapshotStatus,
    StateManager,
    StateType,
    UnserializableError,
)
from statekit.analytics import (
    StateAwareAgent,
    StateAwareAnalyticsSession,
    StateAwareWorkflow,
    WorkflowStateError,
    is_failure,
)

STEPS = ["load_data", "calculate_metrics", "apply_model", "validate_results"]


class Opaque:
    """A value no codec stores without pickle."""


@pytest.fixture
def sm2(sm: StateManager) -> Iterator[StateManager]:
    """A second StateManager on the same store: another process, as far as caching goes."""
    other = StateManager(sm.url)
    yield other
    other.close()


# ====================================================================== sessions


def test_every_session_change_is_one_snapshot_and_one_transition(sm: StateManager) -> None:
    s = StateAwareAnalyticsSession("sess", "ana", store=sm)
    s.add_conversation_turn(query="q1", response="r1", agent_id="explorer")
    s.add_analysis_result("efficiency", {"epa": 2.4}, agent_id="explorer")
    s.set_preference("units", "metric")
    s.update_user_preferences({"theme": "dark", "lang": "en"})

    hist = sm.history("sess")
    assert hist["version"].tolist() == [1, 2, 3, 4, 5]
    assert set(hist["state_type"]) == {StateType.SESSION_STATE.value}
    assert hist["kind"].tolist() == ["create", "update", "update", "update", "update"]
    for created, expires in zip(hist["created_at"], hist["expires_at"], strict=True):
        assert expires - created == timedelta(hours=24)  # the store's default session lifetime
    trans = sm.transitions("sess")
    assert len(trans) == 5 and set(trans["actor"]) == {"ana"}
    assert trans["reason"].tolist()[1] == "turn added (agent explorer)"
    assert all(isinstance(r, str) and r for r in trans["reason"])
    assert s.version == 5
    assert s.preferences == {"units": "metric", "theme": "dark", "lang": "en"}
    assert [r["analysis_type"] for r in s.get_analysis_results()] == ["efficiency"]
    assert s.get_analysis_results("other") == []


def test_session_is_restored_whole_and_restoring_writes_nothing(sm: StateManager, sm2: StateManager) -> None:
    s = StateAwareAnalyticsSession("sess", "ana", store=sm)
    for i in range(3):
        s.add_conversation_turn(query=f"q{i}", response={"text": f"r{i}", "n": i}, agent_id=f"a{i}")
    s.add_analysis_result("power", {"rank": (1, 2)})  # a tuple: stored as tagged JSON, comes back a tuple
    s.set_preference("team", "OSU")

    again = StateAwareAnalyticsSession("sess", "ana", store=sm2)
    assert again.get_conversation_history() == s.get_conversation_history()
    assert [t["turn_number"] for t in again.get_conversation_history()] == [1, 2, 3]
    assert [t["query"] for t in again.get_conversation_history(limit=2)] == ["q1", "q2"]
    assert again.get_analysis_results() == s.get_analysis_results()
    assert again.get_analysis_results()[0]["result"] == {"rank": (1, 2)}
    assert again.preferences == {"team": "OSU"}
    assert again.version == s.version == sm.head_version("sess") == 6


def test_rollback_undoes_one_change_at_a_time(sm: StateManager, sm2: StateManager) -> None:
    s = StateAwareAnalyticsSession("sess", "ana", store=sm)
    for i in range(3):
        s.add_conversation_turn(query=f"q{i}", response=f"r{i}")
    assert s.rollback_to_previous_state("wrong answer") is True
    assert [t["query"] for t in s.get_conversation_history()] == ["q0", "q1"]
    assert s.rollback_to_previous_state("still wrong") is True  # goes further back, not forward again
    assert [t["query"] for t in s.get_conversation_history()] == ["q0"]
    assert s.rollback_to_previous_state() is True
    assert s.get_conversation_history() == []
    head = sm.head_version("sess")
    assert s.rollback_to_previous_state("nothing left") is False  # back at creation
    assert sm.head_version("sess") == head == s.version == 7

    trans = sm.transitions("sess")
    rollbacks = trans[trans["transition_type"] == "rollback"]
    assert rollbacks["reason"].tolist() == ["wrong answer", "still wrong", "User requested rollback"]
    assert set(rollbacks["actor"]) == {"ana"}
    assert [m["target_version"] for m in rollbacks["metadata"]] == [3, 2, 1]
    assert len(sm.history("sess")) == 7  # nothing was deleted
    # a new turn after a rollback follows the rolled-back state
    s.add_conversation_turn(query="again", response="ok")
    assert StateAwareAnalyticsSession("sess", "ana", store=sm2).get_conversation_history()[0]["turn_number"] == 1


def test_a_new_session_has_nothing_to_roll_back(sm: StateManager) -> None:
    s = StateAwareAnalyticsSession("sess", "ana", store=sm)
    assert s.rollback_to_previous_state("why not") is False
    assert sm.head_version("sess") == 1
    assert sm.transitions("sess")["transition_type"].tolist() == ["create"]


def test_two_writers_on_one_session_lose_no_turn(sm: StateManager, sm2: StateManager) -> None:
    a = StateAwareAnalyticsSession("sess", "ana", store=sm)
    b = StateAwareAnalyticsSession("sess", "ana", store=sm2)
    a.add_conversation_turn(query="from a", response="1")
    b.add_conversation_turn(query="from b", response="2")  # b was at v1: conflict, reload, re-apply
    assert [t["query"] for t in b.get_conversation_history()] == ["from a", "from b"]
    assert [t["turn_number"] for t in b.get_conversation_history()] == [1, 2]
    a.set_preference("k", "v")  # a is stale too
    fresh = StateAwareAnalyticsSession("sess", "ana", store=sm2)
    assert [t["query"] for t in fresh.get_conversation_history()] == ["from a", "from b"]
    assert fresh.preferences == {"k": "v"}
    assert sm.head_version("sess") == 4


def test_session_bad_input_changes_nothing(sm: StateManager) -> None:
    s = StateAwareAnalyticsSession("sess", "ana", store=sm)
    s.add_conversation_turn(query="q", response="r")
    before = (sm.head_version("sess"), s.get_conversation_history(), s.get_analysis_results(), s.preferences)
    with pytest.raises(UnserializableError, match="response"):
        s.add_conversation_turn(query="q2", response={"model": Opaque()})
    with pytest.raises(UnserializableError, match="result"):
        s.add_analysis_result("fit", Opaque())
    with pytest.raises(InvalidArgumentError, match="query"):
        s.add_conversation_turn(query="", response="r")
    with pytest.raises(InvalidArgumentError, match="query"):
        s.add_conversation_turn(query=42, response="r")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="preferences"):
        s.update_user_preferences({})
    with pytest.raises(InvalidArgumentError, match="metadata"):
        s.add_conversation_turn(query="q", response="r", metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="limit"):
        s.get_conversation_history(limit=-1)
    assert (sm.head_version("sess"), s.get_conversation_history(), s.get_analysis_results(), s.preferences) == before


def test_a_session_of_another_user_or_type_is_refused(sm: StateManager) -> None:
    StateAwareAnalyticsSession("sess", "ana", store=sm)
    with pytest.raises(InvalidArgumentError, match="belongs to user 'ana'"):
        StateAwareAnalyticsSession("sess", "bob", store=sm)
    sm.save("notes", {"x": 1}, StateType.MEMORY_STATE)
    with pytest.raises(InvalidArgumentError, match="not a session"):
        StateAwareAnalyticsSession("notes", "ana", store=sm)
    with pytest.raises(InvalidArgumentError, match="store"):
        StateAwareAnalyticsSession("s2", "ana", store=3.5)  # type: ignore[arg-type]
    assert sm.head_version("sess") == 1 and sm.head_version("notes") == 1 and sm.head_version("s2") is None


def test_an_expired_session_starts_afresh(sm: StateManager) -> None:
    s = StateAwareAnalyticsSession("sess", "ana", store=sm, expires_in=0)  # expires as soon as saved
    s.add_conversation_turn(query="q", response="r")
    with pytest.warns(UserWarning, match="expired"):
        again = StateAwareAnalyticsSession("sess", "ana", store=sm)
    assert again.get_conversation_history() == []
    assert again.version == 3  # a fresh state, numbered after the expired ones
    assert again.rollback_to_previous_state("undo") is False


def test_default_store_and_url_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = StateAwareAnalyticsSession("sess", "ana")  # the default store: .statekit/state.db here
    s.add_conversation_turn(query="q", response="r")
    assert (tmp_path / ".statekit" / "state.db").exists()
    assert StateManager().head_version("sess") == 2
    url = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("STATEKIT_URL", url)
    agent = StateAwareAgent("a1", "modeling")  # the default store now follows $STATEKIT_URL
    assert StateManager(url).head_version("a1") == 1
    w = StateAwareWorkflow("w1", "t", ["one"], store=url)
    assert w.store is agent.store  # one StateManager per URL in a process
    assert os.path.exists(tmp_path / "other.db")


# ====================================================================== agents


def test_failure_rule() -> None:
    assert is_failure({"status": "failed"}) and is_failure({"status": "ERROR"})
    assert is_failure({"success": False}) and is_failure({"error": "timeout"})
    assert not is_failure({"error": None}) and not is_failure({"success": True, "status": "done"})
    assert not is_failure("a string answer") and not is_failure(None) and not is_failure({"success": 0})


def test_agent_records_analyses_metrics_and_knowledge(sm: StateManager, sm2: StateManager) -> None:
    agent = StateAwareAgent("modeler", "predictive_modeling", store=sm)
    assert agent.get_performance_metrics()["total_analyses"] == 0
    assert agent.get_performance_metrics()["success_rate"] is None  # nothing recorded, nothing claimed
    results = [{"prediction": "OSU 68%"}, {"status": "failed"}, {"success": False}, {"error": "timeout"},
               {"error": None, "p": 0.5}, "plain text"]
    times = [1.2, 0.4, 3.0, 0.9, 2.2, 0.1]
    for i, (res, t) in enumerate(zip(results, times, strict=True)):
        agent.record_analysis(analysis_request={"i": i}, analysis_result=res, response_time=t)
    agent.record_analysis({"i": 6}, {"status": "failed"}, np.float64(0.5), success=True)  # caller knows better
    agent.add_knowledge("osu_epa", 2.4)
    agent.update_knowledge({"mich_epa": 1.9, "notes": ["a", "b"]})

    m = agent.get_performance_metrics()
    all_times = [*times, 0.5]
    assert m["total_analyses"] == 7 and m["successful_analyses"] == 4 and m["failed_analyses"] == 3
    assert m["success_rate"] == pytest.approx(4 / 7)
    assert m["avg_response_time"] == pytest.approx(sum(all_times) / 7) == m["average_response_time"]
    assert m["p95_response_time"] == pytest.approx(float(np.percentile(all_times, 95)))
    assert m["max_response_time"] == 3.0 and m["min_response_time"] == 0.1
    assert agent.knowledge_base == {"osu_epa": 2.4, "mich_epa": 1.9, "notes": ["a", "b"]}

    hist = sm.history("modeler")
    assert len(hist) == 1 + 7 + 2 and set(hist["state_type"]) == {StateType.AGENT_STATE.value}
    assert hist["expires_at"].isna().all()  # agents do not expire by default
    assert set(sm.transitions("modeler")["actor"]) == {"modeler"}
    assert sm.load("modeler")["performance_metrics"] == m  # readable from the store as plain JSON

    again = StateAwareAgent("modeler", "predictive_modeling", store=sm2)
    assert again.get_performance_metrics() == m
    assert again.get_analysis_history() == agent.get_analysis_history()
    assert again.knowledge_base == agent.knowledge_base and again.version == agent.version


def test_agent_bad_input_changes_nothing(sm: StateManager) -> None:
    agent = StateAwareAgent("modeler", "predictive_modeling", store=sm)
    agent.record_analysis({"q": 1}, {"ok": True}, 1.0)
    before = (sm.head_version("modeler"), agent.get_performance_metrics(), agent.get_analysis_history())
    for bad in (-1, math.nan, math.inf, "1.0", True, None):
        with pytest.raises(InvalidArgumentError, match="response_time"):
            agent.record_analysis({"q": 2}, {"ok": True}, bad)  # type: ignore[arg-type]
    with pytest.raises(UnserializableError, match="analysis_result"):
        agent.record_analysis({"q": 2}, {"model": Opaque()}, 1.0)
    with pytest.raises(UnserializableError, match="analysis_request"):
        agent.record_analysis(Opaque(), {"ok": True}, 1.0)
    with pytest.raises(InvalidArgumentError, match="success"):
        agent.record_analysis({"q": 2}, {}, 1.0, success="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="knowledge"):
        agent.add_knowledge("", 1)
    with pytest.raises(InvalidArgumentError, match="specialty"):
        StateAwareAgent("modeler", "something_else", store=sm)
    assert (sm.head_version("modeler"), agent.get_performance_metrics(), agent.get_analysis_history()) == before


# ====================================================================== workflows


def test_workflow_progress_status_and_one_snapshot_per_step(sm: StateManager) -> None:
    w = StateAwareWorkflow("wf", "game_prediction", STEPS, store=sm)
    assert w.get_current_step() == "load_data" and w.status == "active"
    assert w.get_progress()["progress"] == 0.0 and w.get_step_results() == {}
    expected_next = [*STEPS[1:], None]
    for i, step in enumerate(STEPS):
        assert w.complete_current_step({"step": step, "i": i}) == expected_next[i]
        p = w.get_progress()
        assert (p["completed_steps"], p["total_steps"]) == (i + 1, 4)
        assert p["progress"] == pytest.approx((i + 1) / 4) and p["percent"] == pytest.approx((i + 1) * 25)
    assert w.status == "completed" and w.get_current_step() is None
    assert list(w.get_step_results()) == STEPS

    hist = sm.history("wf")
    assert len(hist) == 5 and set(hist["state_type"]) == {StateType.WORKFLOW_STATE.value}
    assert hist["status"].tolist() == ["active"] * 4 + ["completed"]
    assert (hist["expires_at"] - hist["created_at"]).eq(timedelta(hours=72)).all()
    assert hist["message"].tolist()[1] == "step 'load_data' completed"
    assert set(sm.transitions("wf")["actor"]) == {"wf"}
    assert sm.get("wf").status == SnapshotStatus.COMPLETED


def test_a_failed_step_is_recorded_and_can_be_completed_later(sm: StateManager, sm2: StateManager) -> None:
    w = StateAwareWorkflow("wf", "t", STEPS, store=sm, actor="ana")
    w.complete_current_step({"rows": 10})
    try:
        raise ZeroDivisionError("no games")
    except ZeroDivisionError as exc:
        w.fail_current_step(exc)
    w.fail_current_step("still no games")
    assert w.status == "failed" and w.get_current_step() == "calculate_metrics"
    errors = w.get_errors()
    assert [(e["step"], e["error"], e["error_type"], e["attempt"]) for e in errors] == [
        ("calculate_metrics", "no games", "ZeroDivisionError", 1),
        ("calculate_metrics", "still no games", None, 2)]
    assert "ZeroDivisionError" in errors[0]["traceback"]
    assert sm.get("wf").status == SnapshotStatus.FAILED
    assert w.get_progress()["failed_steps"] == ["calculate_metrics"]

    again = StateAwareWorkflow("wf", "t", STEPS, store=sm2)
    assert again.get_errors() == errors and again.status == "failed"
    w.resume("fixed the feed")  # a failed workflow may be made active again by hand...
    assert w.status == "active" and w.get_current_step() == "calculate_metrics"
    assert w.get_progress()["failed_steps"] == ["calculate_metrics"]  # ...the step itself is still not done
    w.fail_current_step("and again")
    again.refresh()
    again.complete_current_step({"epa": 2.4})  # the retry succeeds: active again
    assert again.status == "active" and again.get_current_step() == "apply_model"
    assert sm.get("wf").status == SnapshotStatus.ACTIVE
    assert again.get_step_results() == {"load_data": {"rows": 10}, "calculate_metrics": {"epa": 2.4}}
    assert set(sm.transitions("wf")["actor"]) == {"ana", "wf"}


def test_suspend_and_resume(sm: StateManager, sm2: StateManager) -> None:
    w = StateAwareWorkflow("wf", "t", ["a", "b"], store=sm)
    w.suspend("waiting for data")
    assert w.status == "suspended" and sm.get("wf").status == SnapshotStatus.SUSPENDED
    v = sm.head_version("wf")
    w.suspend()  # already suspended: nothing to write
    with pytest.raises(WorkflowStateError, match="suspended"):
        w.complete_current_step(1)
    with pytest.raises(WorkflowStateError, match="suspended"):
        w.run({"a": lambda r: 1, "b": lambda r: 2})
    assert sm.head_version("wf") == v
    assert StateAwareWorkflow("wf", "t", ["a", "b"], store=sm2).status == "suspended"
    w.resume("data arrived")
    assert w.status == "active" and sm.get("wf").status == SnapshotStatus.ACTIVE
    w.resume()  # already active: nothing to write
    assert w.run({"a": lambda r: 1, "b": lambda r: r["a"] + 1}) == {"a": 1, "b": 2}
    with pytest.raises(WorkflowStateError, match="completed"):
        w.suspend()
    with pytest.raises(WorkflowStateError, match="completed"):
        w.resume()
    assert sm.history("wf")["message"].tolist()[1:3] == ["suspended: waiting for data", "resumed: data arrived"]


def test_run_skips_completed_steps_and_reruns_the_failed_one(sm: StateManager, sm2: StateManager) -> None:
    calls: list[str] = []
    flaky = {"fail": True}

    def load(results: dict) -> dict:
        calls.append("load")
        return {"rows": 3}

    def metrics(results: dict) -> dict:
        calls.append("metrics")
        if flaky["fail"]:
            raise RuntimeError("API down")
        return {"epa": results["load"]["rows"] * 2}

    def model(results: dict) -> str:
        calls.append("model")
        return f"epa={results['metrics']['epa']}"

    steps = {"load": load, "metrics": metrics, "model": model}
    w = StateAwareWorkflow("wf", "t", list(steps), store=sm)
    with pytest.raises(RuntimeError, match="API down"):
        w.run(steps)
    assert calls == ["load", "metrics"] and w.status == "failed"
    flaky["fail"] = False
    again = StateAwareWorkflow("wf", "t", None, store=sm2)  # steps as stored
    assert again.run(steps) == {"load": {"rows": 3}, "metrics": {"epa": 6}, "model": "epa=6"}
    assert calls == ["load", "metrics", "metrics", "model"]
    assert again.run(steps) == again.get_step_results()  # all done: nothing runs, nothing written
    assert calls[-1] == "model" and sm.head_version("wf") == 5


def test_step_results_may_be_dataframes_carried_over_without_rewriting(sm: StateManager, sm2: StateManager) -> None:
    df = pd.DataFrame({"team": ["OSU", "MICH"] * 5000, "epa": np.arange(10000, dtype="float64")})
    w = StateAwareWorkflow("wf", "t", ["load", "fit", "check"], store=sm)
    w.complete_current_step(df)
    w.complete_current_step({"coef": 0.3})
    df.loc[0, "epa"] = -1.0  # the caller's later edits do not reach the recorded result
    hist = sm.history("wf")
    assert hist["new_bytes"].iloc[-1] < 2000 < hist["new_bytes"].iloc[-2]  # the frame was not written again
    again = StateAwareWorkflow("wf", "t", ["load", "fit", "check"], store=sm2)
    pd.testing.assert_frame_equal(again.get_step_results()["load"], df.assign(epa=np.arange(10000, dtype="float64")))
    assert again.get_step_results()["fit"] == {"coef": 0.3}
    assert w.get_step_results()["load"]["epa"].iloc[0] == 0.0


def test_workflow_bad_input_writes_nothing(sm: StateManager) -> None:
    for steps, match in (([], "at least one step"), (["a", "b", "a"], "unique"), ("abc", "list"),
                         (["a", ""], "step name"), (["a", 3], "step name")):
        with pytest.raises(InvalidArgumentError, match=match):
            StateAwareWorkflow("bad", "t", steps, store=sm)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="give its steps"):
        StateAwareWorkflow("bad", "t", None, store=sm)
    assert sm.head_version("bad") is None

    w = StateAwareWorkflow("wf", "t", ["a", "b"], store=sm)
    w.complete_current_step({"x": 1})
    v, progress, results = sm.head_version("wf"), w.get_progress(), w.get_step_results()
    with pytest.raises(UnserializableError, match="result:b"):
        w.complete_current_step(Opaque())
    with pytest.raises(InvalidArgumentError, match="error"):
        w.fail_current_step("")
    with pytest.raises(InvalidArgumentError, match="not steps"):
        w.run({"b": lambda r: 1, "typo": lambda r: 2})
    with pytest.raises(InvalidArgumentError, match="no callable"):
        w.run({"a": lambda r: 1})
    with pytest.raises(InvalidArgumentError, match="was stored with steps"):
        StateAwareWorkflow("wf", "t", ["a", "b", "c"], store=sm)
    with pytest.raises(InvalidArgumentError, match="type"):
        StateAwareWorkflow("wf", "other", ["a", "b"], store=sm)
    assert (sm.head_version("wf"), w.get_progress(), w.get_step_results()) == (v, progress, results)

    w.complete_current_step({"y": 2})
    v, progress = sm.head_version("wf"), w.get_progress()
    with pytest.raises(WorkflowStateError, match="already completed"):
        w.complete_current_step({"z": 3})
    with pytest.raises(WorkflowStateError, match="already completed"):
        w.fail_current_step("late")
    assert (sm.head_version("wf"), w.get_progress()) == (v, progress)


def test_a_stale_workflow_refuses_to_overwrite(sm: StateManager, sm2: StateManager) -> None:
    a = StateAwareWorkflow("wf", "t", ["a", "b"], store=sm)
    b = StateAwareWorkflow("wf", "t", ["a", "b"], store=sm2)
    a.complete_current_step("by a")
    with pytest.raises(ConflictError):
        b.complete_current_step("by b")
    assert b.get_current_step() == "a" and b.get_step_results() == {}  # unchanged
    b.refresh()
    assert b.get_current_step() == "b" and b.get_step_results() == {"a": "by a"}
    assert sm.head_version("wf") == 2
