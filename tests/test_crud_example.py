"""The port's machinery grows like FastAPI: the CRUD example built with it against its FastAPI twin.

Both grow the notes example to a CRUD API: a field (``priority``), read, replace, change and delete one note with a
documented 404, a 201 on create and a 204 on delete, query parameters of several types and bounds, header
parameters, tags, summaries and docstrings. The answers and the OpenAPI documents must be the same.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from tests.helpers import BACKENDS, JSON, ROOT, post, send, summary


def get(path: str) -> tuple[str, str, dict[str, str], bytes]:
    return "GET", path, {}, b""


def put(path: str, body: Any) -> tuple[str, str, dict[str, str], bytes]:
    return "PUT", path, JSON, json.dumps(body).encode()


def patch(path: str, body: Any, headers: dict[str, str]) -> tuple[str, str, dict[str, str], bytes]:
    return "PATCH", path, {**JSON, **headers}, json.dumps(body).encode()


CASES = [
    pytest.param(get("/notes/"), id="list"),
    pytest.param(get("/notes/?skip=1&limit=1"), id="skip-limit"),
    pytest.param(get("/notes/?skip=1&skip=2"), id="repeated-parameter"),
    pytest.param(get("/notes/?skip=x&limit=1.5"), id="invalid-integers"),
    pytest.param(get("/notes/?skip="), id="empty-integer"),
    pytest.param(get("/notes/?completed=yes"), id="bool-yes"),
    pytest.param(get("/notes/?completed=0"), id="bool-0"),
    pytest.param(get("/notes/?completed=maybe"), id="bool-invalid"),
    pytest.param(get("/notes/?completed=maybe&skip=x&unknown=1"), id="several-invalid"),
    pytest.param(get("/notes/1"), id="one"),
    pytest.param(get("/notes/3"), id="last"),
    pytest.param(get("/notes/99"), id="not-found"),
    pytest.param(get("/notes/0"), id="zero"),
    pytest.param(get("/notes/-1"), id="negative"),
    pytest.param(get("/notes/abc"), id="path-not-an-integer"),
    pytest.param(get("/notes/1.5"), id="path-float"),
    pytest.param(get("/notes/%20"), id="path-space"),
    pytest.param(get("/notes/1/"), id="path-trailing-slash"),
    pytest.param(get("/search/"), id="missing-required"),
    pytest.param(get("/search/?q="), id="empty-string"),
    pytest.param(get("/search/?q=note"), id="search"),
    pytest.param(get("/search/?q=note&limit=1"), id="optional-integer"),
    pytest.param(get("/search/?q=note&limit=null"), id="optional-integer-invalid"),
    pytest.param(get("/search/?q=%25"), id="search-percent"),
    pytest.param(get("/search/?limit=x"), id="missing-and-invalid"),
    pytest.param(("POST", "/notes/", JSON, b'{"text": "a", "completed": true, "priority": 7}'), id="create"),
    pytest.param(("POST", "/notes/", JSON, b'{"text": "a", "completed": true}'), id="create-default"),
    pytest.param(("POST", "/notes/", JSON, b'{"text": "a", "completed": true, "priority": "high"}'), id="invalid"),
    pytest.param(
        ("POST", "/notes/", {**JSON, "X-Request-Source": "cli"}, b'{"text": "a", "completed": true}'), id="header"
    ),
    pytest.param(("POST", "/notes/", JSON, b"{"), id="create-bad-json"),
    pytest.param(("POST", "/notes/", JSON, b""), id="create-empty"),
    pytest.param(get("/notes/?skip=-1&limit=0"), id="below-bounds"),
    pytest.param(get("/notes/?limit=101"), id="above-bounds"),
    pytest.param(put("/notes/2", {"text": "b", "completed": True, "priority": 5}), id="replace"),
    pytest.param(put("/notes/99", {"text": "b", "completed": True}), id="replace-not-found"),
    pytest.param(put("/notes/abc", {"text": 1}), id="replace-path-and-body-invalid"),
    pytest.param(("PUT", "/notes/abc", {}, b""), id="replace-path-invalid-body-missing"),
    pytest.param(("PUT", "/notes/abc", JSON, b"{"), id="replace-path-invalid-body-not-json"),
    pytest.param(patch("/notes/1", {"completed": False}, {"x-author": "me"}), id="update"),
    pytest.param(patch("/notes/1", {"priority": 9}, {"X-AUTHOR": "me"}), id="update-header-any-case"),
    pytest.param(patch("/notes/1", {}, {"x-author": "me"}), id="update-nothing"),
    pytest.param(patch("/notes/1", {"completed": False}, {"x_author": "me"}), id="update-header-with-underscore"),
    pytest.param(patch("/notes/1", {"completed": False}, {}), id="update-header-missing"),
    pytest.param(patch("/notes/x", {"priority": "high"}, {}), id="update-all-invalid"),
    pytest.param(patch("/notes/99", {"priority": 1}, {"x-author": "me"}), id="update-not-found"),
    pytest.param(("DELETE", "/notes/1", {}, b""), id="delete"),
    pytest.param(("DELETE", "/notes/99", {}, b""), id="delete-not-found"),
    pytest.param(("DELETE", "/notes/x", {}, b""), id="delete-invalid"),
    pytest.param(get("/legacy/notes/"), id="deprecated"),
    pytest.param(get("/health"), id="not-in-schema"),
    pytest.param(("DELETE", "/notes/", {}, b""), id="method-not-allowed"),
]


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("request_", CASES)
def test_same_answer(clients: tuple[TestClient, TestClient], request_: tuple[str, str, dict[str, str], bytes]) -> None:
    client, reference_client = clients
    expected = summary(send(reference_client, request_))
    assert expected["status"] < 500
    assert summary(send(client, request_)) == expected
    assert summary(client.get("/notes/")) == summary(reference_client.get("/notes/"))


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_same_document(clients: tuple[TestClient, TestClient]) -> None:
    client, reference_client = clients
    response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    validate(response.json())
    assert response.json() == reference_client.get("/openapi.json").json()


def test_the_new_field_goes_all_the_way(clients: tuple[TestClient, TestClient]) -> None:
    client, _ = clients
    created = client.post("/notes/", json={"text": "urgent", "completed": False, "priority": 9})
    assert created.status_code == 201, created.text
    assert created.json() == {"id": 4, "text": "urgent", "completed": False, "priority": 9}
    assert client.get("/notes/4").json() == created.json()
    assert client.get("/notes/?skip=3").json() == [created.json()]


# The FastAPI version's four edits to add a field: a column, a field in NoteIn and in Note, a value in the insert
# (the port gives its values apart, in a dict).
FIELD_DRILL = [
    (
        '    sqlalchemy.Column("completed", sqlalchemy.Boolean),\n',
        '    sqlalchemy.Column("completed", sqlalchemy.Boolean),\n'
        '    sqlalchemy.Column("priority", sqlalchemy.Integer),\n',
        1,
    ),
    ("    completed: bool\n", "    completed: bool\n    priority: int = 0\n", 2),
]
INSERT_EDITS = {
    "notes_app.py": ('"completed": note.completed}', '"completed": note.completed, "priority": note.priority}'),
    "reference_app.py": ("completed=note.completed)", "completed=note.completed, priority=note.priority)"),
}


def drilled(source: Path, variable: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import a copy of the app at ``source`` with the field drill's edits, on ``database_url``."""
    edits = [*FIELD_DRILL, (*INSERT_EDITS[source.name], 1)]
    return edited(source, edits, variable, database_url, tmp_path, monkeypatch)


