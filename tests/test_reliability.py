"""Limits, hostile input, database failures, crashes and shutdowns: the service answers cleanly and keeps every note."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx2 as httpx
import pymysql
import pytest
import sqlalchemy
from databases import DatabaseURL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.testclient import TestClient

from responses import SpooledResponse
from storage import Database, DatabaseError
from tests.helpers import BACKENDS, free_port, load, notes_locked, rss_mib, seed, serve

LEAKS = ("Traceback", "sqlite", "SELECT", "INSERT", "notes_app", ".py", "/tmp", "asyncpg", "pymysql")


def assert_clean_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()
    for leak in LEAKS:
        assert leak not in response.text, response.text


def test_body_over_the_limit_is_refused(client: TestClient) -> None:
    body = b'{"text": "' + b"x" * (1024 * 1024) + b'", "completed": true}'
    response = client.post("/notes/", content=body, headers={"content-type": "application/json"})
    assert_clean_error(response, 413)
    assert response.json() == {"detail": "Content Too Large"}
    assert client.get("/notes/").json() == []


def test_body_limit_is_configurable(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_SIZE", "50")
    notes_app = load("notes_app", "DATABASE_URL", database_url, monkeypatch)
    fits = b'{"completed": true, "text": "%s"}' % (b"x" * 19)
    assert len(fits) == 50
    with TestClient(notes_app.app) as client:
        created = client.post("/notes/", content=fits, headers={"content-type": "application/json"})
        assert created.status_code == 200, created.text
        response = client.post("/notes/", content=fits + b" ", headers={"content-type": "application/json"})
    assert_clean_error(response, 413)


def raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and ``body`` on a new connection and return the answer, its body whole, within 10 s."""
    parsed = DatabaseURL(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < content_length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def content_length(answer: bytes) -> int:
    match = re.search(rb"\r\ncontent-length: (\d+)\r\n", answer.partition(b"\r\n\r\n")[0] + b"\r\n")
    return int(match.group(1)) if match else 0


def test_huge_declared_body_is_refused_before_reading(live_server: str) -> None:
    head = b"POST /notes/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n"
    answer = raw_request(live_server, head, b'{"text": "')  # 64 MiB announced, a few bytes sent
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert answer.endswith(b'{"detail":"Content Too Large"}'), answer


def test_huge_chunked_body_is_refused(live_server: str) -> None:
    head = b"POST /notes/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"x" * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20  # 1.25 MiB, no end
    answer = raw_request(live_server, head, body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert httpx.get(f"{live_server}/notes/").json() == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included
    | st.text(st.characters(codec=None)),  # lone surrogates and NUL included
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
bodies = (
    st.fixed_dictionaries({}, optional={"text": json_values, "completed": json_values, "extra": json_values})
    | json_values
)


header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20).map(
    lambda value: value.encode("latin-1")
)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=bodies.map(encode) | st.binary(max_size=200),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x+json", "", "application/json; x"]),
    headers=st.dictionaries(st.sampled_from([b"accept", b"x-forwarded-for", b"cookie"]), header_values),
)
def test_no_input_gets_a_server_error(
    client: TestClient, body: bytes, content_type: str, headers: dict[bytes, bytes]
) -> None:
    response = client.post("/notes/", content=body, headers={**headers, b"content-type": content_type.encode()})
    assert response.status_code in (200, 400, 422), response.text
    assert response.headers["content-type"] == "application/json"
    if response.status_code == 200:
        assert client.get("/notes/").json()[-1] == response.json()


def test_sql_metacharacters_are_stored_verbatim(client: TestClient) -> None:
    text = "Robert'); DROP TABLE notes;-- \" \\ % _ ` $1 ? :name"
    response = client.post("/notes/", json={"text": text, "completed": False})
    assert response.status_code == 200, response.text
    assert client.get("/notes/").json() == [{"id": 1, "text": text, "completed": False}]


