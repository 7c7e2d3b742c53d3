"""Any table a reader writes: the port and the FastAPI version, built from the same drawn table, answer alike.

Hypothesis draws a table of SQLAlchemy's generic column types, nullable or not, with and without defaults, the
matching ``NoteIn`` and ``Note`` fields, and notes to create. Both apps are built from it, the FastAPI version as the
example writes it and the port with its machinery, each on a database of its own on the same backend; they must
answer the same POSTs and the same list byte for byte (where the FastAPI version crashes, the port refuses with a
409 or a 422 and stores nothing), and document the same models.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import databases
import pytest
import sqlalchemy
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, create_model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from exception_handlers import exception_handlers
from routing import APIRoute, serialize_pages, serialize_response, validate_request
from schema import docs_routes
from storage import Database
from tests.helpers import BACKENDS, fastapi_app_of, new_database

TABLES = itertools.count()  # each drawn table, and its enum type, gets a name of its own


class Kind(NamedTuple):
    """A column type, the field type that matches it, and the JSON values a client may send for it."""

    column: Callable[[str], sqlalchemy.types.TypeEngine[Any]]
    field: Any
    values: st.SearchStrategy[Any]


class Tags(sqlalchemy.types.TypeDecorator[list[str]]):
    """A reader's own type: a list of words kept as one comma-separated text."""

    impl = sqlalchemy.Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: sqlalchemy.Dialect) -> str | None:
        return None if value is None else ",".join(value)

    def process_result_value(self, value: str | None, dialect: sqlalchemy.Dialect) -> list[str] | None:
        return None if value is None else value.split(",") if value else []


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)
KINDS = {
    "integer": Kind(lambda name: sqlalchemy.Integer(), int, st.integers(-(2**31), 2**31 - 1)),
    "string": Kind(lambda name: sqlalchemy.String(50), str, TEXT),  # a text over 50 is refused but by SQLite
    "text": Kind(lambda name: sqlalchemy.Text(), str, TEXT),
    "boolean": Kind(lambda name: sqlalchemy.Boolean(), bool, st.booleans()),
    "numeric": Kind(
        lambda name: sqlalchemy.Numeric(10, 2),
        decimal.Decimal,
        st.decimals(-(10**7), 10**7, places=2, allow_nan=False, allow_infinity=False).map(str),
    ),
    "float": Kind(lambda name: sqlalchemy.Float(), float, st.floats(-1e6, 1e6, allow_nan=False, width=32)),
    "datetime": Kind(
        lambda name: sqlalchemy.DateTime(),
        datetime.datetime,
        st.datetimes(datetime.datetime(1971, 1, 1), datetime.datetime(2100, 1, 1)).map(
            lambda value: value.replace(microsecond=0).isoformat()
        ),
    ),
    "date": Kind(
        lambda name: sqlalchemy.Date(),
        datetime.date,
        st.dates(datetime.date(1971, 1, 1), datetime.date(2100, 1, 1)).map(str),
    ),
    "time": Kind(
        lambda name: sqlalchemy.Time(),
        datetime.time,
        st.times().map(lambda value: value.replace(microsecond=0).isoformat()),
    ),
    "json": Kind(lambda name: sqlalchemy.JSON(), list[str], st.lists(st.text(max_size=5), max_size=3)),
    "enum": Kind(
        lambda name: sqlalchemy.Enum("todo", "idea", name=f"{name}_kind"),
        Literal["todo", "idea"],
        st.sampled_from(["todo", "idea"]),
    ),
    "uuid": Kind(lambda name: sqlalchemy.Uuid(), uuid.UUID, st.uuids(version=4).map(str)),  # MariaDB's: RFC 4122
    "interval": Kind(
        lambda name: sqlalchemy.Interval(),
        datetime.timedelta,
        st.integers(0, 10**6).map(lambda seconds: f"PT{seconds}S"),
    ),
    "decorated": Kind(lambda name: Tags(), list[str], st.lists(st.text("abc ", max_size=5), max_size=3)),
}


class Field(NamedTuple):
    name: str
    kind: str
    nullable: bool
    default: Any  # a JSON value, or None for no default


@st.composite
def fields(draw: st.DrawFn) -> list[Field]:
    """Draw the columns a reader adds: one to four, each nullable or not, with or without a default."""
    drawn = []
    for index, kind in enumerate(draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=4))):
        nullable = draw(st.booleans())
        default = None if nullable or not draw(st.booleans()) else draw(KINDS[kind].values)
        drawn.append(Field(f"{kind}_{index}", kind, nullable, default))
    return drawn


