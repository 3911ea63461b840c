"""The PRODUCT.md section 5 patterns across restarts: each reader is a fresh Python process.

Every child runs a small script with ``sys.executable``; the store is passed
through ``$STATEKIT_URL``, so the scripts use the default store exactly as the
patterns are written (no ``store=`` argument). Each test runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from statekit import StateManager
from statekit.analytics import StateAwareAnalyticsSession

PRELUDE = """\
import json, os, sys
from statekit.analytics import StateAwareAnalyticsSession, StateAwareAgent, StateAwareWorkflow
def emit(value):
    print("RESULT " + json.dumps(value, default=str), flush=True)
"""


def run_child(tmp_path: Path, url: str, body: str, name: str = "child") -> Any:
    """Run ``body`` in a fresh interpreter against ``url``; returns what it emit()ted."""
    script = tmp_path / f"{name}.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**os.environ, "STATEKIT_URL": url},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


SESSION_WRITER = """
session = StateAwareAnalyticsSession("user_001_session", "user_001")
session.add_conversation_turn(query="Analyze Ohio State's efficiency",
    response="OSU shows 78% success rate with 2.4 EPA/play", agent_id="data_explorer_001")
session.add_conversation_turn(query="Compare with Michigan's defense",
    response="Michigan allows a 45% success rate", agent_id="data_explorer_001")
emit(session.get_conversation_history())
"""


def test_session_history_is_restored_whole(tmp_path: Path, store_url: str) -> None:
    written = run_child(tmp_path, store_url, SESSION_WRITER, "writer")
    assert len(written) == 2
    restored = run_child(tmp_path, store_url, """
        restored = StateAwareAnalyticsSession("user_001_session", "user_001")   # e.g. after a restart
        history = restored.get_conversation_history()
        emit(history)
    """, "reader")
    assert restored == written  # every turn, every field, timestamps included, oldest first
    assert [t["query"] for t in restored] == ["Analyze Ohio State's efficiency", "Compare with Michigan's defense"]
    assert restored[0]["agent_id"] == "data_explorer_001"


def test_rollback_after_restart_drops_exactly_the_last_turn(tmp_path: Path, store_url: str) -> None:
    written = run_child(tmp_path, store_url, SESSION_WRITER, "writer")
    out = run_child(tmp_path, store_url, """
        session = StateAwareAnalyticsSession("user_001_session", "user_001")
        ok = session.rollback_to_previous_state("User requested correction")   # True on success
        emit({"ok": ok, "history": session.get_conversation_history()})
    """, "rollback")
    assert out["ok"] is True and out["history"] == written[:1]

    sm = StateManager(store_url)  # this test process is a third one: it sees the rolled-back session
    assert StateAwareAnalyticsSession("user_001_session", "user_001", store=sm).get_conversation_history() == written[:1]
    last = sm.transitions("user_001_session").iloc[-1]
    assert last["transition_type"] == "rollback" and last["reason"] == "User requested correction"
    assert last["actor"] == "user_001" and last["from_version"] == 3 and last["to_version"] == 4
    assert sm.load("user_001_session", 4)["conversation_history"] == sm.load("user_001_session", 2)["conversation_history"]
    assert len(sm.history("user_001_session")) == 4  # the undone turn stays in the history
    sm.close()


def test_agent_metrics_are_equal_after_restart(tmp_path: Path, store_url: str) -> None:
    written = run_child(tmp_path, store_url, """
        agent = StateAwareAgent("modeler_001", "predictive_modeling")
        agent.record_analysis(analysis_request={"teams": ["OSU", "Michigan"]},
            analysis_result={"prediction": "OSU 68% win prob"}, response_time=1.2)
        agent.record_analysis({"teams": ["OSU", "PSU"]}, {"status": "failed", "reason": "no data"}, 0.3)
        agent.record_analysis({"teams": ["OSU", "IU"]}, {"prediction": "OSU 91%"}, 2.7)
        agent.add_knowledge("home_edge", 2.5)
        emit({"metrics": agent.get_performance_metrics(), "history": agent.get_analysis_history(),
              "knowledge": agent.knowledge_base})
    """, "writer")
    m = written["metrics"]
    assert m["total_analyses"] == 3 and m["success_rate"] == pytest.approx(2 / 3)
    assert m["avg_response_time"] == pytest.approx(1.4)
    restored = run_child(tmp_path, store_url, """
        agent = StateAwareAgent("modeler_001", "predictive_modeling")
        emit({"metrics": agent.get_performance_metrics(), "history": agent.get_analysis_history(),
              "knowledge": agent.knowledge_base})
    """, "reader")
    assert restored == written


def test_workflow_resumes_at_the_right_step_with_its_results(tmp_path: Path, store_url: str) -> None:
    run_child(tmp_path, store_url, """
        workflow = StateAwareWorkflow("game_prediction_001", "game_prediction",
            ["load_data", "calculate_metrics", "apply_model", "validate_results"])
        workflow.complete_current_step({"data_loaded": True, "records": 4567})
        workflow.complete_current_step({"epa": 2.4})
    """, "writer")
    out = run_child(tmp_path, store_url, """
        workflow = StateAwareWorkflow("game_prediction_001", "game_prediction",
            ["load_data", "calculate_metrics", "apply_model", "validate_results"])
        before = {"current": workflow.get_current_step(), "progress": workflow.get_progress(),
                  "results": workflow.get_step_results()}
        ran = []
        def step(name):
            def fn(results):
                ran.append(name)
                return {"step": name, "saw": sorted(results)}
            return fn
        final = workflow.run({s: step(s) for s in workflow.steps})
        emit({"before": before, "ran": ran, "final": final, "status": workflow.status})
    """, "resume")
    before = out["before"]
    assert before["current"] == "apply_model"
    assert before["results"] == {"load_data": {"data_loaded": True, "records": 4567}, "calculate_metrics": {"epa": 2.4}}
    assert (before["progress"]["completed_steps"], before["progress"]["total_steps"]) == (2, 4)
    assert before["progress"]["progress"] == 0.5 and before["progress"]["status"] == "active"
    assert out["ran"] == ["apply_model", "validate_results"]
    assert out["final"]["validate_results"]["saw"] == ["apply_model", "calculate_metrics", "load_data"]
    assert out["status"] == "completed"


KILLED_WORKFLOW = """
import pandas as pd, time
from pathlib import Path
log = Path("calls.log")
def step(name, slow=False):
    def fn(results):
        with log.open("a") as f:
            f.write(name + "\\n")
        if slow and os.environ.get("SLOW_STEP") == "1":
            Path("in_step").touch()
            time.sleep(300)  # the parent kills us here
        if name == "load_data":
            return pd.DataFrame({"team": ["OSU", "MICH", "PSU"], "epa": [2.4, 1.9, 1.1]})
        return {"step": name, "inputs": sorted(results)}
    return fn
