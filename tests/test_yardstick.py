"""The yardstick of ``make bench`` (``bench/yardstick_app.py``), and the port in the FastAPI twin's form
(``bench/fastapi_form_app.py``), answer the benchmarked requests as the FastAPI twin of the CRUD example does, byte
for byte: the port is measured against apps that do the same work."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.helpers import CRUD_SEEDS, JSON, load

REQUESTS = [
    pytest.param(("GET", "/notes/?skip=1&limit=2", b""), id="page"),
    pytest.param(("GET", "/notes/2", b""), id="one"),
    pytest.param(("GET", "/notes/99", b""), id="one-not-found"),
    pytest.param(("PUT", "/notes/2", b'{"text": "changed", "completed": true, "priority": 3}'), id="put"),
    pytest.param(("POST", "/notes/", b'{"text": "a note from the benchmark", "completed": false}'), id="create"),
]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize(
    "app",
    [
        pytest.param(("bench.yardstick_app", "YARDSTICK_DATABASE_URL"), id="yardstick"),
        pytest.param(("bench.fastapi_form_app", "CRUD_DATABASE_URL"), id="fastapi-form"),
    ],
)
def test_the_benchmarked_apps_answer_as_the_fastapi_twin(
    database_url: str,
    request_: tuple[str, str, bytes],
    app: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TestClient(load("examples.crud_app", "CRUD_DATABASE_URL", database_url, monkeypatch).app):
        pass  # the table, as the port creates it
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = load("examples.crud_fastapi_app", "CRUD_FASTAPI_DATABASE_URL", reference_url, monkeypatch)
    measured = load(*app, database_url, monkeypatch)
    method, path, body = request_
    with TestClient(measured.app) as client, TestClient(reference.app) as reference_client:
        for note in CRUD_SEEDS:
            assert client.post("/notes/", json=note).json() == reference_client.post("/notes/", json=note).json()
        expected = reference_client.request(method, path, content=body, headers=JSON)
        response = client.request(method, path, content=body, headers=JSON)
        listed, expected_listed = client.get("/notes/").json(), reference_client.get("/notes/").json()
    assert (response.status_code, response.headers.items(), response.content) == (
        expected.status_code,
        expected.headers.items(),
        expected.content,
    ), response.text
    assert listed == expected_listed
