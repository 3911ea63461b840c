"""Concurrent writers never produce duplicate or lost versions."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from statekit import StateManager

WRITER = textwrap.dedent(
    """
    import sys
    from statekit import StateManager
    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sm = StateManager(url)
    for i in range(n):
        sm.save("shared", {"writer": name, "i": i, "pad": "x" * 200})
    sm.close()
    """
)


def test_two_processes_saving_one_entity_get_distinct_contiguous_versions(store_url: str) -> None:
    StateManager(store_url).close()  # create the schema before the race
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, store_url, name, "200"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    sm = StateManager(store_url)
    h = sm.history("shared")
    assert h["version"].tolist() == list(range(1, 401))
    assert h["snapshot_id"].is_unique
    # every version's parent is the version before it: one line, no forks
    assert h["parent_version"].tolist()[1:] == list(range(1, 400))
    states = [sm.load("shared", v) for v in (1, 200, 400)]
    assert all(s["pad"] == "x" * 200 for s in states)
    per_writer = h.groupby(h["version"].map(lambda v: sm.load("shared", v)["writer"])).size().to_dict()
    assert per_writer == {"a": 200, "b": 200}
    assert len(sm.transitions("shared")) == 400
    sm.close()


def test_threads_sharing_one_manager(store_url: str) -> None:
    import threading

    sm = StateManager(store_url)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(25):
                sm.save("t", {"k": k, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sm.history("t")["version"].tolist() == list(range(1, 101))
    sm.close()