def table_and_models(
    name: str, drawn: list[Field]
) -> tuple[sqlalchemy.MetaData, sqlalchemy.Table, type[BaseModel], type[BaseModel]]:
    """Return the table, ``NoteIn`` and ``Note`` a reader writes for the drawn fields, after the notes example's."""
    metadata = sqlalchemy.MetaData()
    columns = [
        sqlalchemy.Column(field.name, KINDS[field.kind].column(name), nullable=field.nullable) for field in drawn
    ]
    table = sqlalchemy.Table(
        name,
        metadata,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("completed", sqlalchemy.Boolean),
        *columns,
        mysql_charset="utf8mb4",
    )
    model_fields: dict[str, Any] = {"completed": (bool, ...)}
    for field in drawn:
        annotation = KINDS[field.kind].field
        if field.nullable:
            model_fields[field.name] = (annotation | None, None)
        else:
            default = ... if field.default is None else TypeAdapter(annotation).validate_python(field.default)
            model_fields[field.name] = (annotation, default)
    note_in = create_model("NoteIn", **model_fields)
    note = create_model("Note", id=(int, ...), **model_fields)
    return metadata, table, note_in, note


def fastapi_app(url: str, table: sqlalchemy.Table, note_in: type[BaseModel], note: type[BaseModel]) -> FastAPI:
    """The FastAPI version for the drawn table (its list ordered by id, which the port's is)."""
    database = databases.Database(url)
    app = fastapi_app_of(database)

    @app.get("/notes/", response_model=list[note])  # type: ignore[valid-type]
    async def read_notes() -> Any:
        return await database.fetch_all(table.select().order_by(table.c.id))

    async def create_note(body: BaseModel) -> Any:
        values = body.model_dump()
        last_record_id = await database.execute(table.insert().values(**values))
        return {**values, "id": last_record_id}

    create_note.__annotations__["body"] = note_in  # FastAPI reads the model from the annotation, here drawn
    app.post("/notes/", response_model=note)(create_note)
    return app


def port_app(url: str, table: sqlalchemy.Table, note_in: type[BaseModel], note: type[BaseModel]) -> Starlette:
    """The port for the drawn table, as ``notes_app.py`` is written."""
    database = Database(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await database.connect()
        await database.create_all(table.metadata)
        yield
        await database.disconnect()

    async def read_notes(request: Request) -> Response:
        return await serialize_pages(request, database.iterate_pages(table.select().order_by(table.c.id)))

    async def create_note(request: Request) -> Response:
        body = (await validate_request(request)).body
        values = body.model_dump()
        last_record_id = await database.execute(query=table.insert(), values=values)
        return serialize_response(request, {**values, "id": last_record_id})

    routes = [
        APIRoute("/notes/", read_notes, method="GET", response_model=list[note]),  # type: ignore[valid-type]
        APIRoute("/notes/", create_note, method="POST", body=note_in, response_model=note),
    ]
    return Starlette(
        routes=routes + docs_routes(routes, title="FastAPI", version="0.1.0"),
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )


@st.composite
def tables_and_notes(draw: st.DrawFn) -> tuple[list[Field], list[dict[str, Any]]]:
    drawn = draw(fields())
    notes = []
    for _ in range(draw(st.integers(1, 3))):
        note: dict[str, Any] = {"completed": draw(st.booleans())}
        for field in drawn:
            if field.nullable or field.default is not None:
                if draw(st.booleans()):
                    continue  # left to the model's default
            note[field.name] = draw(KINDS[field.kind].values)
        notes.append(note)
    return drawn, notes


@pytest.fixture
def reference_url(database_url: str, tmp_path: Path) -> Any:
    with new_database(database_url.split(":")[0], tmp_path) as url:
        yield url


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@settings(
    max_examples=int(os.environ.get("ANY_TABLE_EXAMPLES", 20)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(drawn=tables_and_notes())
def test_the_port_answers_as_fastapi_for_any_table(
    database_url: str, reference_url: str, drawn: tuple[list[Field], list[dict[str, Any]]]
) -> None:
    columns, notes = drawn
    name = f"notes_{next(TABLES)}"
    metadata, table, note_in, note = table_and_models(name, columns)
    asyncio.run(Database(reference_url).backend.create_all(metadata))
    port = port_app(database_url, table, note_in, note)
    reference = fastapi_app(reference_url, table, note_in, note)
    with TestClient(port) as client, TestClient(reference, raise_server_exceptions=False) as reference_client:
        for body in notes:
            response = client.post("/notes/", json=body)
            expected = reference_client.post("/notes/", json=body)
            if expected.status_code == 500:  # the FastAPI version crashes: the port refuses and stores nothing
                assert response.status_code in (409, 422), response.text
                assert "retry-after" not in response.headers
            else:
                assert (response.status_code, response.content) == (expected.status_code, expected.content), body
        listed = client.get("/notes/")
        assert listed.status_code == 200, listed.text
        assert listed.content == reference_client.get("/notes/").content
        document = client.get("/openapi.json").json()
        assert document["components"] == reference_client.get("/openapi.json").json()["components"]
