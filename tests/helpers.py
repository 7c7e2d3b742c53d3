"""What the tests share: database servers, apps served by uvicorn, seeding, and the request cases."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import asyncpg
import databases
import httpx2 as httpx
import pymysql
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ["sqlite", "postgresql", "mysql"]
PGBOUNCER_INI = """[databases]
* = host={host} port={port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = {pool_mode}
max_client_conn = 1000
default_pool_size = 50
unix_socket_dir =
{settings}
"""
ROOT = Path(__file__).parent.parent
CRUD_SEEDS = [  # the notes both CRUD examples start with
    {"text": "first note", "completed": True, "priority": 2},
    {"text": "second note", "completed": False},
    {"text": "100% done_", "completed": True, "priority": -1},
]


def require_docs_files() -> None:
    """Fail in CI, and skip elsewhere, when ``npm ci`` has not installed the docs pages' files (Swagger UI, ReDoc)."""
    if not (ROOT / "node_modules" / "swagger-ui-dist").is_dir() or not (ROOT / "node_modules" / "redoc").is_dir():
        message = "the docs pages' files from npm are not installed: install npm, then run `make test` (or `npm ci`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def require_server(url: str, variable: str) -> None:
    """Fail in CI, and skip elsewhere, when the database server behind ``url`` is unreachable."""
    parsed = databases.DatabaseURL(url)
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
    url = databases.DatabaseURL(MYSQL_URL)
    connection = pymysql.connect(host=url.hostname, port=url.port, user=url.username, password=url.password or "")
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@contextlib.contextmanager
def new_database(backend: str, directory: Path, pgbouncer_port: int | None = None) -> Iterator[str]:
    """Yield the URL of a new, empty database on ``backend`` (SQLite in ``directory``), dropped afterwards."""
    name = f"notes_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'{name}.db'}"
    elif backend == "postgresql" or backend.startswith("pgbouncer-"):
        require_server(POSTGRES_URL, "POSTGRES_URL")
        asyncio.run(postgres_admin(f"CREATE DATABASE {name}"))
        url = databases.DatabaseURL(POSTGRES_URL).replace(database=name)
        if pgbouncer_port is not None:
            url = databases.DatabaseURL(f"{url.replace(port=pgbouncer_port)}?statement_cache_size=0")
        try:
            yield str(url)
        finally:
            asyncio.run(postgres_admin(f"DROP DATABASE {name} WITH (FORCE)"))
    else:
        require_server(MYSQL_URL, "MYSQL_URL")
        # latin1, as on servers whose default is not utf8mb4: the table must ask for 4-byte UTF-8 itself.
        mysql_admin(f"CREATE DATABASE {name} CHARACTER SET latin1")
        try:
            yield str(databases.DatabaseURL(MYSQL_URL).replace(database=name))
        finally:
            mysql_admin(f"DROP DATABASE {name}")


class PgBouncer(NamedTuple):
    port: int
    ini: Path
    process: subprocess.Popen[bytes]
    pool_mode: str
    settings: str

    def point_at(self, server: str) -> None:
        """Send PgBouncer's clients to ``server`` from now on, as an HA manager does after a failover."""
        url = databases.DatabaseURL(server)
        values = {
            "host": url.hostname,
            "port": url.port or 5432,
            "listen_port": self.port,
            "directory": self.ini.parent,
        }
        self.ini.write_text(PGBOUNCER_INI.format(pool_mode=self.pool_mode, settings=self.settings, **values))
        self.process.send_signal(signal.SIGHUP)  # PgBouncer reads its ini file again


@contextlib.contextmanager
def pgbouncer(pool_mode: str, server: str = POSTGRES_URL, settings: str = "") -> Iterator[PgBouncer]:
    """Run Debian's PgBouncer in ``pool_mode`` in front of ``server``, with more ``settings`` for its ini file, and
    yield it; stop it afterwards."""
    executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(executable):
        message = "no pgbouncer: install Debian's pgbouncer package (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    url = databases.DatabaseURL(server)
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)  # PgBouncer will not run as root: it reads its files as the postgres user.
        ini = Path(directory, "pgbouncer.ini")
        values = {"host": url.hostname, "port": url.port or 5432, "listen_port": port, "directory": directory}
        ini.write_text(PGBOUNCER_INI.format(pool_mode=pool_mode, settings=settings, **values))
        Path(directory, "users.txt").write_text(f'"{url.username}" ""\n')
        user = ["-u", "postgres"] if os.geteuid() == 0 else []
        process = subprocess.Popen([executable, *user, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, process)
            yield PgBouncer(port, ini, process, pool_mode, settings)
        finally:
            process.terminate()
            process.wait(timeout=30)


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    """A PostgreSQL primary and its streaming standby, from PostgreSQL 15's own binaries, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = {"primary": free_port(), "standby": free_port()}

    def url(self, node: str, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[node]}/{database}"

    def run(self, *command: str) -> None:
        """Run one of PostgreSQL's binaries as the ``postgres`` user (they refuse root)."""
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*user, str(POSTGRES_BIN / command[0]), *command[1:]], check=True, capture_output=True)

    def start(self, node: str) -> None:
        data = self.directory / node
        options = f"-p {self.ports[node]} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
        self.run("pg_ctl", "-D", str(data), "-o", options, "-l", f"{data}.log", "-w", "start")

    async def sql(self, node: str, statement: str, database: str = "postgres") -> Any:
        connection = await asyncpg.connect(self.url(node, database))
        try:
            return await connection.fetchval(statement)
        finally:
            await connection.close()

    def kill(self, node: str) -> None:
        """Kill the server of ``node`` and its processes at once, as a machine that dies."""
        pid = int((self.directory / node / "postmaster.pid").read_text().split()[0])
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
        os.kill(pid, 9)

    def promote(self, node: str) -> None:
        self.run("pg_ctl", "-D", str(self.directory / node), "-w", "promote")

    def stop(self) -> None:
        for node in self.ports:
            if (self.directory / node / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError):
                    self.run("pg_ctl", "-D", str(self.directory / node), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def postgres_cluster(synchronous: bool = True) -> Iterator[Cluster]:
    """Yield a primary and a standby streaming from it, with a database ``notes`` (synchronous replication once the
    standby streams, so that no commit waits for a standby that is not there yet); stop both afterwards."""
    if not (POSTGRES_BIN / "initdb").exists():
        message = f"no PostgreSQL 15 binaries in {POSTGRES_BIN}: install Debian's postgresql-15"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o777)  # the postgres user writes its clusters here
        cluster = Cluster(Path(directory))
        try:
            primary, standby = (str(cluster.directory / node) for node in ("primary", "standby"))
            cluster.run("initdb", "-D", primary, "-A", "trust", "-U", "postgres", "--no-sync")
            cluster.start("primary")
            port = str(cluster.ports["primary"])
            cluster.run("pg_basebackup", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-D", standby, "-R")
            cluster.start("standby")
            streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            deadline = time.monotonic() + 30
            while asyncio.run(cluster.sql("primary", streaming)) == 0:
                assert time.monotonic() < deadline, "the standby did not stream in 30 s"
                time.sleep(0.05)
            if synchronous:
                asyncio.run(cluster.sql("primary", "ALTER SYSTEM SET synchronous_standby_names = '*'"))
                asyncio.run(cluster.sql("primary", "SELECT pg_reload_conf()"))
                synced = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
                while asyncio.run(cluster.sql("primary", synced)) == 0:
                    assert time.monotonic() < deadline, "the standby was not synchronous in 30 s"
                    time.sleep(0.05)
            asyncio.run(cluster.sql("primary", "CREATE DATABASE notes"))
            replayed = "SELECT count(*) FROM pg_database WHERE datname = 'notes'"
            while asyncio.run(cluster.sql("standby", replayed)) == 0:
                assert time.monotonic() < deadline, "the standby did not replay CREATE DATABASE in 30 s"
                time.sleep(0.05)
            yield cluster
        finally:
            cluster.stop()


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Return once ``process`` listens on ``port``, failing if it exits or takes over ``timeout`` seconds."""
    name = Path(str(process.args[0] if isinstance(process.args, list) else process.args)).name
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, f"{name} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"{name} did not listen in {timeout:g} s"
            time.sleep(0.05)


def load(module_name: str, variable: str, url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``module_name`` anew with ``variable`` set to ``url``, so its app uses that database."""
    monkeypatch.setenv(variable, url)
    return importlib.reload(importlib.import_module(module_name))


def fastapi_app_of(database: databases.Database) -> FastAPI:
    """Return a FastAPI app whose lifespan connects ``database``, as the FastAPI version's does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.connect()
        yield
        await database.disconnect()

    return FastAPI(lifespan=lifespan)


class Server(NamedTuple):
    url: str
    process: subprocess.Popen[bytes]


def copy_modules(destination: Path) -> None:
    """Copy the app's modules, the top level's and the ``storage`` package, to ``destination``, for an edited app
    written beside them."""
    for module in ROOT.glob("*.py"):
        shutil.copy(module, destination)
    shutil.copytree(ROOT / "storage", destination / "storage", ignore=shutil.ignore_patterns("__pycache__"))


def clone_project(destination: Path) -> Path:
    """Copy the files git tracks or would, as they are in the working tree, to ``destination``: what a fresh clone of
    them has (no ``.venv``, no ``node_modules``)."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(command, cwd=ROOT, check=True, capture_output=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def path_without(directory: Path, *commands: str) -> str:
    """Return a ``PATH`` with every command of this one but ``commands``, linked from ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in reversed(os.environ["PATH"].split(os.pathsep)):
        if os.path.isdir(entry):
            for name in os.listdir(entry):
                if name not in commands:
                    link = directory / name
                    link.unlink(missing_ok=True)
                    link.symlink_to(Path(entry, name))
    return str(directory)


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
def serve(app: str, env: dict[str, str], *args: str, cwd: Path = ROOT, stderr: Any = None) -> Iterator[Server]:
    """Run ``app`` under a real uvicorn process in ``cwd`` and yield it with its base URL; stop it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", *args]
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=cwd, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process)
        yield Server(url, process)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def seed(database_url: str, rows: int) -> None:
    """Add ``rows`` notes straight into the database, behind the running app's back."""
    values = [(f"note number {index}", index % 2 == 0) for index in range(rows)]
    if database_url.startswith("sqlite"):
        # closing(): a sqlite3 connection's own "with" commits but does not close (a ResourceWarning on 3.13).
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)) as connection:
            with connection:
                connection.executemany("INSERT INTO notes (text, completed) VALUES (?, ?)", values)
    elif database_url.startswith("postgresql"):

        async def copy() -> None:
            connection = await asyncpg.connect(database_url)
            await connection.copy_records_to_table("notes", records=values, columns=["text", "completed"])
            await connection.close()

        asyncio.run(copy())
    else:
        url = databases.DatabaseURL(database_url)
        connection = pymysql.connect(host=url.hostname, port=url.port, user=url.username, database=url.database)
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO notes (text, completed) VALUES (%s, %s)", values)
        connection.commit()
        connection.close()


