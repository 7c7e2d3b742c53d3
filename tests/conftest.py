from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import asyncpg
import pymysql
import pytest
from databases import DatabaseURL
from starlette.testclient import TestClient

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ["sqlite", "postgresql", "mysql"]
ROOT = Path(__file__).parent.parent


def require_server(url: str, variable: str) -> None:
    """Fail in CI, and skip elsewhere, when the database server behind ``url`` is unreachable."""
    parsed = DatabaseURL(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=2).close()
    except OSError as exc:
        message = f"no database server at {parsed.obscure_password} ({exc}); set {variable} to point the tests at one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def postgres_admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def mysql_admin(statement: str) -> None:
    url = DatabaseURL(MYSQL_URL)
    connection = pymysql.connect(host=url.hostname, port=url.port, user=url.username, password=url.password or "")
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database on the backend the test is parametrized with (SQLite by default)."""
    backend = getattr(request, "param", "sqlite")
    name = f"notes_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'notes.db'}"
    elif backend == "postgresql":
        require_server(POSTGRES_URL, "POSTGRES_URL")
        asyncio.run(postgres_admin(f"CREATE DATABASE {name}"))
        yield str(DatabaseURL(POSTGRES_URL).replace(database=name))
        asyncio.run(postgres_admin(f"DROP DATABASE {name} WITH (FORCE)"))
    else:
        require_server(MYSQL_URL, "MYSQL_URL")
        # latin1, as on servers whose default is not utf8mb4: the table must ask for 4-byte UTF-8 itself.
        mysql_admin(f"CREATE DATABASE {name} CHARACTER SET latin1")
        yield str(DatabaseURL(MYSQL_URL).replace(database=name))
        mysql_admin(f"DROP DATABASE {name}")


def load(module_name: str, variable: str, url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``module_name`` anew with ``variable`` set to ``url``, so its app uses that database."""
    monkeypatch.setenv(variable, url)
    return importlib.reload(importlib.import_module(module_name))


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


class Server(NamedTuple):
    url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """Return the process's peak resident memory (``VmHWM``), or its current one (``VmRSS``), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


@contextlib.contextmanager
def serve(app: str, env: dict[str, str], *args: str) -> Iterator[Server]:
    """Run ``app`` under a real uvicorn process and yield it with its base URL; stop it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", *args]
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, f"uvicorn exited with {process.returncode}"
                assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
                time.sleep(0.05)
        yield Server(url, process)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


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
