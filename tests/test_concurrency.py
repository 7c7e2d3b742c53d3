"""Many concurrent writers, on one or several worker processes: every note acknowledged, unique and listed."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy
from starlette.testclient import TestClient

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


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer-transaction"], indirect=True)
def test_notes_inserted_together_get_their_own_ids(port_app: ModuleType, client: TestClient) -> None:
    """On PostgreSQL the notes created at the same moment share one INSERT: each must get its own row's id."""
    database = port_app.database
    group_sizes: list[int] = []
    commit = database.group_commit.commit

    async def counted(group: list[Any]) -> list[Any]:
        group_sizes.append(len(group))
        return list(await commit(group))

    database.group_commit.commit = counted
    texts = [f"note {index} " + "x" * (index % 7) for index in range(500)]

    async def create() -> list[int]:
        inserts = [port_app.notes.insert().values(text=text, completed=len(text) % 2 == 0) for text in texts]
        # One INSERT with an SQL expression among them: it cannot join the others, and runs alone.
        inserts.insert(250, port_app.notes.insert().values(text=sqlalchemy.func.upper("loud"), completed=True))
        return list(await asyncio.gather(*(database.execute(insert) for insert in inserts)))

    assert client.portal is not None
    ids = client.portal.call(create)
    assert max(group_sizes) > 1, group_sizes
    listed = {note["id"]: note for note in client.get("/notes/").json()}
    expected = [{"text": text, "completed": len(text) % 2 == 0} for text in texts]
    expected.insert(250, {"text": "LOUD", "completed": True})
    assert [listed[id] for id in ids] == [{"id": id, **note} for id, note in zip(ids, expected)]