JSON = {"content-type": "application/json"}


def post(body: Any, headers: dict[str, str] | None = JSON) -> tuple[str, str, dict[str, str], bytes]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return "POST", "/notes/", dict(headers or {}), content


def raw(text: str, headers: dict[str, str] | None = JSON) -> tuple[str, str, dict[str, str], bytes]:
    return post(text.encode(), headers)


INVALID_BOOLEANS: list[Any] = ["maybe", "", 2, -1, 0.5, None, [], {}, [True]]
INVALID_STRINGS: list[Any] = [1, 1.5, None, True, [], {}, ["a"]]

CASES = [
    pytest.param(post({"text": "a", "completed": True}), id="create"),
    pytest.param(post({"text": "", "completed": False}), id="empty-text"),
    pytest.param(post({"text": "é ü 日本 😀 \u2028 \x7f \x1f \"'\\/<>&", "completed": True}), id="unicode"),
    pytest.param(post({"text": "x" * 100_000, "completed": True}), id="long-text"),
    pytest.param(post({"text": "'; DROP TABLE notes; --", "completed": True}), id="sql-metacharacters"),
    pytest.param(post({"text": "a", "completed": True, "id": 99, "extra": [1, {"b": None}]}), id="extra-fields"),
    pytest.param(raw('{"text": "a", "text": "b", "completed": true}'), id="duplicate-keys"),
    pytest.param(raw('{"text": "a", "completed": true, "x": NaN}'), id="nan-in-extra-field"),
    pytest.param(raw('{"text": "a", "completed": true, "x": "\\ud800"}'), id="surrogate-in-extra-field"),
    *[
        pytest.param(post({"text": "a", "completed": value}), id=f"completed-{value!r}")
        for value in ("true", "false", "yes", "no", "on", "off", "1", "0", "t", "f", "y", "n", "True", "OFF", 1, 0)
    ],
    pytest.param(post({"text": "a", "completed": 0.0}), id="completed-0.0"),
    pytest.param(post({"text": "a", "completed": 1.0}), id="completed-1.0"),
    *[
        pytest.param(post({"text": "a", "completed": value}), id=f"completed-invalid-{value!r}")
        for value in INVALID_BOOLEANS
    ],
    *[
        pytest.param(post({"text": value, "completed": True}), id=f"text-invalid-{value!r}")
        for value in INVALID_STRINGS
    ],
    pytest.param(post({"completed": True}), id="missing-text"),
    pytest.param(post({"text": "a"}), id="missing-completed"),
    pytest.param(post({}), id="missing-both"),
    pytest.param(post({"text": None}), id="missing-and-invalid"),
    *[pytest.param(post(value), id=f"not-an-object-{value!r}") for value in ([], [1], "text", 1, 1.5, None, True)],
    pytest.param(post(b""), id="empty-body"),
    pytest.param(post(b"", headers=None), id="empty-body-no-content-type"),
    *[
        pytest.param(raw(text), id=f"malformed-{text!r}")
        for text in [
            '{"text":"a",',
            "{",
            "}",
            "nope",
            '{"text": "a" "completed": true}',
            '{"text": "a", "completed": true,}',
            "{'text': 'a', 'completed': true}",
            '{"text":"a","completed":true}x',
            '{"text":"a","completed":tru}',
            " ",
            "\n\n  {",
            '{"text": "\\x"}',
            '{"text": "a\nb", "completed": true}',
        ]
    ],
    pytest.param(raw('{"text": "a", "completed": NaN}'), id="nan"),
    pytest.param(raw('{"text": "a", "completed": Infinity}'), id="infinity"),
    pytest.param(raw('{"text": -Infinity, "completed": true}'), id="text-minus-infinity"),
    pytest.param(raw('{"text": "a", "completed": 1e400}'), id="huge-float"),
    pytest.param(raw("[NaN]"), id="nan-array"),
    pytest.param(raw('{"text": NaN}'), id="nan-and-missing"),
    pytest.param(raw('{"text": "a", "completed": ' + "9" * 5000 + "}"), id="huge-integer"),
    pytest.param(raw('{"text": "a", "completed": ' + "9" * 100 + "}"), id="big-integer"),
    pytest.param(raw('{"text": "\\ud800", "completed": true}'), id="lone-surrogate-text"),
    pytest.param(raw('{"text": "a", "completed": "\\udfff"}'), id="lone-surrogate-completed"),
    pytest.param(raw('{"text": "a\\u0000b", "completed": true}'), id="nul-in-text"),
    pytest.param(raw("[" * 100_000 + "]" * 100_000), id="deep-nesting"),
    pytest.param(raw('{"text": "a", "completed": ' + "[" * 500 + "]" * 500 + "}"), id="nested-input"),
    pytest.param(post({"text": "a", "completed": True}, headers=None), id="no-content-type"),
    pytest.param(post({"text": "a", "completed": True}, {"content-type": "text/plain"}), id="text-plain"),
    pytest.param(
        post(b"text=a&completed=true", {"content-type": "application/x-www-form-urlencoded"}), id="form-encoded"
    ),
    pytest.param(post({"text": "a", "completed": True}, {"content-type": "multipart/form-data"}), id="multipart"),
    *[
        pytest.param(post({"text": "a", "completed": True}, {"content-type": value}), id=f"content-type-{value}")
        for value in [
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/json;charset=UTF-8",
            "APPLICATION/JSON",
            "application/vnd.api+json",
            "application/merge-patch+json",
            "application/jsonx",
            "application/xjson",
            "application/+json",
            "application",
            "json",
            "application/",
            ";",
            "application/json, text/plain",
            'application/json; charset="utf-8"; boundary=x',
        ]
    ],
    pytest.param(post(b'{"text": "\xff", "completed": true}'), id="not-utf-8"),
    pytest.param(post(b"\xff\xfe\xfd", {"content-type": "text/plain"}), id="not-utf-8-text-plain"),
    pytest.param(post('{"text": "é", "completed": true}'.encode("latin-1")), id="latin-1"),
    pytest.param(post('{"text": "é", "completed": true}'.encode("utf-16")), id="utf-16"),
    pytest.param(post('{"text": "é", "completed": true}'.encode("utf-8-sig")), id="utf-8-bom"),
    pytest.param(post(b'{"text": "a", "completed": true}\x00'), id="nul-byte-after-body"),
    pytest.param(("GET", "/notes/", {}, b""), id="list-empty"),
    pytest.param(("GET", "/notes/?skip=1&limit=x", {}, b""), id="list-query-string"),
    pytest.param(("GET", "/notes", {}, b""), id="redirect-get"),
    pytest.param(("POST", "/notes", JSON, b'{"text": "a", "completed": true}'), id="redirect-post"),
    pytest.param(("GET", "/notes/?x=1".replace("/?", "?"), {}, b""), id="redirect-keeps-query"),
    pytest.param(("GET", "/nope", {}, b""), id="not-found"),
    pytest.param(("GET", "/notes/1", {}, b""), id="not-found-note"),
    pytest.param(("POST", "/", JSON, b"{}"), id="not-found-root"),
    *[
        pytest.param((method, "/notes/", JSON, b""), id=f"method-{method}")
        for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]
    ],
    pytest.param(("HEAD", "/notes", {}, b""), id="head-redirect"),
]