workflow = StateAwareWorkflow("killed_wf", "game_prediction", ["load_data", "calculate_metrics", "apply_model"])
emit({"current": workflow.get_current_step(), "results": {k: (v.to_dict("list") if hasattr(v, "to_dict") else v)
      for k, v in workflow.get_step_results().items()}})
final = workflow.run({"load_data": step("load_data"), "calculate_metrics": step("calculate_metrics", slow=True),
                      "apply_model": step("apply_model")})
emit({"status": workflow.status, "final": {k: (v.to_dict("list") if hasattr(v, "to_dict") else v)
      for k, v in final.items()}})
"""


def test_a_workflow_killed_mid_step_resumes_at_that_step(tmp_path: Path, store_url: str) -> None:
    script = tmp_path / "killed.py"
    script.write_text(PRELUDE + KILLED_WORKFLOW)
    env = {**os.environ, "STATEKIT_URL": store_url, "SLOW_STEP": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "in_step").exists():
            assert proc.poll() is None, f"the child died early:\n{proc.communicate()[1]}"
            assert time.monotonic() < deadline, "the child never reached the slow step"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    sm = StateManager(store_url)
    assert sm.head_version("killed_wf") == 2  # created, load_data completed; nothing of the killed step
    assert sm.verify("killed_wf").empty
    sm.close()

    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**env, "SLOW_STEP": "0"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, last = (json.loads(ln[len("RESULT "):]) for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    assert first["current"] == "calculate_metrics"
    loaded = {"team": ["OSU", "MICH", "PSU"], "epa": [2.4, 1.9, 1.1]}
    assert first["results"] == {"load_data": loaded}  # the finished step's result is intact
    assert last["status"] == "completed"
    assert last["final"]["load_data"] == loaded
    assert last["final"]["apply_model"] == {"step": "apply_model", "inputs": ["calculate_metrics", "load_data"]}
    # load_data ran once; the killed step ran again; nothing else twice
    assert (tmp_path / "calls.log").read_text().split() == ["load_data", "calculate_metrics", "calculate_metrics",
                                                            "apply_model"]


def test_two_processes_adding_turns_at_once_lose_none(tmp_path: Path, store_url: str) -> None:
    StateManager(store_url).close()  # create the schema before the race
    TURNS = 10
    body = PRELUDE + f"TURNS = {TURNS}\n" + textwrap.dedent("""
        import time
        from pathlib import Path
        who = sys.argv[1]
        s = StateAwareAnalyticsSession("shared", "team")  # both may race to create it
        Path(f"ready-{who}").touch()
        while not Path("go").exists():  # then start writing together, so their saves interleave
            time.sleep(0.005)
        for i in range(TURNS):
            s.add_conversation_turn(query=f"{who}-{i}", response="r")
            time.sleep(0.002)
        emit(len(s.get_conversation_history()))
    """)
    script = tmp_path / "writer.py"
    script.write_text(body)
    env = {**os.environ, "STATEKIT_URL": store_url}
    procs = [subprocess.Popen([sys.executable, str(script), who], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{who}").exists() for who in ("a", "b")):
        assert all(p.poll() is None for p in procs), "a writer died before the start"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    history = run_child(tmp_path, store_url, """
        emit(StateAwareAnalyticsSession("shared", "team").get_conversation_history())
    """, "reader")
    queries = [t["query"] for t in history]
    assert sorted(queries) == sorted([f"{w}-{i}" for w in "ab" for i in range(TURNS)])
    assert [q for q in queries if q.startswith("a")] == [f"a-{i}" for i in range(TURNS)]  # each writer's order kept
    assert [t["turn_number"] for t in history] == list(range(1, 2 * TURNS + 1))