def edited(
    source: Path,
    edits: list[tuple[str, str, int]],
    variable: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Import a copy of the app at ``source``, with each ``(old, new, count)`` of ``edits``, on ``database_url``."""
    text = source.read_text()
    for old, new, count in edits:
        assert text.count(old) == count, old
        text = text.replace(old, new)
    path = tmp_path / f"edited_{source.name}"
    path.write_text(text)
    monkeypatch.setenv(variable, database_url)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)  # where Pydantic resolves the models' annotations
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_field_takes_the_fastapi_versions_four_edits(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = drilled(ROOT / "notes_app.py", "DATABASE_URL", database_url, tmp_path, monkeypatch)
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = drilled(
        ROOT / "tests" / "reference_app.py", "REFERENCE_DATABASE_URL", reference_url, tmp_path, monkeypatch
    )
    with TestClient(port.app) as client, TestClient(reference.app) as reference_client:
        for note in [{"text": "a", "completed": True, "priority": 3}, {"text": "b", "completed": False}]:
            response = client.post("/notes/", json=note)
            assert response.status_code == 200, response.text
            assert response.content == reference_client.post("/notes/", json=note).content
        listed = client.get("/notes/")
        assert listed.content == reference_client.get("/notes/").content
        assert listed.json() == [
            {"id": 1, "text": "a", "completed": True, "priority": 3},
            {"id": 2, "text": "b", "completed": False, "priority": 0},
        ]
        document = client.get("/openapi.json").json()
        expected = reference_client.get("/openapi.json").json()
    assert document["components"] == expected["components"]
    assert document["components"]["schemas"]["Note"]["properties"]["priority"] == {
        "default": 0,
        "title": "Priority",
        "type": "integer",
    }


def documented_endpoint() -> list[str]:
    """Return the code blocks of docs/growing.md's "An endpoint": FastAPI's endpoint, the port's, and its route."""
    section = (ROOT / "docs" / "growing.md").read_text().split("## An endpoint")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


ROUTES = re.findall(r"^routes = \[\n.*?^\]\n", (ROOT / "notes_app.py").read_text(), re.MULTILINE | re.DOTALL)[0]

# The endpoint's body in FastAPI's version, which docs/growing.md leaves out.
FASTAPI_REPLACE_NOTE = """
class Message(BaseModel):
    detail: str


{decorator_and_signature}
    if await database.fetch_one(notes.select().where(notes.c.id == note_id)) is None:
        raise HTTPException(status_code=404, detail="Note not found")
    query = notes.update().where(notes.c.id == note_id)
    await database.execute(query.values(text=note.text, completed=note.completed))
    return {{**note.model_dump(), "id": note_id}}
"""


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_an_endpoint_added_the_docs_way_answers_as_fastapis(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastapi_endpoint, port_endpoint, port_route = documented_endpoint()
    port = edited(
        ROOT / "notes_app.py",
        [
            (ROUTES, f"{port_endpoint}\n\n{port_route}", 1),
            ("from starlette.config", "from starlette.exceptions import HTTPException\nfrom starlette.config", 1),
        ],
        "DATABASE_URL",
        database_url,
        tmp_path,
        monkeypatch,
    )
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    endpoint = FASTAPI_REPLACE_NOTE.format(decorator_and_signature=fastapi_endpoint.rstrip())
    reference = edited(
        ROOT / "tests" / "reference_app.py",
        [
            (
                "from fastapi import FastAPI\n",
                "from typing import Annotated\n\nfrom fastapi import FastAPI, Header, HTTPException\n",
                1,
            ),
        ],
        "REFERENCE_DATABASE_URL",
        reference_url,
        tmp_path,
        monkeypatch,
    )
    exec(endpoint, reference.__dict__)  # the FastAPI way: the decorator registers the route on the app
    requests = [
        post({"text": "a", "completed": False}),
        ("PUT", "/notes/1", {**JSON, "x-author": "me"}, b'{"text": "b", "completed": true}'),
        ("PUT", "/notes/9", JSON, b'{"text": "b", "completed": true}'),
        ("PUT", "/notes/x", JSON, b'{"text": 1}'),
        ("GET", "/notes/", {}, b""),
    ]
    with TestClient(port.app) as client, TestClient(reference.app) as reference_client:
        for request_ in requests:
            assert summary(send(client, request_)) == summary(send(reference_client, request_)), request_
        document = client.get("/openapi.json").json()
        expected = reference_client.get("/openapi.json").json()
    expected["info"] = document["info"]
    assert document == expected
    assert document["paths"]["/notes/{note_id}"]["put"]["description"] == "Replace a note's text and state."
