"""Many concurrent writers, on one or several worker processes: every note acknowledged, unique and listed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import pytest

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
