"""Keys: tables keyed by a UUID, a string, two columns or nothing list as the FastAPI version lists them, and keys
no column can hold answer as keys with no row."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import databases
import pytest
import sqlalchemy
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from exception_handlers import exception_handlers
from routing import APIRoute, serialize_pages
from storage import Database
from tests.helpers import BACKENDS, fastapi_app_of, new_database


class Item(BaseModel):
    a: str
    b: int
    text: str


class UuidItem(BaseModel):
    a: uuid.UUID
    b: int
    text: str


def keyed(kind: str) -> sqlalchemy.Table:
    """Return a table of ``Item`` rows keyed by ``kind``: a UUID, a string, its two columns, or nothing."""
    a: sqlalchemy.types.TypeEngine[Any] = sqlalchemy.String(40) if kind != "uuid" else sqlalchemy.Uuid()
    columns: list[sqlalchemy.Column[Any]] = {
        "uuid": [sqlalchemy.Column("a", a, primary_key=True), sqlalchemy.Column("b", sqlalchemy.Integer)],
        "string": [sqlalchemy.Column("a", a, primary_key=True), sqlalchemy.Column("b", sqlalchemy.Integer)],
        "composite": [
            sqlalchemy.Column("a", a, primary_key=True),
            sqlalchemy.Column("b", sqlalchemy.Integer, primary_key=True, autoincrement=False),
        ],
        "none": [sqlalchemy.Column("a", a), sqlalchemy.Column("b", sqlalchemy.Integer)],
    }[kind]
    return sqlalchemy.Table("items", sqlalchemy.MetaData(), *columns, sqlalchemy.Column("text", sqlalchemy.Text))


def fastapi_app(url: str, table: sqlalchemy.Table, item: type[BaseModel]) -> FastAPI:
    database = databases.Database(url)
    app = fastapi_app_of(database)

    @app.get("/items/", response_model=list[item])  # type: ignore[valid-type]
    async def read_items() -> Any:
        return await database.fetch_all(table.select())

    return app


def port_app(url: str, table: sqlalchemy.Table, item: type[BaseModel]) -> Starlette:
    database = Database(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await database.connect()
        yield
        await database.disconnect()

    async def read_items(request: Request) -> Response:
        return await serialize_pages(request, database.iterate_pages(table.select()))

    routes = [APIRoute("/items/", read_items, method="GET", response_model=list[item])]  # type: ignore[valid-type]
    return Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)


async def fill(url: str, table: sqlalchemy.Table, rows: list[dict[str, Any]]) -> None:
    """Create ``table``, insert ``rows``, then change a third of them and delete another third: on PostgreSQL a
    changed row moves to the end of the table, so that the table's order is neither the key's nor the rows'."""
    database = Database(url)
    await database.connect()
    try:
        await database.create_all(table.metadata)
        await database.execute_many(table.insert(), rows)
        await database.execute(table.update().where(table.c.b == 1).values(text=table.c.text + " changed"))
        await database.execute(table.delete().where(table.c.b == 2))
    finally:
        await database.disconnect()


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", ["uuid", "string", "composite", "none"])
def test_a_table_keyed_otherwise_lists_as_fastapi(database_url: str, tmp_path: Path, kind: str) -> None:
    table = keyed(kind)
    # Keys out of order: a UUID's or a string's order is not the order the rows came in.
    rows = [
        {"a": uuid.UUID(int=(index * 7919) % 10007 + 1, version=4), "b": index % 3, "text": f"item {index}"}
        for index in range(1, 2600)
    ]
    if kind != "uuid":
        rows = [{**row, "a": str(row["a"])} for row in rows]
    with new_database(database_url.split(":")[0], tmp_path) as reference_url:
        for url in (database_url, reference_url):
            asyncio.run(fill(url, table, rows))
        item = UuidItem if kind == "uuid" else Item
        port = port_app(database_url, table, item)
        with TestClient(port) as client, TestClient(fastapi_app(reference_url, table, item)) as reference_client:
            listed = client.get("/items/")
            assert listed.status_code == 200, listed.text
            expected = reference_client.get("/items/")
            assert listed.content == expected.content
            assert len(listed.json()) == len(rows) - len(rows[2::3]) > Database.page_size  # in several pages


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/notes/2147483648", id="over-32-bits"),
        pytest.param("/notes/-2147483649", id="under-32-bits"),
        pytest.param("/notes/9223372036854775808", id="over-64-bits"),
        pytest.param("/notes/1" + "0" * 30, id="over-100-bits"),
    ],
)
def test_a_key_no_row_can_have_is_not_found(clients: tuple[TestClient, TestClient], path: str) -> None:
    client, reference_client = clients
    missing = reference_client.get("/notes/99")
    assert missing.status_code == 404, missing.text
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"text": "x", "completed": True}
        response = client.request(
            method, path, json=body if method in ("PUT", "PATCH") else None, headers={"x-author": "me"}
        )
        assert (response.status_code, response.content) == (404, missing.content), method


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    ("path", "name"),
    [
        pytest.param("/notes/?skip={}", "skip", id="offset"),
        pytest.param("/search/?q=note&limit={}", "limit", id="limit"),
    ],
)
def test_a_query_parameter_the_database_cannot_take_is_a_422_there(
    clients: tuple[TestClient, TestClient], path: str, name: str
) -> None:
    client, _ = clients
    value = str(2**64 + 1)
    response = client.get(path.format(value))
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "type": "value_not_storable",
                "loc": ["query", name],
                "msg": "The database cannot take this value",
                "input": value,
            }
        ]
    }
    assert "retry-after" not in response.headers
