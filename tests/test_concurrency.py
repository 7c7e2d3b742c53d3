"""Many concurrent writers, on one or several worker processes: every note acknowledged, unique and listed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest
import sqlalchemy
from starlette.testclient import TestClient

from storage import Database, ParameterNotStorable, ValueNotStorable
from tests.helpers import BACKENDS, serve

CREATES = 2000
IN_FLIGHT = 100


async def create_concurrently(url: str) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def create(index: int) -> dict[str, Any]:
            async with semaphore:
                response = await client.post("/notes/", json={"text": f"note {index}", "completed": index % 2 == 0})
            assert response.status_code == 200, response.text
            note: dict[str, Any] = response.json()
            return note

        return await asyncio.gather(*(create(index) for index in range(CREATES)))


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize(
    "database_url", ["sqlite", "postgresql", "pgbouncer-transaction", "pgbouncer-session"], indirect=True
)
def test_concurrent_creates(database_url: str, workers: int) -> None:
    with serve("notes_app:app", {"DATABASE_URL": database_url}, "--workers", str(workers)) as server:
        created = asyncio.run(create_concurrently(server.url))
        listed = httpx.get(f"{server.url}/notes/", timeout=60).json()

    ids = [note["id"] for note in created]
    assert len(set(ids)) == CREATES
    expected = {f"note {index}": index % 2 == 0 for index in range(CREATES)}
    assert {note["text"]: note["completed"] for note in created} == expected
    assert sorted(listed, key=lambda note: note["id"]) == sorted(created, key=lambda note: note["id"])


def count_groups(database: Database) -> list[int]:
    """Return the list to which the size of each group that ``database`` commits is appended."""
    assert database.writes.group_commit is not None
    group_sizes: list[int] = []
    commit = database.writes.group_commit.commit

    async def counted(send: Callable[[], list[Any]]) -> list[Any]:
        def counted_send() -> list[Any]:
            group = send()
            group_sizes.append(len(group))
            return group

        return list(await commit(counted_send))

    database.writes.group_commit.commit = counted
    return group_sizes


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)  # MySQL commits each alone
def test_a_write_alone_commits_at_once_and_those_meanwhile_together(port_app: ModuleType, client: TestClient) -> None:
    """A write that comes while nothing is being committed commits at once, alone; the writes that come while it runs
    wait for it, and commit together after it, in the order they came."""
    database, notes = port_app.database, port_app.notes
    group_sizes = count_groups(database)

    async def create() -> list[Any]:
        values = [{"text": f"note {index}", "completed": False} for index in range(5)]
        return list(await asyncio.gather(*(database.execute(notes.insert(), each) for each in values)))

    assert client.portal is not None
    ids = client.portal.call(create)
    assert group_sizes == [1, 4]
    assert ids == sorted(ids)
    listed = [note["text"] for note in sorted(client.get("/notes/").json(), key=lambda note: note["id"])]
    assert listed == [f"note {index}" for index in range(5)]


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer-transaction"], indirect=True)
def test_notes_inserted_together_get_their_own_ids(port_app: ModuleType, client: TestClient) -> None:
    """On PostgreSQL the notes created at the same moment share one INSERT: each must get its own row's id."""
    database, notes = port_app.database, port_app.notes
    group_sizes = count_groups(database)
    texts = [f"note {index} " + "x" * (index % 7) for index in range(500)]
    inserts: list[tuple[Any, dict[str, Any] | None]] = [
        (notes.insert(), {"text": text, "completed": len(text) % 2 == 0}) for text in texts
    ]
    # INSERTs that cannot join the others, and run alone: one with an SQL expression, one with values of its own, and
    # one with a value its column refuses, which fails alone.
    inserts.insert(250, (notes.insert(), {"text": sqlalchemy.func.upper("loud"), "completed": True}))
    inserts.insert(100, (notes.insert().values(text="its own", completed=False), None))
    inserts.insert(400, (notes.insert(), {"text": "refused", "completed": "maybe"}))

    async def create() -> list[Any]:
        executions = (database.execute(query, values) for query, values in inserts)
        return list(await asyncio.gather(*executions, return_exceptions=True))

    assert client.portal is not None
    ids = client.portal.call(create)
    refused = ids.pop(400)
    assert isinstance(refused, TypeError), refused
    assert max(group_sizes) > 1, group_sizes
    assert sum(group_sizes) == len(texts)  # the others ran alone
    listed = {note["id"]: note for note in client.get("/notes/").json()}
    expected = [{"text": text, "completed": len(text) % 2 == 0} for text in texts]
    expected.insert(250, {"text": "LOUD", "completed": True})
    expected.insert(100, {"text": "its own", "completed": False})
    assert [listed[id] for id in ids] == [{"id": id, **note} for id, note in zip(ids, expected)]


