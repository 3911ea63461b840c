"""The team-store tutorial also runs on the real PostgreSQL (nbval runs it on the SQLite fallback)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import drop_pg_schema, fresh_pg_url

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05-team-store-postgres.ipynb"


@pytest.mark.postgres
@pytest.mark.kernel
def test_team_store_tutorial_runs_on_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, schema = fresh_pg_url()
    try:
        monkeypatch.setenv("STATEKIT_TEAM_URL", url)
        shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
        nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        texts = ["".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                         for o in c.get("outputs", [])) for c in nb.cells if c.cell_type == "code"]
        assert "backend: postgresql" in texts[0]
        assert "160 versions, contiguous: True" in "\n".join(texts)
        assert "someone else saved first" in "\n".join(texts)
        assert os.environ["STATEKIT_TEAM_URL"] == url
    finally:
        drop_pg_schema(schema)
