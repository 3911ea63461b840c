"""Run the agent frameworks' own test suites against statekit's adapters.

    python tests/peers/statekit_peers.py langgraph --backend file memory postgres
    python tests/peers/statekit_peers.py openai-agents --backend file

For each suite it takes the *installed* version of the framework, downloads that
version's source archive from PyPI with pip (``pip download --no-deps
--no-binary :all:``), unpacks its ``tests/`` folder into a cache
(``~/.cache/statekit-peers``, or ``$STATEKIT_PEERS_CACHE``), installs the few
test-only packages its conftest imports into the cache (at the versions its own
``uv.lock`` pins), and runs its tests with :mod:`statekit_peers_plugin`, which
swaps the checkpointer or session for statekit's through the suite's own
fixtures. Nothing of theirs is copied into this repository, and no assertion is
changed; the tests left out are listed with the reason. On ``memory``, LangGraph
runs only its graph-execution files (``Suite.subsets``), and the runner says so.

It prints one line per backend (``N passed, N failed``) and exits non-zero when
a test that was run failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("STATEKIT_PEERS_CACHE") or Path.home() / ".cache" / "statekit-peers")


@dataclass(frozen=True)
class Suite:
    """One framework's test suite: where it comes from and which of its tests concern statekit."""

    name: str
    dist: str  # the installed distribution whose sdist holds the tests
    test_deps: tuple[str, ...]  # test-only packages its conftest imports, pinned from its uv.lock
    paths: tuple[str, ...]  # test files or folders, relative to the unpacked root
    pytest_args: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    subsets: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)  # backend -> (globs, why)

    def targets(self, root: Path, backend: str) -> tuple[list[str], str]:
        """The test paths to run on ``backend`` and, when it is a subset, why."""
        if backend not in self.subsets:
            return list(self.paths), ""
        globs, why = self.subsets[backend]
        return sorted(str(p.relative_to(root)) for g in globs for p in root.glob(g)), why


SUITES = {
    "langgraph": Suite(
        name="langgraph",
        dist="langgraph",
        test_deps=("pytest-mock", "syrupy", "redis", "psycopg-pool", "langgraph-checkpoint-postgres"),
        paths=("tests",),  # the plugin keeps the tests that use a checkpointer fixture
        subsets={"memory": (
            ("tests/test_pregel*.py", "tests/test_large_cases*.py"),
            "sqlite:///:memory: differs from a SQLite file only in its one shared connection (threads); the "
            "graph-execution tests exercise that, and the whole suite runs on a file and on PostgreSQL (CI time)",
        )},
    ),
    "openai-agents": Suite(
        name="openai-agents",
        dist="openai-agents",
        test_deps=("pytest-asyncio",),
        paths=("tests/memory/test_session.py", "tests/memory/test_session_limit.py"),
        pytest_args=("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=session"),
        excluded={
            name: "reads SQLiteSession's private attributes (_connections, _lock, _file_locks...)"
            for name in (
                "test_sqlite_session_close_closes_worker_thread_connections",
                "test_sqlite_session_reaps_connections_from_exited_worker_threads",
                "test_sqlite_session_closes_retired_connections_before_the_next_allocation",
                "test_sqlite_session_keeps_connections_of_live_worker_threads",
                "test_sqlite_session_pop_item_skips_corrupt_most_recent",
                "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows",
                "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows",
                "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows",
                "test_sqlite_session_file_lock_is_shared_across_instances",
                "test_sqlite_session_failed_clear_session_rolls_back",
                "test_sqlite_session_failed_pop_item_releases_write_lock",
                "test_sqlite_session_rollback_failure_evicts_connection",
                "test_sqlite_session_close_retries_quarantined_connection",
                "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome",
            )
        } | {
            "test_sqlite_session_failed_add_items_releases_write_lock":
                "opens SQLiteSession's database file with sqlite3 and writes to its agent_sessions table",
            "test_sqlite_session_closed_rejects_empty_add_items":
                "matches the class name in SQLiteSession's message ('SQLiteSession is closed'); StatekitSession "
                "raises the same RuntimeError naming itself (tests/test_integration_adapter_contracts.py)",
        },
    ),
}


@dataclass
class Result:
    suite: str
    version: str
    backend: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    swapped: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    subset: str = ""  # why only some test files ran on this backend ("" when all did)
    output: str = ""

    def line(self) -> str:
        part = " (a subset of the files, see above)" if self.subset else ""
        return (f"{self.suite} {self.version} on {self.backend}{part}: {self.passed} passed, {self.failed} failed, "
                f"{self.skipped} skipped, {len(self.excluded)} excluded, {len(self.flaky)} flaky; "
                f"{self.swapped} statekit savers or sessions used ({self.seconds:.0f} s)")


# ----------------------------------------------------------------------------- fetching


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def fetch(suite: Suite) -> tuple[str, Path, Path]:
    """The installed version, the unpacked test root and the folder of test-only packages (cached)."""
    version = importlib.metadata.version(suite.dist)
    root = CACHE / f"{suite.name}-{version}"
    deps = CACHE / f"{suite.name}-{version}-deps"
    if not (root / ".complete").exists():
        with tempfile.TemporaryDirectory(prefix="statekit-peers-") as tmp:
            _pip("download", "--no-deps", "--no-binary", ":all:", "--quiet", "-d", tmp, f"{suite.dist}=={version}")
            (archive,) = Path(tmp).glob("*.tar.gz")
            _unpack_tests(archive, root)
            lock = _read_member(archive, "uv.lock")
        pins = _pins(lock, suite.test_deps)
        deps.mkdir(parents=True, exist_ok=True)
        _pip("install", "--no-deps", "--quiet", "--target", str(deps), *pins)
        (root / ".complete").write_text(json.dumps({"version": version, "deps": pins}))
    return version, root, deps