@pytest.mark.parametrize(
    ("database_url", "refused", "error"),
    [
        pytest.param("sqlite", {"text": 2**64, "completed": True}, ValueNotStorable, id="sqlite"),
        pytest.param("postgresql", {"text": "refused\x00", "completed": False}, ValueNotStorable, id="postgresql"),
    ],
    indirect=["database_url"],
)
def test_a_note_refused_fails_alone(
    port_app: ModuleType, client: TestClient, refused: dict[str, Any], error: type[Exception]
) -> None:
    """A query of a group that its database refuses fails alone: the group is committed again, one query at a time."""
    database, notes = port_app.database, port_app.notes
    group_sizes = count_groups(database)
    rows = [{"text": f"note {index}", "completed": index % 2 == 0} for index in range(100)]
    rows.insert(50, refused)

    async def create() -> list[Any]:
        executions = (database.execute(notes.insert(), values) for values in rows)
        return list(await asyncio.gather(*executions, return_exceptions=True))

    assert client.portal is not None
    ids = client.portal.call(create)
    assert isinstance(ids.pop(50), error)
    assert max(group_sizes) > 1 and group_sizes.count(1) > len(rows) / 2, group_sizes  # tried together, then alone
    rows.pop(50)
    listed = client.get("/notes/").json()
    assert listed == [{"id": id, **row} for id, row in zip(ids, rows)]


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer-transaction"], indirect=True)
def test_updates_and_deletes_committed_together(port_app: ModuleType, client: TestClient) -> None:
    """On PostgreSQL the UPDATEs and DELETEs by key waiting at the same moment share one commit; one that the database
    refuses, or with a key its column cannot hold, fails alone, and the others change what they were answered for."""
    database, notes = port_app.database, port_app.notes
    for index in range(300):
        assert client.post("/notes/", json={"text": f"note {index}", "completed": False}).status_code == 200
    group_sizes = count_groups(database)
    writes: list[tuple[Any, dict[str, Any] | None]] = [
        (notes.update().where(notes.c.id == id).values(text=f"updated {id}", completed=id % 2 == 0), None)
        for id in range(1, 201)
    ]
    writes += [(notes.delete().where(notes.c.id == id), None) for id in range(201, 301)]
    writes.insert(150, (notes.update().where(notes.c.id == 7), {"text": "refused\x00"}))
    writes.insert(50, (notes.update().where(notes.c.id == 2**31).values(text="no such key"), None))

    async def write() -> list[Any]:
        executions = (database.execute(query, values) for query, values in writes)
        return list(await asyncio.gather(*executions, return_exceptions=True))

    assert client.portal is not None
    results = client.portal.call(write)
    refused, out_of_range = results.pop(151), results.pop(50)
    assert isinstance(refused, ValueNotStorable), refused
    assert isinstance(out_of_range, ParameterNotStorable) and out_of_range.value == 2**31, out_of_range
    assert results == [None] * 300
    assert max(group_sizes) > 1 and sum(group_sizes) > len(writes), group_sizes  # tried together, then alone
    expected = [{"id": id, "text": f"updated {id}", "completed": id % 2 == 0} for id in range(1, 201)]
    assert sorted(client.get("/notes/").json(), key=lambda note: note["id"]) == expected


async def write_in_transaction(database: Database, notes: sqlalchemy.Table, commit: bool) -> list[Any]:
    """Insert and update a note in a transaction while other tasks create notes, and commit it or roll it back;
    return what the transaction read of its own writes and the ids of the others' notes."""
    others: asyncio.Future[list[Any]] | None = None
    read: list[Any] = []
    with contextlib.suppress(LookupError):
        async with database.transaction():
            id = await database.execute(notes.insert(), {"text": "in the transaction", "completed": False})
            await database.execute(notes.update().where(notes.c.id == id).values(completed=True))
            read = [dict(note._mapping) for note in await database.fetch_all(notes.select())]
            creates = (
                database.execute(notes.insert(), {"text": f"other {index}", "completed": False}) for index in range(5)
            )
            others = asyncio.gather(*creates)
            await asyncio.sleep(0.2)  # the others' notes wait for the transaction's lock, or are committed meanwhile
            if not commit:
                raise LookupError
    assert others is not None
    return [read, await others]


@pytest.mark.parametrize("commit", [pytest.param(True, id="commit"), pytest.param(False, id="rollback")])
@pytest.mark.parametrize("database_url", [*BACKENDS, "pgbouncer-transaction"], indirect=True)
def test_a_transaction_holds_its_own_writes_only(port_app: ModuleType, client: TestClient, commit: bool) -> None:
    """The writes inside ``transaction()`` are stored with it or not at all; the writes of other tasks meanwhile are
    not part of it (on SQLite they share a connection, on PostgreSQL a group commit), and are stored either way."""
    assert client.portal is not None
    read, others = client.portal.call(write_in_transaction, port_app.database, port_app.notes, commit)
    (own,) = read
    assert own == {"id": own["id"], "text": "in the transaction", "completed": True}
    expected = [{"id": id, "text": f"other {index}", "completed": False} for index, id in enumerate(others)]
    if commit:
        expected.insert(0, own)
    assert sorted(client.get("/notes/").json(), key=lambda note: note["id"]) == sorted(
        expected, key=lambda note: note["id"]
    )


