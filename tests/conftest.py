"""Fixtures: a new database for each test on the backend it is parametrized with, and the apps on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from starlette.testclient import TestClient

from tests.helpers import CRUD_SEEDS, ROOT, load, new_database, pgbouncer, serve


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database on the backend the test is parametrized with (SQLite by default)."""
    backend = getattr(request, "param", "sqlite")
    pgbouncer_port = None
    if backend.startswith("pgbouncer-"):
        pgbouncer_port = request.getfixturevalue("pgbouncers")[backend.removeprefix("pgbouncer-")]
    with new_database(backend, tmp_path, pgbouncer_port) as url:
        yield url


@pytest.fixture(scope="session")
def pgbouncers() -> Iterator[dict[str, int]]:
    """Yield the ports of two PgBouncers in front of ``POSTGRES_URL``, by pool mode: transaction and session."""
    with pgbouncer("transaction") as transaction, pgbouncer("session") as session:
        yield {"transaction": transaction.port, "session": session.port}


@pytest.fixture
def port_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load("notes_app", "DATABASE_URL", database_url, monkeypatch)


@pytest.fixture
def client(port_app: ModuleType) -> Iterator[TestClient]:
    with TestClient(port_app.app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def reference_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    reference = load(
        "tests.reference_app", "REFERENCE_DATABASE_URL", f"sqlite:///{tmp_path / 'reference.db'}", monkeypatch
    )
    with TestClient(reference.app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def clients(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, TestClient]]:
    """Yield clients of the port's CRUD example on the test's database and of its FastAPI twin, both seeded."""
    port = load("examples.crud_app", "CRUD_DATABASE_URL", database_url, monkeypatch)
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = load("examples.crud_fastapi_app", "CRUD_FASTAPI_DATABASE_URL", reference_url, monkeypatch)
    with TestClient(port.app) as client, TestClient(reference.app) as reference_client:
        for note in CRUD_SEEDS:
            assert client.post("/notes/", json=note).json() == reference_client.post("/notes/", json=note).json()
        yield client, reference_client


@pytest.fixture
def live_server(database_url: str) -> Iterator[str]:
    """Yield the base URL of the port served by uvicorn on its own database."""
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        yield server.url


@pytest.fixture(autouse=True, scope="session")
def developer_database_untouched() -> Iterator[None]:
    """Fail the run if a test wrote the default database file, the developer's own."""
    default = ROOT / "test.db"
    before = default.stat().st_mtime_ns if default.exists() else None
    yield
    after = default.stat().st_mtime_ns if default.exists() else None
    assert after == before, "a test wrote ./test.db, the developer's database"
