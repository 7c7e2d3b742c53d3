"""Fixtures: a new database for each test on the backend it is parametrized with, and the apps on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from databases import DatabaseURL
from starlette.testclient import TestClient

from tests.helpers import (
    MYSQL_URL,
    POSTGRES_URL,
    ROOT,
    load,
    mysql_admin,
    pgbouncer,
    postgres_admin,
    require_server,
    serve,
)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database on the backend the test is parametrized with (SQLite by default)."""
    backend = getattr(request, "param", "sqlite")
    name = f"notes_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'notes.db'}"
    elif backend == "postgresql" or backend.startswith("pgbouncer-"):
        require_server(POSTGRES_URL, "POSTGRES_URL")
        asyncio.run(postgres_admin(f"CREATE DATABASE {name}"))
        url = DatabaseURL(POSTGRES_URL).replace(database=name)
        if backend.startswith("pgbouncer-"):
            port = request.getfixturevalue("pgbouncers")[backend.removeprefix("pgbouncer-")]
            url = DatabaseURL(f"{url.replace(port=port)}?statement_cache_size=0")
        yield str(url)
        asyncio.run(postgres_admin(f"DROP DATABASE {name} WITH (FORCE)"))
    else:
        require_server(MYSQL_URL, "MYSQL_URL")
        # latin1, as on servers whose default is not utf8mb4: the table must ask for 4-byte UTF-8 itself.
        mysql_admin(f"CREATE DATABASE {name} CHARACTER SET latin1")
        yield str(DatabaseURL(MYSQL_URL).replace(database=name))
        mysql_admin(f"DROP DATABASE {name}")


@pytest.fixture(scope="session")
def pgbouncers() -> Iterator[dict[str, int]]:
    """Yield the ports of two PgBouncers in front of ``POSTGRES_URL``, by pool mode: transaction and session."""
    with pgbouncer("transaction") as transaction, pgbouncer("session") as session:
        yield {"transaction": transaction, "session": session}


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
