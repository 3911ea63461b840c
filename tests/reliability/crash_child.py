"""A saver to be killed: ``python crash_child.py URL ENTITY LOGDIR`` (driven by test_crash.py).

It imports statekit and builds the big frame's base once, then waits on
stdin for ``run RUN_ID SEED`` lines. For each it forks a child that opens its
own StateManager and saves forever: seeds SEED, SEED+1, ..., where every 6th
save (the first included) is the 51.2 MB DataFrame and the others are small
states. Forking from this prepared process makes each run start in
milliseconds, so the test spends its time on kills and checks, not imports.

The child appends to ``LOGDIR/RUN_ID.log``: ``S seed kind t`` just before a
save and ``D seed version snapshot_id t`` once ``save()`` has returned (``t``
is ``time.monotonic()``, one clock for every process on Linux). This
process answers ``pid PID`` when the child is running, then ``exit STATUS``
(``os.waitpid`` status) once the test has killed it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import states

from statekit import StateManager

BIG_EVERY = 6


def saver(url: str, entity: str, log_path: str, seed: int, base: object) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        sm = StateManager(url)
        k = 0
        while True:
            s = seed + k
            big = k % BIG_EVERY == 0
            state = states.big_state(s, base) if big else states.small_state(s)
            os.write(fd, f"S {s} {'big' if big else 'small'} {time.monotonic():.6f}\n".encode())
            snap = sm.save(entity, state, message=f"seed {s}")
            os.write(fd, f"D {s} {snap.version} {snap.snapshot_id} {time.monotonic():.6f}\n".encode())
            k += 1
    except BaseException:  # noqa: BLE001 - any error is a test failure: say it, exit non-zero
        os.write(fd, ("E " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
        os._exit(1)


def main() -> None:
    url, entity, logdir = sys.argv[1:4]
    base = states.big_base()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            return
        run_id, seed = cmd[1], int(cmd[2])
        pid = os.fork()
        if pid == 0:
            saver(url, entity, os.path.join(logdir, f"{run_id}.log"), seed, base)
            os._exit(1)  # never reached: saver loops until killed
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {status}", flush=True)


if __name__ == "__main__":
    main()
