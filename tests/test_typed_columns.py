"""Typed columns, added with the FastAPI version's four edits, stored and answered as the FastAPI version does.

The drill adds JSON, Numeric with a scale, DateTime with an index, Date, Enum and a unique bounded String to copies of
both apps, each on a database of its own on the same backend, and compares the answers byte for byte, the OpenAPI
components, and the schema the port creates.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy
from sqlalchemy.dialects.postgresql.base import PGInspector
from starlette.testclient import TestClient

from storage import Database
from tests.helpers import BACKENDS, ROOT, copy_modules, new_database, serve, summary
from tests.test_crud_example import edited

COLUMNS = """    sqlalchemy.Column("completed", sqlalchemy.Boolean),
    sqlalchemy.Column("tags", sqlalchemy.JSON),
    sqlalchemy.Column("price", sqlalchemy.Numeric(10, 2)),
    sqlalchemy.Column("due", sqlalchemy.DateTime, index=True),
    sqlalchemy.Column("day", sqlalchemy.Date),
    sqlalchemy.Column("kind", sqlalchemy.Enum("todo", "idea", name="note_kind")),
    sqlalchemy.Column("title", sqlalchemy.String(20), unique=True),
"""
FIELDS = """    completed: bool
    tags: list[str] | None = None
    price: Decimal | None = None
    due: datetime | None = None
    day: date | None = None
    kind: Literal["todo", "idea"] = "todo"
    title: str | None = None