def test_database_error_is_a_503_that_leaks_nothing(
    port_app: ModuleType, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(port_app.app) as client:
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as outside:
            outside.execute("DROP TABLE notes")
        with caplog.at_level(logging.ERROR, logger="notes_app"):
            listed = client.get("/notes/")
            created = client.post("/notes/", json={"text": "a", "completed": True})
    assert_clean_error(listed, 503)
    assert_clean_error(created, 503)
    assert listed.headers["retry-after"] == "1"
    assert "no such table: notes" in caplog.text  # the log says what the client is not told


class Proxy:
    """A TCP proxy on 127.0.0.1 to another port, whose network can be cut and restored, or stalled and resumed."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.thread.start()

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.flowing.wait() and (data := await reader.read(65536)):
                await self.flowing.wait()  # While stalled, what was sent waits here, as in a network's buffers.
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.flowing.wait()
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
        # Before waiting for the server: from Python 3.12 on, wait_closed() waits for its open connections too.
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.sleep(0.1)  # let the aborted transports close their sockets

    def restore(self) -> None:
        self.call(self._start())

    def stall(self) -> None:
        """Stop forwarding, in both directions and for new connections, without closing anything."""
        self.loop.call_soon_threadsafe(self.flowing.clear)

    def resume(self) -> None:
        self.loop.call_soon_threadsafe(self.flowing.set)

    def cut(self) -> None:
        self.call(self._stop())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def through_proxy(database_url: str) -> Iterator[tuple[str, Proxy]]:
    """Yield the URL of the test's PostgreSQL or MySQL database reached through a proxy, and the proxy."""
    url = DatabaseURL(database_url)
    proxy = Proxy(url.port or {"postgresql": 5432, "mysql": 3306}[url.dialect])
    proxy.restore()
    yield str(url.replace(port=proxy.port)), proxy
    proxy.close()


def recovers_and_creates(url: str) -> list[str]:
    """Wait up to 10 s for the service at ``url`` to list notes again, create one, and return the notes' texts."""
    deadline = time.monotonic() + 10
    while (response := httpx.get(f"{url}/notes/")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    created = httpx.post(f"{url}/notes/", json={"text": "after", "completed": False})
    assert created.status_code == 200, created.text
    return texts(url)


@pytest.mark.parametrize("database_url", ["postgresql", "mysql"], indirect=True)
def test_database_outage_is_a_503_and_recovers(through_proxy: tuple[str, Proxy]) -> None:
    url, proxy = through_proxy
    with serve("notes_app:app", {"DATABASE_URL": url}) as server:
        assert httpx.post(f"{server.url}/notes/", json={"text": "before", "completed": True}).status_code == 200
        proxy.cut()
        for _ in range(3):
            assert_clean_error(httpx.get(f"{server.url}/notes/"), 503)
            assert_clean_error(httpx.post(f"{server.url}/notes/", json={"text": "during", "completed": True}), 503)
        proxy.restore()
        assert recovers_and_creates(server.url) == ["before", "after"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_starting_with_the_database_down_fails_fast(through_proxy: tuple[str, Proxy]) -> None:
    url, proxy = through_proxy
    proxy.cut()
    url = str(DatabaseURL(url).replace(username="postgres", password="s3cret"))
    command = [sys.executable, "-m", "uvicorn", "notes_app:app", "--port", str(free_port())]
    started = time.monotonic()
    result = subprocess.run(
        command, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 20
    assert f"Cannot use the database at postgresql://postgres:********@127.0.0.1:{proxy.port}/" in result.stderr
    assert "s3cret" not in result.stderr


TIMEOUT = 2.0  # DATABASE_TIMEOUT for the deadline tests, in seconds


def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = request()
    return response, time.monotonic() - started


def texts(url: str) -> list[str]:
    response = httpx.get(f"{url}/notes/")
    assert response.status_code == 200, response.text
    return [note["text"] for note in response.json()]


def statements_waiting(database_url: str) -> int:
    """Return how many statements wait for a lock in the test's database, as the server sees them."""
    url = DatabaseURL(database_url)
    if url.dialect == "mysql":
        connection = pymysql.connect(host=url.hostname, port=url.port, user=url.username)
        try:
            with connection.cursor() as cursor:
                query = (
                    "SELECT count(*) FROM information_schema.processlist WHERE db = %s AND state LIKE 'Waiting%%lock%%'"
                )
                cursor.execute(query, (url.database,))
                (count,) = cursor.fetchone()
                return int(count)
        finally:
            connection.close()

    async def count_waiting() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
            return int(await connection.fetchval(query, url.database))
        finally:
            await connection.close()

    return asyncio.run(count_waiting())


@pytest.mark.parametrize("database_url", ["postgresql", "mysql"], indirect=True)
def test_a_held_lock_is_a_503_within_the_timeout(database_url: str) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url, "DATABASE_TIMEOUT": str(TIMEOUT)}) as server:
        assert httpx.post(f"{server.url}/notes/", json={"text": "before", "completed": True}).status_code == 200
        with notes_locked(database_url):
            for request in (
                lambda: httpx.get(f"{server.url}/notes/", timeout=30),
                lambda: httpx.post(f"{server.url}/notes/", json={"text": "during", "completed": True}, timeout=30),
            ):
                response, elapsed = timed(request)
                assert_clean_error(response, 503)
                assert response.headers["retry-after"] == "1"
                assert TIMEOUT - 0.5 < elapsed < TIMEOUT + 1.5, elapsed
            deadline = time.monotonic() + TIMEOUT
            while statements_waiting(database_url):  # the server has cancelled them
                assert time.monotonic() < deadline, "the statements given up on still wait on the server"
                time.sleep(0.1)
        for _ in range(20):  # every connection of the pool is fit for use
            assert texts(server.url) == ["before"], "the note answered with a 503 was stored"
        created = httpx.post(f"{server.url}/notes/", json={"text": "after", "completed": False})
        assert created.status_code == 200, created.text
        assert texts(server.url) == ["before", "after"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_each_call_is_given_up_at_its_own_deadline_on_each_event_loop(database_url: str) -> None:
    """One timer watches a database's deadlines: calls begun one after another are each given up once their own
    deadline passes, and so they are after the database has run on an event loop now closed, its timer still set."""
    database = Database(database_url, timeout=0.5)

    async def quick() -> None:
        await database.connect()
        assert await database.fetch_val("SELECT 1") == 1  # the timer set for this call never fires: its loop ends
        await database.disconnect()

    async def slow(index: int) -> tuple[str, float]:
        await asyncio.sleep(index * 0.2)
        began = time.monotonic()
        with pytest.raises(DatabaseError) as given_up:
            await database.fetch_val("SELECT pg_sleep(5)")
        return str(given_up.value), time.monotonic() - began

    async def slow_ones() -> list[tuple[str, float]]:
        await database.connect()
        try:
            return await asyncio.gather(*(slow(index) for index in range(3)))
        finally:
            await database.disconnect()

    asyncio.run(quick())
    given_up = asyncio.run(slow_ones())
    assert [message for message, _ in given_up] == ["no answer in 0.5 s"] * 3
    assert all(elapsed < 3 for _, elapsed in given_up), given_up  # well before the statements' 5 s


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_503_stores_nothing_but_a_write_the_log_marks_outcome_unknown(database_url: str, tmp_path: Path) -> None:
    """100 POSTs while another session holds the table past their deadline, the last ones still waiting when it lets
    go: a write whose request gave up is never sent afterwards, and a 503'd note stored is one whose write was on its
    way, which the log marks."""
    log = tmp_path / "stderr"
    env = {"DATABASE_URL": database_url, "DATABASE_TIMEOUT": "1"}
    with log.open("w") as stderr, serve("notes_app:app", env, stderr=stderr) as server:
        assert httpx.post(f"{server.url}/notes/", json={"text": "before", "completed": True}).status_code == 200

        async def post_while_held() -> list[tuple[str, int]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

                async def post(index: int) -> tuple[str, int]:
                    await asyncio.sleep(index * 0.03)
                    text = f"note {index}"
                    return text, (await client.post("/notes/", json={"text": text, "completed": True})).status_code

                with contextlib.ExitStack() as held:
                    held.enter_context(notes_locked(database_url))
                    posts = asyncio.gather(*(post(index) for index in range(100)))
                    await asyncio.sleep(2.5)
                    held.close()
                    return await posts

        answers = asyncio.run(post_while_held())
        time.sleep(2)  # a write still queued has had its chance
        listed = set(texts(server.url))
    statuses = collections.Counter(status for _, status in answers)
    assert set(statuses) == {200, 503}, statuses
    assert {text for text, status in answers if status == 200} <= listed
    stored = {text for text, status in answers if status == 503} & listed
    assert len(stored) <= log.read_text().count("outcome unknown"), (len(stored), statuses)


@pytest.mark.parametrize("database_url", ["postgresql", "mysql"], indirect=True)
def test_a_connection_whose_statement_was_given_up_serves_no_other(database_url: str) -> None:
    """A statement cut off by its deadline leaves its connection in the middle of an answer: the next statements on a
    pool of one each get their own answer, never the old one (asyncpg cancels on the server and waits, aiomysql and
    the port close such a connection)."""

    async def calls() -> None:
        database = Database(database_url, timeout=1, min_size=1, max_size=1)
        await database.connect()
        try:
            for _ in range(3):
                with pytest.raises(DatabaseError, match="no answer in 1 s"):
                    await database.fetch_val(
                        sqlalchemy.text(
                            "SELECT 7 FROM (SELECT pg_sleep(3)) AS s"
                            if database.url.dialect == "postgresql"
                            else "SELECT SLEEP(3) + 7"
                        )
                    )
                assert await database.fetch_val(sqlalchemy.text("SELECT 42")) == 42
            answers = await asyncio.gather(*(database.fetch_val(sqlalchemy.text(f"SELECT {n}")) for n in range(20)))
            assert answers == list(range(20))
        finally:
            await database.disconnect()

    asyncio.run(calls())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_connection_goes_back_to_the_pool(database_url: str) -> None:
    """However a call ends, its connection goes back to asyncpg's pool: one past ``max_queries`` is closed and
    another opened, one whose statement outlived the deadline is cancelled on the server, and a streamed list gives
    back its cursor's. A connection not given back would leave the two of the pool short, and the last reads would
    wait out their deadline."""

    async def calls() -> None:
        database = Database(database_url, timeout=TIMEOUT, min_size=1, max_size=2, max_queries=3)
        await database.connect()
        try:
            pids = {await database.fetch_val("SELECT pg_backend_pid()") for _ in range(12)}
            assert len(pids) > 2, "no connection was closed past max_queries"
            with pytest.raises(DatabaseError, match=f"no answer in {TIMEOUT:g} s"):
                await database.fetch_val("SELECT pg_sleep(30)")
            series = sqlalchemy.text("SELECT * FROM generate_series(1, 2500) AS n")
            assert [record.n async for record in database.iterate(series)] == list(range(1, 2501))
            answers = await asyncio.gather(*(database.fetch_val("SELECT 1") for _ in range(20)))
            assert answers == [1] * 20
            pool = database._backend._pool
            assert pool.get_idle_size() == pool.get_size() <= 2
        finally:
            await database.disconnect()

    asyncio.run(calls())


@pytest.mark.parametrize("database_url", ["postgresql", "mysql"], indirect=True)
def test_a_stalled_network_is_a_503_within_the_timeout(through_proxy: tuple[str, Proxy]) -> None:
    url, proxy = through_proxy
    with serve("notes_app:app", {"DATABASE_URL": url, "DATABASE_TIMEOUT": str(TIMEOUT)}) as server:
        assert httpx.post(f"{server.url}/notes/", json={"text": "before", "completed": True}).status_code == 200
        proxy.stall()
        for request in (
            lambda: httpx.get(f"{server.url}/notes/", timeout=30),
            lambda: httpx.post(f"{server.url}/notes/", json={"text": "during", "completed": True}, timeout=30),
        ):
            response, elapsed = timed(request)
            assert_clean_error(response, 503)
            assert elapsed < TIMEOUT + 1.5, elapsed
        proxy.resume()
        listed = recovers_and_creates(server.url)
    # The statement sent before the stall reached the server once the network came back: docs/operating.md says so.
    assert listed in (["before", "after"], ["before", "during", "after"]), listed


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # aiomysql closes without waiting
def test_a_shutdown_closes_what_a_stalled_network_holds(through_proxy: tuple[str, Proxy], tmp_path: Path) -> None:
    url, proxy = through_proxy
    log = tmp_path / "stderr"
    environment = {"DATABASE_URL": url, "DATABASE_TIMEOUT": str(TIMEOUT)}
    with log.open("w") as stderr, serve("notes_app:app", environment, stderr=stderr) as server:
        assert httpx.post(f"{server.url}/notes/", json={"text": "before", "completed": True}).status_code == 200
        proxy.stall()  # closing a connection now waits for a server that does not answer
        server.process.terminate()
        stopping = time.monotonic()
        server.process.wait(timeout=30)
        stopped_in = time.monotonic() - stopping
    proxy.resume()
    logged = log.read_text()
    assert stopped_in < TIMEOUT + 1, logged
    assert f"Connections still open after {TIMEOUT:g} s: closed at once" in logged
    assert "Traceback" not in logged


async def create_until_stopped(url: str, stop: threading.Event, acknowledged: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def writer(number: int) -> None:
            index = 0
            while not stop.is_set():
                note = {"text": f"writer {number} note {index} " + "x" * (index % 50), "completed": index % 2 == 0}
                try:
                    response = await client.post("/notes/", json=note)
                except httpx.TransportError:
                    return  # the server died with this request in flight: not acknowledged
                if response.status_code == 200:
                    acknowledged.append(response.json())
                index += 1

        await asyncio.gather(*(writer(number) for number in range(20)))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql", "pgbouncer-transaction"], indirect=True)
def test_kill_9_loses_no_acknowledged_note(database_url: str) -> None:
    acknowledged: list[dict[str, Any]] = []
    stop = threading.Event()
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        load_thread = threading.Thread(target=asyncio.run, args=(create_until_stopped(server.url, stop, acknowledged),))
        load_thread.start()
        time.sleep(2)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        stop.set()
        load_thread.join()
    assert len(acknowledged) > 100

    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        listed = {note["id"]: note for note in httpx.get(f"{server.url}/notes/", timeout=60).json()}
    for note in acknowledged:
        assert listed.get(note["id"]) == note
    for note in listed.values():  # nothing half-written
        writer, index = note["text"].split(" note ")[0], note["text"].split(" note ")[1].split(" ")[0]
        assert note["text"] == f"{writer} note {index} " + "x" * (int(index) % 50)
        assert note["completed"] == (int(index) % 2 == 0)


@pytest.mark.parametrize("database_url", ["pgbouncer-transaction"], indirect=True)
def test_long_lists_behind_pgbouncer_are_whole_after_restarts(database_url: str) -> None:
    """A long list prepares nothing under a name that asyncpg numbers per connection: behind PgBouncer in transaction
    mode a server connection outlives the app's, and a name left on it would be another start's next name."""
    rows = 100_000
    for round in range(3):
        with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
            if round == 0:
                seed(database_url.partition("?")[0], rows)
            for _ in range(3):
                response = httpx.get(f"{server.url}/notes/", timeout=60)
                assert response.status_code == 200, response.text
                assert len(response.json()) == rows
            if round < 2:
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_sigterm_lets_requests_in_flight_finish(database_url: str) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        seed(database_url, 30_000)

        async def read_all_during_shutdown() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                requests = [client.stream("GET", "/notes/") for _ in range(10)]
                responses = [await request.__aenter__() for request in requests]  # all in flight: headers are in
                server.process.send_signal(signal.SIGTERM)
                lengths = [len(await response.aread()) for response in responses]
                for request in requests:
                    await request.__aexit__(None, None, None)
                assert {response.status_code for response in responses} == {200}
                return lengths

        lengths = asyncio.run(read_all_during_shutdown())
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn ends by re-raising the signal
    assert len(set(lengths)) == 1 and lengths[0] > 30_000 * 40


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_clients_leaving_in_the_middle_of_a_list_leave_nothing_behind(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "stderr"
    with log.open("w") as stderr, serve("notes_app:app", {"DATABASE_URL": database_url}, stderr=stderr) as server:
        seed(database_url, 30_000)

        async def leave_and_list() -> list[Any]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                for _ in range(10):  # more than the pool's connections: each must have been given back
                    async with client.stream("GET", "/notes/") as response:
                        assert response.status_code == 200
                        await anext(response.aiter_bytes())
                listed = await client.get("/notes/")
                assert listed.status_code == 200, listed.text
                return listed.json()  # type: ignore[no-any-return]

        assert len(asyncio.run(leave_and_list())) == 30_000
    assert log.read_text() == ""  # asyncpg warns of a connection given back inside the cursor's transaction


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_long_list_is_read_whole_then_sent_holding_its_bytes_not_its_rows(
    port_app: ModuleType, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_app.database, "page_size", 7)
    notes = [{"text": f"note {index}", "completed": index % 2 == 0} for index in range(17)]
    for note in notes:
        assert client.post("/notes/", json=note).status_code == 200

    class Page(list[Any]):
        """A list of rows that a weak reference can watch."""

    watched: list[weakref.ref[Page]] = []

    async def watched_pages() -> AsyncIterator[list[Any]]:
        async for rows in port_app.database.iterate_pages(port_app.notes.select()):
            assert [ref() for ref in watched] == [None] * len(watched), "a page is kept once serialized"
            page = [Page(rows)]
            del rows
            watched.append(weakref.ref(page[0]))
            yield page.pop()

    assert client.portal is not None
    request = Request({"type": "http", "route": port_app.routes[0]})  # as the router hands it to read_notes
    response = client.portal.call(port_app.serialize_pages, request, watched_pages())
    assert len(watched) == 3
    assert [ref() for ref in watched] == [None] * 3, "the answer keeps rows"
    assert isinstance(response, SpooledResponse)
    response.spool.file.seek(0)
    body = response.spool.file.read()
    response.spool.close()
    assert response.headers["content-length"] == str(len(body))
    assert json.loads(body) == [{"id": index + 1, **note} for index, note in enumerate(notes)]


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_big_reads_keep_memory_bounded(database_url: str) -> None:
    rows = 100_000
    # Each list is read whole within the deadline; the 20 share one core with the client.
    with serve("notes_app:app", {"DATABASE_URL": database_url, "DATABASE_TIMEOUT": "30"}) as server:
        seed(database_url, rows)

        async def read_concurrently() -> list[bytes]:
            async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
                responses = await asyncio.gather(*(client.get("/notes/") for _ in range(20)))
            assert {response.status_code for response in responses} == {200}
            return [response.content for response in responses]

        bodies = asyncio.run(read_concurrently())
        peak = rss_mib(server.process.pid)
    assert len(set(bodies)) == 1
    notes = httpx.Response(200, content=bodies[0]).json()
    assert len(notes) == rows
    assert notes[-1] == {"id": rows, "text": f"note number {rows - 1}", "completed": (rows - 1) % 2 == 0}
    assert peak < 150, f"peak RSS {peak:.0f} MiB"


@pytest.mark.parametrize(
    ("url", "drivers"),
    [
        pytest.param("sqlite:///./notes.db", ["aiosqlite"], id="sqlite"),
        pytest.param("postgresql://localhost/notes", ["asyncpg"], id="postgresql"),
        pytest.param("mysql://localhost/notes", ["aiomysql", "pymysql"], id="mysql"),
    ],
)
def test_only_the_driver_in_use_is_loaded(url: str, drivers: list[str]) -> None:
    code = "import sys, notes_app; print(sorted({'aiosqlite', 'asyncpg', 'aiomysql', 'pymysql'} & set(sys.modules)))"
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout == f"{drivers}\n"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+aiopg://localhost/notes", id="aiopg"),
        pytest.param("mysql+asyncmy://localhost/notes", id="asyncmy"),
        pytest.param("oracle://localhost/notes", id="oracle"),
    ],
)
def test_a_driver_the_port_does_not_speak_is_refused_at_start(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run([sys.executable, "-c", "import notes_app"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"ValueError: {url.split(':')[0]}:// is not supported: use sqlite://, postgresql:// or mysql://"
    )
