"""Clients that stop reading hold nothing: a list is read whole, its connection given back, then sent from a spool;
a client that takes nothing for ``SEND_TIMEOUT`` is cut off, and one that leaves is let go quietly."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx2 as httpx
import pymysql
import pytest
from databases import DatabaseURL
from starlette.testclient import TestClient

import routing
from tests.helpers import (
    BACKENDS,
    MYSQL_URL,
    POSTGRES_URL,
    read_until_closed,
    rss_mib,
    seed,
    serve,
    stalled_reader,
)

NOTES = 20_000
STALLED = {"sqlite": 8, "postgresql": 20, "mysql": 20}  # twice the readers, or the pool's max_size
# `make soak` sets these higher: 300 stalled readers on SQLite, a minute for the client.
SECONDS = float(os.environ.get("SLOW_CLIENT_SECONDS", "30"))
STALLED_ON_SQLITE = int(os.environ.get("STALLED_ON_SQLITE", STALLED["sqlite"]))
WAL_POSTS = int(os.environ.get("WAL_POSTS", "10000"))


def held_in_transaction(database_url: str) -> int:
    """Return how many of the database's sessions have been inside a transaction for over a second."""
    url = DatabaseURL(database_url)
    if url.dialect == "postgresql":

        async def count() -> int:
            connection = await asyncpg.connect(POSTGRES_URL)
            try:
                held: int = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND xact_start < now() - interval '1 s'",
                    url.database,
                )
                return held
            finally:
                await connection.close()

        return asyncio.run(count())
    admin = DatabaseURL(MYSQL_URL)
    connection = pymysql.connect(host=admin.hostname, port=admin.port, user=admin.username)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                "ON t.trx_mysql_thread_id = p.id WHERE p.db = %s AND t.trx_started < NOW() - INTERVAL 1 SECOND",
                (url.database,),
            )
            row = cursor.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        connection.close()


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def use_for(base_url: str, seconds: float, database_url: str) -> list[float]:
    """POST a note and GET the list, over and over for ``seconds``; return how long each request took. Each answers
    200, and the database holds no session inside a transaction for over a second."""
    took = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        end = time.monotonic() + seconds
        index = 0
        while time.monotonic() < end:
            start = time.monotonic()
            created = await client.post("/notes/", json={"text": f"normal {index}", "completed": True})
            assert created.status_code == 200, created.text
            took.append(time.monotonic() - start)
            start = time.monotonic()
            listed = await client.get("/notes/")
            assert listed.status_code == 200, listed.text
            assert len(listed.json()) == NOTES + index + 1
            took.append(time.monotonic() - start)
            if not database_url.startswith("sqlite") and index % 10 == 0:
                assert await asyncio.to_thread(held_in_transaction, database_url) == 0
            index += 1
    return took


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_stalled_readers_take_nothing_from_other_clients(database_url: str) -> None:
    backend = DatabaseURL(database_url).dialect
    stalled_count = STALLED_ON_SQLITE if backend == "sqlite" else STALLED[backend]
    # The stalled readers stay stalled while they are opened and the client works, then are cut off.
    send_timeout = SECONDS + 10 + stalled_count / 5
    env = {"DATABASE_URL": database_url, "SEND_TIMEOUT": str(send_timeout)}
    with serve("notes_app:app", env) as server:
        seed(database_url, NOTES)
        assert len(httpx.get(f"{server.url}/notes/", timeout=30).json()) == NOTES
        idle = rss_mib(server.process.pid, "VmRSS")
        stalled = [(stalled_reader(server.url), time.monotonic()) for _ in range(stalled_count)]
        try:
            took = asyncio.run(use_for(server.url, SECONDS, database_url))
            assert max(took) < 1, f"slowest request: {max(took):.2f} s"
            held = rss_mib(server.process.pid, "VmRSS")
            assert held - idle < (50 if backend == "sqlite" else 20), f"{idle:.0f} MiB idle, {held:.0f} with stalls"
            assert threads(server.process.pid) <= 12
            # Cut off once they have taken nothing for SEND_TIMEOUT: read then, each has a few kilobytes of its list.
            for sock, opened in stalled:
                time.sleep(max(0, opened + send_timeout + 2 - time.monotonic()))
                assert read_until_closed(sock, 5) < 1024 * 1024
        finally:
            for sock, _ in stalled:
                sock.close()


