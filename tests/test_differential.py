"""Send the same requests to the port and to the FastAPI reference, and compare the answers."""

from __future__ import annotations

from types import ModuleType

import pytest
from starlette.testclient import TestClient

from tests.helpers import BACKENDS, CASES, post, send, summary


@pytest.mark.parametrize("database_url", [*BACKENDS, "pgbouncer-transaction"], indirect=True)
@pytest.mark.parametrize("request_", CASES)
def test_same_answer(
    client: TestClient,
    reference_client: TestClient,
    database_url: str,
    request_: tuple[str, str, dict[str, str], bytes],
) -> None:
    seed = post({"text": "seed", "completed": False})
    assert summary(send(client, seed)) == summary(send(reference_client, seed))

    expected = send(reference_client, request_)
    response = send(client, request_)

    # PostgreSQL cannot store NUL in text: the port says so, where the reference on SQLite stores it.
    unstorable = database_url.startswith("postgresql") and b"\\u0000" in request_[3]
    if expected.status_code >= 500 or unstorable:
        # The reference crashes here: the port answers a clean 4xx in FastAPI's shape, and stores nothing.
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["detail"], list)
        assert client.get("/notes/").json() == [{"id": 1, "text": "seed", "completed": False}]
        assert send(client, seed).json()["id"] == 2, "a rejected note consumed an id"
    else:
        assert summary(response) == summary(expected)
        assert summary(client.get("/notes/")) == summary(reference_client.get("/notes/"))


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("count", [6, 7, 8, 21, 25])
def test_long_list_answers_the_same_headers_and_bytes(
    port_app: ModuleType, client: TestClient, reference_client: TestClient, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_app.database, "page_size", 7)
    for index in range(count):
        note = {"text": f"note {index} ✓", "completed": index % 3 == 0}
        assert client.post("/notes/", json=note).json() == reference_client.post("/notes/", json=note).json()

    response = client.get("/notes/")
    expected = reference_client.get("/notes/")
    assert response.status_code == 200, response.text
    assert response.headers.raw == expected.headers.raw  # content-length included, in the same order
    assert response.content == expected.content
    assert len(response.json()) == count