"""
NAMES = ["tags", "price", "due", "day", "kind", "title"]
IMPORTS = "from datetime import date, datetime\nfrom decimal import Decimal\nfrom typing import Literal\n"
# The FastAPI version's four edits (a column, a field in NoteIn and in Note, a value in the insert), and the imports.
EDITS: dict[str, list[tuple[str, str, int]]] = {
    "notes_app.py": [
        ('    sqlalchemy.Column("completed", sqlalchemy.Boolean),\n', COLUMNS, 1),
        ("    completed: bool\n", FIELDS, 2),
        (
            '"completed": note.completed}',
            '"completed": note.completed, ' + ", ".join(f'"{n}": note.{n}' for n in NAMES) + "}",
            1,
        ),
        ("import contextlib\n", IMPORTS + "import contextlib\n", 1),
    ],
    "reference_app.py": [
        ('    sqlalchemy.Column("completed", sqlalchemy.Boolean),\n', COLUMNS, 1),
        ("    completed: bool\n", FIELDS, 2),
        (
            "completed=note.completed)",
            "completed=note.completed, " + ", ".join(f"{n}=note.{n}" for n in NAMES) + ")",
            1,
        ),
        ("import os\n", IMPORTS + "import os\n", 1),
    ],
}

# The FastAPI version's table cannot be created on MySQL (its VARCHAR needs a length): the port's text column.
MYSQL_TEXT = [
    (
        '    sqlalchemy.Column("text", sqlalchemy.String),\n',
        '    sqlalchemy.Column("text", sqlalchemy.String().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")),\n',
        1,
    ),
    (
        '    sqlalchemy.Column("title", sqlalchemy.String(20), unique=True),\n',
        '    sqlalchemy.Column("title", sqlalchemy.String(20), unique=True),\n    mysql_charset="utf8mb4",\n',
        1,
    ),
    ("import sqlalchemy\n", "import sqlalchemy\nfrom sqlalchemy.dialects import mysql\n", 1),
]

NOTES: list[dict[str, Any]] = [
    {
        "text": "a",
        "completed": True,
        "tags": ["home", "shop"],
        "price": 12.5,
        "due": "2026-12-01T10:00:00",
        "day": "2026-12-02",
        "kind": "idea",
        "title": "first",
    },
    {"text": "b", "completed": False, "tags": [], "price": "3", "title": "second"},
    {"text": "c", "completed": True},
    {"text": "d", "completed": False, "price": 2.345, "tags": ["é 😀"], "due": "2026-01-31T23:59:59", "kind": "todo"},
]
REFUSED: list[dict[str, Any]] = [
    {"text": "duplicate", "completed": True, "title": "first"},  # the unique title
    {"text": "long", "completed": True, "title": "x" * 21},  # over String(20): stored by SQLite, refused elsewhere
    {"text": "huge", "completed": True, "price": 123456789012},  # over Numeric(10, 2)
]


async def schema(url: str) -> dict[str, Any]:
    """Return what the database holds of the notes table: its indexes and unique constraints, and enum types."""

    def inspect(connection: sqlalchemy.Connection) -> dict[str, Any]:
        inspector = sqlalchemy.inspect(connection)
        indexes = {(tuple(index["column_names"]), bool(index["unique"])) for index in inspector.get_indexes("notes")}
        indexes |= {(tuple(unique["column_names"]), True) for unique in inspector.get_unique_constraints("notes")}
        enums = [enum["name"] for enum in inspector.get_enums()] if isinstance(inspector, PGInspector) else []
        return {"indexes": indexes, "enums": enums}

    engine = Database(url).backend.async_engine()
    async with engine.connect() as connection:
        found = await connection.run_sync(inspect)
    await engine.dispose()
    return found


# MySQL rounds 2.345 to the column's scale, as PostgreSQL and the FastAPI version's INSERT do, and warns of it.
@pytest.mark.filterwarnings("ignore:Data truncated for column 'price':pymysql.err.Warning")
@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_typed_fields_take_the_fastapi_versions_four_edits(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = database_url.split(":")[0]
    port = edited(ROOT / "notes_app.py", EDITS["notes_app.py"], "DATABASE_URL", database_url, tmp_path, monkeypatch)
    with new_database(backend, tmp_path) as reference_url:
        reference = edited(
            ROOT / "tests" / "reference_app.py",
            EDITS["reference_app.py"] + (MYSQL_TEXT if backend == "mysql" else []),
            "REFERENCE_DATABASE_URL",
            reference_url,
            tmp_path,
            monkeypatch,
        )
        if backend != "sqlite":
            asyncio.run(Database(reference_url).backend.create_all(reference.metadata))
        with (
            TestClient(port.app) as client,
            TestClient(reference.app, raise_server_exceptions=False) as reference_client,
        ):
            for note in NOTES:
                response = client.post("/notes/", json=note)
                assert response.status_code == 200, response.text
                assert response.content == reference_client.post("/notes/", json=note).content
            for note in REFUSED:
                response = client.post("/notes/", json=note)
                expected = reference_client.post("/notes/", json=note)
                if expected.status_code == 500:  # the FastAPI version crashes: the port refuses, and stores nothing
                    assert response.status_code in (409, 422), response.text
                    assert "retry-after" not in response.headers
                else:
                    assert summary(response) == summary(expected)
            listed = client.get("/notes/")
            assert listed.status_code == 200, listed.text
            assert listed.content == reference_client.get("/notes/").content
            assert listed.json()[0] == {
                "id": 1,
                "text": "a",
                "completed": True,
                "tags": ["home", "shop"],
                "price": "12.50",
                "due": "2026-12-01T10:00:00",
                "day": "2026-12-02",
                "kind": "idea",
                "title": "first",
            }
            document = client.get("/openapi.json").json()
            expected_document = reference_client.get("/openapi.json").json()
        assert document["components"] == expected_document["components"]
        found = asyncio.run(schema(database_url))
        assert found == asyncio.run(schema(reference_url))
    assert (("due",), False) in found["indexes"]
    assert (("title",), True) in found["indexes"]
    assert found["enums"] == (["note_kind"] if backend == "postgresql" else [])


def as_stored(note: dict[str, Any]) -> dict[str, Any]:
    """Return ``note`` with its price as a number: the list gives the column's scale ("3.00"), as in FastAPI's."""
    return {**note, "price": None if note["price"] is None else Decimal(note["price"])}


async def post_concurrently(url: str, notes: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=len(notes)), timeout=60) as client:
        return list(await asyncio.gather(*(client.post("/notes/", json=note) for note in notes)))


@pytest.mark.filterwarnings("ignore:Data truncated for column 'price':pymysql.err.Warning")
@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_concurrent_creates_with_refused_notes(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """90 POSTs at once, among them duplicate and over-long titles: what is acknowledged is stored as answered, what
    is refused gets a 4xx without ``Retry-After`` and is not stored, and the rest is stored."""
    copy_modules(tmp_path)
    edited(ROOT / "notes_app.py", EDITS["notes_app.py"], "DATABASE_URL", database_url, tmp_path, monkeypatch)
    notes: list[dict[str, Any]] = [
        {"text": f"unique {index}", "completed": True, "title": f"unique {index}"} for index in range(30)
    ]
    notes += [{"text": f"duplicate {index}", "completed": False, "title": f"dup {index % 10}"} for index in range(30)]
    notes += [
        {"text": f"long {index}", "completed": True, "title": "x" * (21 + index % 20) + str(index)}
        for index in range(30)
    ]
    notes += [{"text": "price", "completed": True, "price": "1" * 12}]  # over Numeric(10, 2) but on SQLite
    random.Random(17).shuffle(notes)
    with serve("edited_notes_app:app", {"DATABASE_URL": database_url}, cwd=tmp_path) as server:
        responses = asyncio.run(post_concurrently(server.url, notes))
        listed = httpx.get(f"{server.url}/notes/")
    assert listed.status_code == 200, listed.text
    stored = {note["text"]: note for note in listed.json()}
    statuses = []
    for note, response in zip(notes, responses):
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert as_stored(stored[note["text"]]) == as_stored(response.json())
        else:
            assert response.status_code in (409, 422), response.text
            assert "retry-after" not in response.headers
            assert note["text"] not in stored
    assert len(stored) == statuses.count(200)
    assert sorted(note["title"] for note in stored.values() if note["text"].startswith("duplicate")) == [
        f"dup {index}" for index in range(10)
    ]
    assert all(f"unique {index}" in stored for index in range(30))
    refused_long = [note for note, status in zip(notes, statuses) if note["text"].startswith("long") and status != 200]
    assert len(refused_long) == (0 if database_url.startswith("sqlite") else 30)  # SQLite does not bound a VARCHAR