def test_a_stalled_reader_holds_back_no_checkpoint(database_url: str) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        seed(database_url, NOTES)
        stalled = stalled_reader(server.url)
        try:

            async def create(writer: int) -> None:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    for index in range(writer, WAL_POSTS, 4):
                        response = await client.post("/notes/", json={"text": f"note {index}", "completed": True})
                        assert response.status_code == 200, response.text

            async def create_all() -> None:
                await asyncio.gather(*(create(writer) for writer in range(4)))

            asyncio.run(create_all())
            wal = Path(DatabaseURL(database_url).database + "-wal").stat().st_size
            assert wal < 8 * 1024 * 1024, f"{wal} bytes of WAL"
        finally:
            stalled.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_session_ended_in_the_middle_of_a_list_is_a_503(
    database_url: str, port_app: ModuleType, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(database_url, NOTES)
    monkeypatch.setattr(port_app.database, "page_size", 20)  # a thousand pages: a read long enough to be caught
    url = DatabaseURL(database_url)
    ended = threading.Event()
    statement = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{url.database}' AND query LIKE 'FETCH%'"
    )

    def end_the_reading_session() -> None:
        deadline = time.monotonic() + 20
        while not ended.is_set() and time.monotonic() < deadline:
            if asyncio.run(admin_postgres(statement)):
                ended.set()

    killer = threading.Thread(target=end_the_reading_session)
    killer.start()
    try:
        response = client.get("/notes/")
    finally:
        ended.set()
        killer.join()
    assert response.status_code == 503, response.text[:200]
    assert response.json() == {"detail": "Database unavailable, try again later"}
    assert len(client.get("/notes/").json()) == NOTES  # the next list is whole


async def admin_postgres(statement: str) -> Any:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_an_http_1_0_client_gets_the_whole_list_with_its_length(database_url: str) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        seed(database_url, NOTES)
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /notes/ HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding" not in headers
    assert int(headers[b"content-length"]) == len(body)
    assert len(json.loads(body)) == NOTES


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /notes/ HTTP/1.1\r\nHost: notes\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"te',
            id="leaves-mid-body",
        ),
        pytest.param(
            b"POST /notes/ HTTP/1.1\r\nHost: notes\r\ncontent-type: application/json\r\n"
            b'transfer-encoding: chunked\r\n\r\n5\r\n{"tex\r\nzz\r\n',
            id="bad-chunk-size",
        ),
    ],
)
def test_a_client_leaving_before_its_request_is_read_leaves_no_trace(
    database_url: str, request_bytes: bytes, tmp_path: Path
) -> None:
    log = tmp_path / "stderr"
    with log.open("w") as stderr, serve("notes_app:app", {"DATABASE_URL": database_url}, stderr=stderr) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for _ in range(20):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(request_bytes)
        time.sleep(0.5)
        assert httpx.get(f"{server.url}/notes/").json() == []
    logged = log.read_text()
    assert "Traceback" not in logged and "Exception" not in logged, logged


def test_a_write_whose_client_left_is_stored_once(database_url: str) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for index in range(20):
            body = json.dumps({"text": f"left {index}", "completed": True}).encode()
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(
                    b"POST /notes/ HTTP/1.1\r\nHost: notes\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
        deadline = time.monotonic() + 10
        while len(notes := httpx.get(f"{server.url}/notes/").json()) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert sorted(note["text"] for note in notes) == sorted(f"left {index}" for index in range(20))


def test_a_huge_header_is_refused_and_leaves_no_memory_behind(database_url: str) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/notes/", json={"text": "warm", "completed": True}).status_code == 200
            before = rss_mib(server.process.pid, "VmRSS")
            for index in range(64):
                content_type = f"application/json; x={index}" + "x" * (4 * 1024 * 1024)
                response = client.post("/notes/", content=b"{}", headers={"content-type": content_type})
                assert response.status_code == 431, response.text
                assert response.json() == {"detail": "Request Header Fields Too Large"}
            after = rss_mib(server.process.pid, "VmRSS")
            assert client.get("/notes/").json() == [{"id": 1, "text": "warm", "completed": True}]
    assert after - before < 20, f"{before:.0f} MiB before, {after:.0f} after"


def test_long_content_types_are_not_cached(client: TestClient) -> None:
    cached = routing.reads_as_json.cache_info().currsize
    for index in range(64):
        content_type = f"application/json; x={index}" + "x" * 4000
        response = client.post("/notes/", json={"text": "a", "completed": True}, headers={"content-type": content_type})
        assert response.status_code == 200, response.text
    assert routing.reads_as_json.cache_info().currsize == cached


def test_a_list_past_the_spools_cap_is_a_503_and_frees_its_bytes(
    port_app: ModuleType, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_app.database, "page_size", 10)
    for index in range(100):
        assert client.post("/notes/", json={"text": f"note {index}", "completed": True}).status_code == 200
    full = client.get("/notes/")
    assert full.status_code == 200 and len(full.json()) == 100
    spools = port_app.app.spools
    monkeypatch.setattr(spools, "memory", 1000)
    assert client.get("/notes/").content == full.content  # in memory, then on disk
    monkeypatch.setattr(spools, "disk", 1000)
    response = client.get("/notes/")
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "Too many long lists being sent, try again later"}
    assert response.headers["retry-after"] == "1"
    assert (spools.in_memory, spools.on_disk) == (0, 0)
