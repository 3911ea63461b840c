"""Kishu's own environment: a venv layered on the project's venv, kept in the user's cache folder.

kishu 0.3.4 pins ``jupyter-ui-poll<=1.0.0`` and pulls in the ``typing`` and
``dataclasses`` backports (which put ``typing.py`` and ``dataclasses.py`` in
site-packages), Flask, and ipylab (a JupyterLab extension that would load in
every JupyterLab started from the project's venv, the browser tests' too). So
it is not installed in the project's venv. Instead the benchmark makes a venv
of its own whose ``.pth`` file puts the project venv's site-packages after its
own: pandas, numpy, pyarrow, IPython and ipykernel are the very same installs
(same versions, so the notebook runs are comparable), and only kishu and what
it adds live in the layered venv. The project's venv is never written to.
Built on first use (under a minute from PyPI), then reused: it lives in
``~/.cache/statekit-bench/`` (``$STATEKIT_BENCH_CACHE`` to move it) rather than
in the work tree, so a fresh clone on the same machine (CI's) finds it built.
Each run points its ``.pth`` at the current project's venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

KISHU = "kishu==0.3.4"
CACHE = Path(os.environ.get("STATEKIT_BENCH_CACHE") or Path.home() / ".cache" / "statekit-bench")
VENV = CACHE / f"venv-kishu-0.3.4-py{sys.version_info.major}{sys.version_info.minor}"
PTH = "statekit_bench_project_venv.pth"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _site_packages(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def _works(python: Path) -> bool:
    probe = "import kishu, pandas, ipykernel; from kishu import init_kishu"
    return python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure(venv: Path = VENV, *, quiet: bool = True) -> Path:
    """The layered venv's python, created and filled on first use, layered on this interpreter's venv."""
    python = _python(venv)
    project_site = sysconfig.get_paths()["purelib"]
    if not Path(project_site).is_dir():
        raise RuntimeError(f"cannot find the project's site-packages ({project_site})")
    if python.exists():
        _point_at(python, project_site)
        if _works(python):
            return python
    else:
        venv.parent.mkdir(parents=True, exist_ok=True)
        base = Path(getattr(sys, "_base_executable", sys.executable))
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        _point_at(python, project_site)
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", KISHU]
    if quiet:
        cmd.insert(4, "--quiet")
    env = {**os.environ, "PIP_REQUIRE_VIRTUALENV": "0"}
    subprocess.run(cmd, check=True, env=env)
    if not _works(python):
        raise RuntimeError(f"kishu does not import in {venv} after installing it")
    return python


def _point_at(python: Path, project_site: str) -> None:
    Path(_site_packages(python), PTH).write_text(project_site + "\n", encoding="utf-8")


if __name__ == "__main__":
    print(ensure(quiet=False))
