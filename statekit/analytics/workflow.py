"""StateAwareWorkflow: a multi-step analysis that resumes at its first unfinished step.

Stored as one WORKFLOW_STATE entity named by the workflow id (72 hours by
default). The value ``workflow`` holds the plain-JSON progress (steps, each
step's status, errors, overall status); each finished step's result is its own
value, ``result:<step>``, so a result may be anything the store can hold
(DataFrames included) and is carried over to later versions by reference,
never rewritten. Each snapshot's ``status`` is the workflow's status.

Unlike sessions and agents, a workflow does not re-apply a change on top of
someone else's: two processes running the same workflow is a mistake, so the
second to save gets :class:`ConflictError` and its object is left as it was.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from ..codecs import copy_value
from ..errors import InvalidArgumentError, StatekitError, UnserializableError
from ..models import SnapshotStatus, StateType
from ..validate import identifier
from .base import StateAwareObject, StoreLike, now_iso, optional_text, replace, text

META = "workflow"
RESULT_PREFIX = "result:"
PENDING, COMPLETED, FAILED = "pending", "completed", "failed"
ACTIVE, SUSPENDED = SnapshotStatus.ACTIVE.value, SnapshotStatus.SUSPENDED.value


class WorkflowStateError(StatekitError, RuntimeError):
    """The workflow's status does not allow this: it has finished, or it is suspended."""