def send(client: TestClient, request: tuple[str, str, dict[str, str], bytes]) -> httpx.Response:
    method, path, headers, content = request
    return client.request(method, path, headers=headers, content=content, follow_redirects=False)


def summary(response: httpx.Response) -> dict[str, Any]:
    headers = {name: response.headers.get(name) for name in ("content-type", "allow", "location", "content-length")}
    return {"status": response.status_code, "headers": headers, "content": response.content}


@contextlib.contextmanager
def notes_locked(database_url: str) -> Iterator[None]:
    """Hold, from another session, a lock on ``notes`` that blocks the app's writes, and its reads but on SQLite."""
    if database_url.startswith("sqlite"):
        with contextlib.closing(
            sqlite3.connect(databases.DatabaseURL(database_url).database, isolation_level=None)
        ) as writer:
            writer.execute("BEGIN IMMEDIATE")
            yield
            writer.execute("ROLLBACK")
        return
    if database_url.startswith("mysql"):
        url = databases.DatabaseURL(database_url)
        connection = pymysql.connect(host=url.hostname, port=url.port, user=url.username, database=url.database)
        try:
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLES notes WRITE")
                yield
                cursor.execute("UNLOCK TABLES")
        finally:
            connection.close()
        return
    locked, release = threading.Event(), threading.Event()

    async def hold() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
        finally:
            await connection.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert locked.wait(timeout=10)
        yield
    finally:
        release.set()
        thread.join()


def stalled_reader(base_url: str, request: bytes = b"GET /notes/ HTTP/1.1\r\nHost: notes\r\n\r\n") -> socket.socket:
    """Return a socket that sent ``request`` and read its answer's status line and headers, and will read nothing
    more: a 4 KiB receive buffer and 1,400-byte segments, as on a real network, so that loopback does not take the
    answer for it."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
    sock.settimeout(60)
    sock.connect((host, int(port)))
    sock.sendall(request)
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # a byte at a time: nothing of the body is taken
        byte = sock.recv(1)
        assert byte, f"closed after {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 200 "), head
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> int:
    """Read ``sock`` until the server closes or resets it, within ``timeout`` seconds; return the bytes read."""
    sock.settimeout(timeout)
    read = 0
    try:
        while chunk := sock.recv(65536):
            read += len(chunk)
    except ConnectionResetError:
        pass
    return read
