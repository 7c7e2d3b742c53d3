"""FastAPI's "Async SQL (Relational) Databases" notes example, ported to Starlette alone."""

from __future__ import annotations

import contextlib
import email.message
import json
import os
import warnings
from collections.abc import AsyncIterator
from typing import Any

import databases
import sqlalchemy
from pydantic import BaseModel, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, to_json
from sqlalchemy.dialects import mysql
from starlette.applications import Starlette
from starlette.config import Config
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from schema import APIRoute, docs_routes

config = Config(".env" if os.path.exists(".env") else None)
DATABASE_URL = config("DATABASE_URL", default="sqlite:///./test.db")
MAX_BODY_SIZE = config("MAX_BODY_SIZE", cast=int, default=1024 * 1024)

database = databases.Database(DATABASE_URL)
SQLITE_PRAGMAS = [
    "PRAGMA busy_timeout = 30000",  # Wait for other worker processes' writes instead of failing.
    "PRAGMA journal_mode = WAL",  # Readers and the writer do not block each other; one fsync per commit.
    "PRAGMA synchronous = FULL",  # A note is on disk before its 200 goes out, power cut or not.
]

metadata = sqlalchemy.MetaData()

notes = sqlalchemy.Table(
    "notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    # MySQL's VARCHAR needs a length and its TEXT stops at 64 KiB: a note may be as long as the body limit.
    sqlalchemy.Column("text", sqlalchemy.String().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")),
    sqlalchemy.Column("completed", sqlalchemy.Boolean),
    mysql_charset="utf8mb4",  # 4-byte UTF-8, emoji included, whatever the server's default
)


class NoteIn(BaseModel):
    text: str
    completed: bool

    @field_validator("text")
    @classmethod
    def check_storable(cls, text: str) -> str:
        """Reject what the database cannot store, where FastAPI's version fails with a 500."""
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise PydanticCustomError("string_unicode", "Input should be a valid string without lone surrogates")
        if "\x00" in text and database.url.dialect == "postgresql":
            raise PydanticCustomError("string_nul", "Input should be a string without NUL characters")
        return text


class Note(BaseModel):
    id: int
    text: str
    completed: bool


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Connect to the database and create the ``notes`` table if it is missing."""
    async with database, shared_sqlite_connection():
        await create_table()
        yield


async def create_table() -> None:
    """Create the ``notes`` table if it is missing (production databases use the Alembic migrations)."""
    create = sqlalchemy.schema.CreateTable(notes, if_not_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MySQL warns when IF NOT EXISTS finds the table: that is the point.
        try:
            await database.execute(create)
        except Exception:
            # Worker processes starting together race on PostgreSQL, which fails the losers: the table is there now.
            await database.execute(create)


@contextlib.asynccontextmanager
async def shared_sqlite_connection() -> AsyncIterator[None]:
    """On SQLite, run every query on one connection: ``databases`` would open one, and a thread, per query."""
    if database.url.dialect != "sqlite":
        yield
        return
    async with database.connection() as connection:
        for pragma in SQLITE_PRAGMAS:
            await connection.execute(pragma)
        database._global_connection = connection
        try:
            yield
        finally:
            database._global_connection = None


async def read_body(request: Request) -> Any:
    """Return the body as FastAPI hands it to a body parameter: decoded JSON, or the raw bytes if not JSON."""
    body = await request.body()
    if not body:
        raise ValidationError.from_exception_data("NoteIn", [InitErrorDetails(type="missing", loc=(), input=None)])
    message = email.message.Message()
    message["content-type"] = request.headers.get("content-type", "")
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or (subtype != "json" and not subtype.endswith("+json")):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        error = PydanticCustomError("json_invalid", "JSON decode error", {"error": exc.msg})
        raise ValidationError.from_exception_data("NoteIn", [InitErrorDetails(type=error, loc=(exc.pos,), input={})])
    except (ValueError, RecursionError):  # Not UTF-8, or nested too deep.
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from None


def validation_error(exc: ValidationError) -> JSONResponse:
    """Turn a Pydantic ``ValidationError`` about the request body into FastAPI's 422 response."""
    detail = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
    for error in detail:
        if isinstance(error["input"], bytes):
            error["input"] = error["input"].decode(errors="replace")
    try:
        return JSONResponse({"detail": detail}, status_code=422)
    except (ValueError, RecursionError):
        # FastAPI answers a plain-text 500 here: NaN, Infinity or a lone surrogate in the input have no JSON form.
        return JSONResponse({"detail": [{**error, "input": None} for error in detail]}, status_code=422)


async def read_notes(request: Request) -> Response:
    query = notes.select()
    rows = await database.fetch_all(query)
    content = [{"id": row["id"], "text": row["text"], "completed": row["completed"]} for row in rows]
    return Response(to_json(content), media_type="application/json")


async def create_note(request: Request) -> Response:
    try:
        note = NoteIn.model_validate(await read_body(request), from_attributes=True)
    except ValidationError as exc:
        return validation_error(exc)
    query = notes.insert().values(text=note.text, completed=note.completed)
    last_record_id = await database.execute(query)
    return Response(to_json({"id": last_record_id, **note.model_dump()}), media_type="application/json")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Answer an ``HTTPException`` with FastAPI's JSON body."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


routes = [
    APIRoute("/notes/", read_notes, method="GET", response_model=list[Note]),
    APIRoute("/notes/", create_note, method="POST", body=NoteIn, response_model=Note),
]

app = Starlette(
    routes=routes + docs_routes(routes, title="Notes", version="0.1.0"),
    lifespan=lifespan,
    exception_handlers={HTTPException: http_exception},
    max_body_size=MAX_BODY_SIZE,
)