WAITING_FOR_LOCKS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_groups_that_deadlock_are_run_again_alone(database_url: str, port_app: ModuleType, client: TestClient) -> None:
    """Two processes' groups that lock two rows in opposite orders deadlock: PostgreSQL aborts one, whose writes then
    run again one at a time, and every write is stored. Each group forms behind a write committed alone, which the
    writes that come while it runs wait for."""
    database, notes = port_app.database, port_app.notes
    for text in ("one", "two", "three", "four"):
        assert client.post("/notes/", json={"text": text, "completed": False}).status_code == 200
    other = Database(database_url)  # another worker's

    def set_text(id: int, text: str) -> Any:
        return notes.update().where(notes.c.id == id).values(text=text)

    def complete(id: int) -> Any:
        return notes.update().where(notes.c.id == id).values(completed=True)

    async def deadlock() -> list[int]:
        await other.connect()
        blocker = await asyncpg.connect(database_url)
        try:
            group_sizes, other_group_sizes = count_groups(database), count_groups(other)
            async with blocker.transaction():
                # Both groups wait for the blocker's locks, then each takes its first row and waits for the other's.
                await blocker.execute("SELECT * FROM notes WHERE id IN (1, 2) FOR UPDATE")
                writes = [database.execute(complete(3)), database.execute(set_text(1, "first"))]
                first = asyncio.gather(*writes, database.execute(complete(2)))
                writes = [other.execute(complete(4)), other.execute(set_text(2, "second"))]
                second = asyncio.gather(*writes, other.execute(complete(1)))
                async with asyncio.timeout(10):
                    while await blocker.fetchval(WAITING_FOR_LOCKS) < 2:  # both groups wait, each for its first row
                        await asyncio.sleep(0.01)
            assert [*await first, *await second] == [None] * 6
            return sorted(group_sizes + other_group_sizes)
        finally:
            await blocker.close()
            await other.disconnect()

    assert client.portal is not None
    # Two writes alone, two groups, and the writes of the group that deadlocked run again alone.
    assert client.portal.call(deadlock) == [1, 1, 1, 1, 2, 2]
    expected = [{"id": 1, "text": "first", "completed": True}, {"id": 2, "text": "second", "completed": True}]
    expected += [{"id": 3, "text": "three", "completed": True}, {"id": 4, "text": "four", "completed": True}]
    assert sorted(client.get("/notes/").json(), key=lambda note: note["id"]) == expected


async def replace_concurrently(url: str, notes: int, writers: int, rounds: int) -> list[list[dict[str, Any]]]:
    """Create ``notes`` notes, then have ``writers`` clients each PUT every note ``rounds`` times, a note's PUTs in
    turn; return each note's last answer from each writer."""
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=IN_FLIGHT), timeout=60) as client:
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def send(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with semaphore:
                response = await client.request(method, path, json=body)
            assert response.status_code in (200, 201), response.text
            answer: dict[str, Any] = response.json()
            return answer

        created = [await send("POST", "/notes/", {"text": "new", "completed": False}) for _ in range(notes)]

        async def replace(id: int, writer: int) -> dict[str, Any]:
            for round in range(rounds):
                body = {"text": f"{id} by {writer}, round {round}", "completed": writer % 2 == 0, "priority": round}
                answer = await send("PUT", f"/notes/{id}", body)
                assert answer == {"id": id, **body}
            return answer

        pairs = [(note["id"], writer) for note in created for writer in range(writers)]
        answers = await asyncio.gather(*(replace(id, writer) for id, writer in pairs))
        return [answers[index : index + writers] for index in range(0, len(answers), writers)]


@pytest.mark.parametrize("database_url", ["pgbouncer-transaction"], indirect=True)
def test_concurrent_replaces_through_workers(database_url: str) -> None:
    """Many clients replacing the same notes through 4 workers, whose groups of UPDATEs lock the same rows: every PUT
    answered 200 with what it sent, and each note left as one of its writers' last PUTs made it."""
    with serve("examples.crud_app:app", {"CRUD_DATABASE_URL": database_url}, "--workers", "4") as server:
        last_answers = asyncio.run(replace_concurrently(server.url, notes=40, writers=5, rounds=6))
        listed = httpx.get(f"{server.url}/notes/", params={"limit": 100}, timeout=60).json()

    assert len(listed) == len(last_answers) == 40
    for note, answers in zip(listed, last_answers):
        assert note in answers, (note, answers)