def _unpack_tests(archive: Path, root: Path) -> None:
    """Only the archive's ``tests/`` folder: the framework itself is the installed one."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.split("/", 2)[1:2] == ["tests"]]
        if not members:
            raise RuntimeError(f"{archive.name} has no tests/ folder; the peer suite cannot run from it.")
        for m in members:
            m.name = m.name.split("/", 1)[1]
        root.mkdir(parents=True, exist_ok=True)
        tar.extractall(root, members=members, filter="data")
    (root / "pytest.ini").write_text("[pytest]\n")  # the rootdir; their own addopts need plugins we don't use


def _read_member(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.name.split("/", 1)[-1] == name:
                data = tar.extractfile(m)
                return io.TextIOWrapper(data, encoding="utf-8").read() if data else ""
    return ""


def _pins(lock_text: str, names: tuple[str, ...]) -> list[str]:
    """``name==version`` from the archive's uv.lock (``<=`` for a workspace member that PyPI may lag behind)."""
    found: dict[str, tuple[str, bool]] = {}
    if lock_text:
        for pkg in tomllib.loads(lock_text).get("package", []):
            if pkg.get("name") in names:
                source = pkg.get("source", {})
                found[pkg["name"]] = (pkg["version"], "registry" in source)
    out = []
    for name in names:
        if name not in found:
            out.append(name)
        else:
            version, registry = found[name]
            out.append(f"{name}=={version}" if registry else f"{name}<={version}")
    return out


# ----------------------------------------------------------------------------- running


def _pytest(suite: Suite, root: Path, deps: Path, backend: str, targets: list[str]) -> tuple[dict, str]:
    """One pytest process on ``targets``: its report (from the plugin) and its output."""
    with tempfile.TemporaryDirectory(prefix="statekit-peers-report-") as tmp:
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(deps), str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]),
            "STATEKIT_PEERS_BACKEND": backend,
            "STATEKIT_PEERS_SUITE": suite.name,
            "STATEKIT_PEERS_EXCLUDED": json.dumps(suite.excluded),
            "STATEKIT_PEERS_REPORT": str(report),
            "NO_DOCKER": "true",  # LangGraph's own Redis/PostgreSQL store and cache fixtures are not ours to test
        }
        args = [sys.executable, "-m", "pytest", "-p", "statekit_peers_plugin", "-p", "no:cacheprovider",
                "-q", "-rfEs", "--timeout", "300", *suite.pytest_args, *targets]
        done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
        output = done.stdout + done.stderr
        if not report.exists():
            raise RuntimeError(f"The {suite.name} suite did not run (exit {done.returncode}):\n{output[-4000:]}")
        return json.loads(report.read_text()), output


def run(suite_name: str, backend: str, *, extra: list[str] | None = None) -> Result:
    """Run one suite on one backend (``file``, ``memory`` or ``postgres``) and collect its outcome.

    A test that fails is run once more on its own; one that passes then is reported as
    flaky (LangGraph has timing-sensitive tests, e.g. tasks that sleep 10 ms and expect an
    order) and counted as passed; one that fails twice is a failure.
    """
    suite = SUITES[suite_name]
    version, root, deps = fetch(suite)
    result = Result(suite.name, version, backend)
    targets, result.subset = suite.targets(root, backend)
    if not targets:
        raise RuntimeError(f"No {suite.name} test files match the subset for {backend}; has the suite moved?")
    start = time.monotonic()
    data, result.output = _pytest(suite, root, deps, backend, [*(extra or []), *targets])
    failures = list(data["failures"])
    if failures:
        again, output = _pytest(suite, root, deps, backend, failures)
        result.output += "\n--- rerun of the failures ---\n" + output
        result.flaky = [n for n in failures if n not in again["failures"]]
        failures = list(again["failures"])
        data["swapped"] += again["swapped"]
    result.seconds = time.monotonic() - start
    result.failed = len(failures)
    result.passed = data["passed"] + len(result.flaky)
    result.skipped, result.failures, result.skips = data["skipped"], failures, data["skips"]
    result.swapped = data["swapped"]
    result.excluded = [tuple(x) for x in data["excluded"]]  # type: ignore[misc]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--backend", nargs="+", default=["file"], choices=["file", "memory", "postgres"])
    ns, extra = parser.parse_known_args(argv)  # anything else goes to pytest (-k ..., -x)
    extra = [a for a in extra if a != "--"]
    bad = 0
    for backend in ns.backend:
        result = run(ns.suite, backend, extra=extra)
        if result.subset:
            print(f"  on {backend} only some files ran: {result.subset}")
        for nodeid, reason in result.excluded:
            print(f"  excluded {nodeid}: {reason}")
        for nodeid in result.skips:
            print(f"  skipped by the suite itself: {nodeid}")
        for nodeid in result.flaky:
            print(f"  flaky (failed, then passed on its own): {nodeid}")
        for nodeid in result.failures:
            print(f"  FAILED {nodeid}")
        print(result.line())
        bad += result.failed
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
