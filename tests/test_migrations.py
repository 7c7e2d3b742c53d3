"""Alembic's migrations create the same schema as the app's SQLAlchemy table, on every backend."""

from __future__ import annotations

import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from tests.helpers import BACKENDS, ROOT, load


def alembic(database_url: str, *args: str) -> str:
    command = [sys.executable, "-m", "alembic", *args]
    result = subprocess.run(command, cwd=ROOT, env={"DATABASE_URL": database_url}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_migrations_match_the_table(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    alembic(database_url, "upgrade", "head")
    # `alembic check` compares the migrated database with notes_app.metadata and fails on any difference.
    assert "No new upgrade operations detected" in alembic(database_url, "check")

    notes_app = load("notes_app", "DATABASE_URL", database_url, monkeypatch)
    with TestClient(notes_app.app) as client:
        response = client.post("/notes/", json={"text": "after the migration", "completed": True})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": 1, "text": "after the migration", "completed": True}

    alembic(database_url, "downgrade", "base")
