"""``Idempotency-Key``: a retry gets the first answer, never a second write, whatever happened to the first."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import threading
import time
from types import ModuleType
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

import idempotency
from exception_handlers import exception_handlers
from idempotency import IdempotencyKeys
from routing import APIRoute, serialize_response, validate_request
from storage import Database
from tests.helpers import BACKENDS, notes_locked, serve

NOTE = {"text": "once", "completed": True}
POSTS_THROUGH_STALLS = int(os.environ.get("POSTS_THROUGH_STALLS", "200"))  # half keyed; make soak: 2,000


def test_a_retry_gets_the_first_answer_and_stores_nothing_more(client: TestClient) -> None:
    first = client.post("/notes/", json=NOTE, headers={"idempotency-key": "k1"})
    assert first.status_code == 200, first.text
    again = client.post("/notes/", json=NOTE, headers={"idempotency-key": "k1"})
    assert (again.status_code, again.headers.raw, again.content) == (200, first.headers.raw, first.content)
    other = client.post("/notes/", json=NOTE, headers={"idempotency-key": "k2"})
    assert other.json() == {**NOTE, "id": 2}
    assert client.get("/notes/").json() == [{**NOTE, "id": 1}, {**NOTE, "id": 2}]


def test_the_same_key_with_another_body_is_a_422(client: TestClient) -> None:
    assert client.post("/notes/", json=NOTE, headers={"idempotency-key": "k"}).status_code == 200
    response = client.post("/notes/", json={**NOTE, "text": "other"}, headers={"idempotency-key": "k"})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "type": "idempotency_key_reused",
                "loc": ["header", "idempotency-key"],
                "msg": "This Idempotency-Key was used for another request",
                "input": "k",
            }
        ]
    }
    assert client.get("/notes/").json() == [{**NOTE, "id": 1}]


@pytest.mark.parametrize("key", [pytest.param("", id="empty"), pytest.param("k" * 256, id="too-long")])
def test_a_key_out_of_bounds_is_a_400(client: TestClient, key: str) -> None:
    response = client.post("/notes/", json=NOTE, headers={"idempotency-key": key})
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "Idempotency-Key must be 1 to 255 characters"}
    assert client.get("/notes/").json() == []


def test_an_answer_other_than_2xx_is_not_recorded(client: TestClient) -> None:
    refused = client.post("/notes/", json={"text": "no"}, headers={"idempotency-key": "k"})
    assert refused.status_code == 422
    created = client.post("/notes/", json=NOTE, headers={"idempotency-key": "k"})
    assert created.json() == {**NOTE, "id": 1}  # the same key, now with a valid note: it runs


def test_an_expired_key_runs_again_and_the_expired_records_go(
    port_app: ModuleType, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_app.idempotency_keys, "ttl", 1)
    monkeypatch.setattr(idempotency, "SWEEP_EVERY", 0)
    for key in ("a", "b", "c"):
        assert client.post("/notes/", json=NOTE, headers={"idempotency-key": key}).status_code == 200
    time.sleep(2)
    assert client.post("/notes/", json=NOTE, headers={"idempotency-key": "a"}).json() == {**NOTE, "id": 4}
    table = port_app.idempotency_keys.table

    async def keys() -> list[str]:
        return [record.key for record in await port_app.database.fetch_all(table.select())]

    assert client.portal is not None
    assert client.portal.call(keys) == ["a"]


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("elsewhere", [pytest.param(False, id="same-worker"), pytest.param(True, id="another-worker")])
def test_the_same_key_while_the_first_runs_is_a_409(database_url: str, elsewhere: bool) -> None:
    env = {"DATABASE_URL": database_url, "DATABASE_TIMEOUT": "5"}
    with serve("notes_app:app", env) as server, serve("notes_app:app", env) as other:
        assert httpx.post(f"{server.url}/notes/", json=NOTE).status_code == 200  # the tables exist
        again_at = other.url if elsewhere else server.url

        async def twice() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                with contextlib.ExitStack() as held:
                    held.enter_context(notes_locked(database_url))
                    first = asyncio.create_task(post_keyed(client, server.url, "k"))
                    await asyncio.sleep(0.5)
                    second = await post_keyed(client, again_at, "k")
                    held.close()
                    return await first, second

        first, second = asyncio.run(twice())
        retried = httpx.post(f"{again_at}/notes/", json=NOTE, headers={"idempotency-key": "k"})
        listed = httpx.get(f"{server.url}/notes/").json()
    assert first.status_code == 200, first.text
    assert second.status_code == 409, second.text
    assert second.json() == {"detail": "A request with this Idempotency-Key is still running"}
    assert (retried.status_code, retried.content) == (200, first.content)
    assert len(listed) == 2


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_key_whose_worker_died_runs_again_in_another(database_url: str) -> None:
    """The key's lock goes with the worker that held it: ``kill -9`` in the middle of a keyed request, and its retry
    in another worker runs (a 409 until the database has seen the worker's connection close, no longer)."""
    env = {"DATABASE_URL": database_url, "DATABASE_TIMEOUT": "5"}
    with serve("notes_app:app", env) as server, serve("notes_app:app", env) as other:
        assert httpx.post(f"{server.url}/notes/", json=NOTE).status_code == 200

        async def killed_then_retried() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                with notes_locked(database_url):
                    first = asyncio.create_task(post_keyed(client, server.url, "k"))
                    await asyncio.sleep(0.5)
                    server.process.send_signal(signal.SIGKILL)
                    with pytest.raises(httpx.TransportError):
                        await first
                answers = [await post_keyed(client, other.url, "k")]
                deadline = time.monotonic() + 10
                while answers[-1].status_code == 409 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    answers.append(await post_keyed(client, other.url, "k"))
                return answers

        answers = asyncio.run(killed_then_retried())
        listed = httpx.get(f"{other.url}/notes/").json()
    assert {answer.status_code for answer in answers[:-1]} <= {409}, answers[-1].text
    assert answers[-1].status_code == 200, answers[-1].text
    assert [note["text"] for note in listed] == [NOTE["text"]] * 2


async def post_keyed(client: httpx.AsyncClient, base_url: str, key: str) -> httpx.Response:
    return await client.post(f"{base_url}/notes/", json=NOTE, headers={"idempotency-key": key})


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_retries_through_stalls_store_each_note_once(database_url: str) -> None:
    """Clients that retry every 503 with the same key while the table is held past the deadline, again and again;
    half of them without keys, whose notes go through the grouped commit: every keyed note is stored once, every
    acknowledged note as answered."""
    env = {"DATABASE_URL": database_url, "DATABASE_TIMEOUT": "1"}
    with serve("notes_app:app", env) as server:
        assert httpx.post(f"{server.url}/notes/", json=NOTE).status_code == 200
        done = threading.Event()

        def stall() -> None:
            while not done.wait(0.7):
                with notes_locked(database_url):
                    done.wait(1.3)

        staller = threading.Thread(target=stall)
        staller.start()
        try:
            keyed, acknowledged = asyncio.run(post_with_retries(server.url, POSTS_THROUGH_STALLS))
        finally:
            done.set()
            staller.join()
        listed = httpx.get(f"{server.url}/notes/", timeout=30).json()
    texts = collections.Counter(note["text"] for note in listed)
    assert len(keyed) == POSTS_THROUGH_STALLS // 2 and set(keyed) <= set(acknowledged)  # each retried until answered
    assert len(acknowledged) < POSTS_THROUGH_STALLS  # a plain note was answered 503: the stalls reached the clients
    assert {text: texts[text] for text in keyed} == dict.fromkeys(keyed, 1)  # none twice, none lost
    notes = {note["id"]: note for note in listed}
    assert all(notes[note["id"]] == note for note in acknowledged.values())


async def post_with_retries(base_url: str, posts: int) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """POST ``posts`` notes from 10 clients, a quarter of a second apart, half of them with an ``Idempotency-Key``
    retried on every 503 until answered; return the texts of the keyed notes, and the notes acknowledged, by text."""
    keyed_texts: list[str] = []
    acknowledged: dict[str, dict[str, Any]] = {}

    async def client(number: int) -> None:
        keyed = number % 2 == 0
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            for index in range(posts // 10):
                text = f"{'keyed' if keyed else 'plain'} {number} {index}"
                headers = {"idempotency-key": text} if keyed else {}
                if keyed:
                    keyed_texts.append(text)
                while True:
                    response = await client.post("/notes/", json={"text": text, "completed": True}, headers=headers)
                    if response.status_code != 503 or not keyed:
                        break
                    await asyncio.sleep(0.05)
                if response.status_code == 200:
                    acknowledged[text] = response.json()
                else:
                    assert response.status_code == 503, response.text
                await asyncio.sleep(0.25)

    await asyncio.gather(*(client(number) for number in range(10)))
    return keyed_texts, acknowledged


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_keyed_posts_retried_after_a_kill_9_are_stored_once(database_url: str) -> None:
    keys = [f"key {number}" for number in range(300)]
    answered: dict[str, dict[str, Any]] = {}

    async def post_all(base_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

            async def post(key: str) -> None:
                note = {"text": key, "completed": True}
                with contextlib.suppress(httpx.TransportError):
                    response = await client.post("/notes/", json=note, headers={"idempotency-key": key})
                    if response.status_code == 200:
                        answered[key] = response.json()

            for start in range(0, len(keys), 20):
                await asyncio.gather(*(post(key) for key in keys[start : start + 20]))

    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:

        def kill_in_the_middle() -> None:
            while len(answered) < 50:
                time.sleep(0.001)
            server.process.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_in_the_middle)
        killer.start()
        asyncio.run(post_all(server.url))
        killer.join()
        server.process.wait()
    before = dict(answered)
    with serve("notes_app:app", {"DATABASE_URL": database_url}) as server:
        asyncio.run(post_all(server.url))  # every key again, as clients retry after a restart
        listed = httpx.get(f"{server.url}/notes/", timeout=30).json()
    assert len(before) < len(keys), "the kill came after every POST"
    assert collections.Counter(note["text"] for note in listed) == dict.fromkeys(keys, 1)
    assert all(answered[key] == note for key, note in before.items())  # the retry got the first answer
    assert {note["text"]: note for note in listed} == answered


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_key_covers_the_writes_of_an_endpoint_in_its_own_transaction(database_url: str) -> None:
    async def scenario() -> None:
        database = Database(database_url, timeout=5)
        metadata = sqlalchemy.MetaData()
        notes = sqlalchemy.Table(
            "notes",
            metadata,
            sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
            sqlalchemy.Column("text", sqlalchemy.String(100)),
        )
        keys = IdempotencyKeys(database, metadata)

        async def create_two(request: Request) -> Response:
            await validate_request(request)
            async with database.transaction():
                first = await database.execute(notes.insert(), {"text": "first"})
                await database.execute(notes.insert(), {"text": "second"})
            return serialize_response(request, {"id": first})

        app = Starlette(
            routes=[APIRoute("/two/", create_two, method="POST", idempotency=keys)],
            exception_handlers=exception_handlers,
        )
        await database.connect()
        await database.create_all(metadata)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answers = [(await client.post("/two/", headers={"idempotency-key": "k"})).json() for _ in range(3)]
            assert answers == [{"id": 1}] * 3
            assert [record.text for record in await database.fetch_all(notes.select())] == ["first", "second"]
        finally:
            await database.disconnect()

    asyncio.run(scenario())
