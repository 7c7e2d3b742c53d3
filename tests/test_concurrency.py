"""Many concurrent writers, on one or several worker processes: every note acknowledged, unique and listed."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy
from starlette.testclient import TestClient

from backends import ValueNotStorable
from storage import Database
from tests.helpers import serve

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
    assert database.group_commit is not None
    group_sizes: list[int] = []
    commit = database.group_commit.commit

    async def counted(group: list[Any]) -> list[Any]:
        group_sizes.append(len(group))
        return list(await commit(group))

    database.group_commit.commit = counted
    return group_sizes


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