class StateAwareWorkflow(StateAwareObject):
    """A workflow of named steps whose progress, results and errors survive restarts.

    Constructed after a restart with the same id, it picks up the stored
    progress and its current step is the first one not completed. ``steps``
    must then match the stored ones (or be None to take them as stored).
    Status goes active -> completed (all steps done), failed (a step failed;
    completing that step later makes it active again) or suspended
    (:meth:`suspend`, until :meth:`resume`). Every change is one snapshot
    whose actor is ``actor`` (default: the workflow id).
    """

    state_type = StateType.WORKFLOW_STATE
    kind = "workflow"

    def __init__(self, workflow_id: str, workflow_type: str, steps: Sequence[str] | None, store: StoreLike = None,
                 *, expires_in: timedelta | float | str | None = None, actor: str | None = None) -> None:
        self.workflow_type: str = text(workflow_type, "workflow_type")
        wid = text(workflow_id, "workflow_id")
        self._steps: tuple[str, ...] | None = None if steps is None else _check_steps(steps)
        super().__init__(wid, store, expires_in, actor=optional_text(actor, "actor") or wid)
        self._restore_or_create(f"workflow created: {len(self._steps or ())} steps")

    @property
    def workflow_id(self) -> str:
        return self._id

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self._state[META]["steps"])

    @property
    def status(self) -> str:
        """active, completed, failed or suspended."""
        return self._state[META]["status"]

    def __repr__(self) -> str:
        p = self.get_progress()
        return (f"StateAwareWorkflow({self.workflow_id!r}, {self.workflow_type!r}, {p['status']}, "
                f"{p['completed_steps']}/{p['total_steps']} steps, v{self.version})")

    # ------------------------------------------------------------ state

    def _initial_state(self) -> dict[str, Any]:
        if self._steps is None:
            raise InvalidArgumentError(f"Workflow {self._id!r} is not in the store: give its steps.")
        now = now_iso()
        return {META: {
            "workflow_id": self._id, "workflow_type": self.workflow_type, "steps": list(self._steps),
            "status": ACTIVE, "step_status": dict.fromkeys(self._steps, PENDING), "attempts": dict.fromkeys(self._steps, 0),
            "completed_at": {}, "errors": [], "created_at": now, "updated_at": now,
        }}

    def _adopt(self, stored: dict[str, Any]) -> dict[str, Any]:
        meta = stored.get(META)
        if not isinstance(meta, dict) or not isinstance(meta.get("steps"), list):
            raise InvalidArgumentError(f"{self._id!r} does not hold a workflow's state (no {META!r} value).")
        if meta.get("workflow_type") != self.workflow_type:
            raise InvalidArgumentError(
                f"Workflow {self._id!r} is of type {meta.get('workflow_type')!r}, not {self.workflow_type!r}."
            )
        if self._steps is not None and tuple(meta["steps"]) != self._steps:
            raise InvalidArgumentError(
                f"Workflow {self._id!r} was stored with steps {meta['steps']}, not {list(self._steps)}; "
                "pass steps=None to resume it as stored, or use another workflow_id."
            )
        self._steps = tuple(meta["steps"])
        return {k: v for k, v in stored.items() if k == META or k.startswith(RESULT_PREFIX)}

    def _metadata(self, state: dict[str, Any]) -> dict[str, Any]:
        meta = state[META]
        done = sum(1 for s in meta["step_status"].values() if s == COMPLETED)
        return {"workflow_type": self.workflow_type, "completed_steps": done, "total_steps": len(meta["steps"])}

    def _status(self, state: dict[str, Any]) -> SnapshotStatus:
        return SnapshotStatus(state[META]["status"])

    def _commit(self, meta: dict[str, Any], message: str, **results: Any) -> None:
        """Save the new progress (and a step's result) as one snapshot; unchanged results are carried over."""
        meta["updated_at"] = now_iso()
        state = {META: meta, **results}
        self._save(state, message=message, merge=True)
        self._state = {**self._state, META: meta, **{k: copy_value(v) for k, v in results.items()}}

    # ------------------------------------------------------------ reading

    def get_current_step(self) -> str | None:
        """The first step not completed (the failed one after a failure); None when all are done."""
        meta = self._state[META]
        return next((s for s in meta["steps"] if meta["step_status"][s] != COMPLETED), None)

    def get_progress(self) -> dict[str, Any]:
        """completed_steps, total_steps, progress (0.0-1.0), percent, status, current_step, errors..."""
        meta = self._state[META]
        total = len(meta["steps"])
        done = sum(1 for s in meta["step_status"].values() if s == COMPLETED)
        fraction = done / total
        return {
            "workflow_id": self.workflow_id, "workflow_type": self.workflow_type, "status": meta["status"],
            "current_step": self.get_current_step(), "completed_steps": done, "total_steps": total,
            "progress": fraction, "percent": fraction * 100, "progress_percentage": fraction * 100,
            "failed_steps": [s for s in meta["steps"] if meta["step_status"][s] == FAILED],
            "error_count": len(meta["errors"]), "updated_at": meta["updated_at"],
        }

    def get_step_results(self) -> dict[str, Any]:
        """Each completed step's result, in step order (the intermediate results)."""
        meta = self._state[META]
        return {s: copy_value(self._state[RESULT_PREFIX + s]) for s in meta["steps"]
                if meta["step_status"][s] == COMPLETED and RESULT_PREFIX + s in self._state}

    intermediate_results = property(get_step_results)

    def get_errors(self) -> list[dict[str, Any]]:
        """Every recorded failure, oldest first: step, error, error_type, attempt, timestamp."""
        return [dict(e) for e in self._state[META]["errors"]]

    # ------------------------------------------------------------ changing

    def _current_or_raise(self, action: str) -> str:
        status, step = self.status, self.get_current_step()
        if status == SUSPENDED:
            raise WorkflowStateError(f"Workflow {self.workflow_id!r} is suspended: resume() it before you {action}.")
        if step is None or status == SnapshotStatus.COMPLETED.value:
            raise WorkflowStateError(
                f"Workflow {self.workflow_id!r} has already completed all {len(self.steps)} steps: "
                f"there is no step to {action}."
            )
        return step

    def complete_current_step(self, result: Any = None) -> str | None:
        """Record the current step's result and move on; returns the next step (None when done).

        A result the store cannot hold raises UnserializableError and changes nothing.
        """
        step = self._current_or_raise("complete")
        meta = _copy_meta(self._state[META])
        meta["step_status"][step] = COMPLETED
        meta["completed_at"][step] = now_iso()
        meta["attempts"][step] = meta["attempts"].get(step, 0) + 1
        finished = all(s == COMPLETED for s in meta["step_status"].values())
        meta["status"] = SnapshotStatus.COMPLETED.value if finished else ACTIVE
        self._commit(meta, f"step {step!r} completed" + (": workflow completed" if finished else ""),
                     **{RESULT_PREFIX + step: result})
        return self.get_current_step()

    def fail_current_step(self, error: BaseException | str) -> None:
        """Record that the current step failed (the workflow becomes failed; the step stays current)."""
        step = self._current_or_raise("fail")
        if isinstance(error, BaseException):
            message, kind = str(error) or repr(error), type(error).__name__
            tb = "".join(traceback.format_exception(error)) if error.__traceback__ is not None else None
        elif isinstance(error, str) and error.strip():
            message, kind, tb = error, None, None
        else:
            raise InvalidArgumentError(f"error must be an exception or a non-empty message, not {error!r}.")
        meta = _copy_meta(self._state[META])
        meta["attempts"][step] = meta["attempts"].get(step, 0) + 1
        meta["step_status"][step] = FAILED
        meta["status"] = SnapshotStatus.FAILED.value
        meta["errors"] = [*meta["errors"], {"step": step, "error": message, "error_type": kind, "traceback": tb,
                                            "attempt": meta["attempts"][step], "timestamp": now_iso()}]
        self._commit(meta, f"step {step!r} failed: {message}"[:500])

    def suspend(self, reason: str | None = None) -> None:
        """Pause the workflow: steps cannot be completed until resume(). Suspending twice writes nothing."""
        if self.status == SUSPENDED:
            return
        self._current_or_raise("suspend")
        meta = _copy_meta(self._state[META])
        meta["status"] = SUSPENDED
        self._commit(meta, "suspended" + (f": {text(reason, 'reason')}" if reason is not None else ""))

    def resume(self, reason: str | None = None) -> None:
        """Make a suspended (or failed) workflow active again; on an active one, writes nothing."""
        if self.status == ACTIVE:
            return
        if self.status == SnapshotStatus.COMPLETED.value:
            raise WorkflowStateError(f"Workflow {self.workflow_id!r} has completed: there is nothing to resume.")
        meta = _copy_meta(self._state[META])
        meta["status"] = ACTIVE
        self._commit(meta, "resumed" + (f": {text(reason, 'reason')}" if reason is not None else ""))

    def run(self, callables: Mapping[str, Callable[[dict[str, Any]], Any]]) -> dict[str, Any]:
        """Run the unfinished steps in order and return all step results.

        ``callables`` maps each step name to a function that takes the results
        so far (step name -> result) and returns this step's result. Completed
        steps are skipped; a failed step is run again. When a step raises, the
        failure is recorded and the exception propagates; a step interrupted by
        KeyboardInterrupt (or a killed process) stays pending and runs next time.
        """
        if not isinstance(callables, Mapping):
            raise InvalidArgumentError("run() takes a dict of step name -> callable.")
        unknown = [k for k in callables if k not in self.steps]
        if unknown:
            raise InvalidArgumentError(f"run(): {unknown} are not steps of this workflow; its steps are {list(self.steps)}.")
        meta = self._state[META]
        todo = [s for s in self.steps if meta["step_status"][s] != COMPLETED]
        missing = [s for s in todo if not callable(callables.get(s))]
        if missing:
            raise InvalidArgumentError(f"run(): no callable for the unfinished steps {missing}.")
        if todo and self.status == SUSPENDED:
            raise WorkflowStateError(f"Workflow {self.workflow_id!r} is suspended: resume() it before run().")
        while (step := self.get_current_step()) is not None:
            try:
                result = callables[step](self.get_step_results())
            except Exception as exc:
                self.fail_current_step(exc)
                raise
            try:
                self.complete_current_step(result)
            except UnserializableError as exc:
                self.fail_current_step(exc)
                raise
        return self.get_step_results()


def _check_steps(steps: Any) -> tuple[str, ...]:
    if isinstance(steps, str) or not isinstance(steps, Sequence):
        raise InvalidArgumentError(f"steps must be a list of step names, not {type(steps).__name__}.")
    if not steps:
        raise InvalidArgumentError("A workflow needs at least one step; steps is empty.")
    names = tuple(identifier(s, "step name") for s in steps)
    dupes = sorted(s for s, n in Counter(names).items() if n > 1)
    if dupes:
        raise InvalidArgumentError(f"Step names must be unique; repeated: {dupes}.")
    return names


def _copy_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A copy deep enough to change without touching the object's current state."""
    return replace(meta, step_status=dict(meta["step_status"]), attempts=dict(meta.get("attempts", {})),
                   completed_at=dict(meta["completed_at"]), errors=list(meta["errors"]))
