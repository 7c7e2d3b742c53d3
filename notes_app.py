"""FastAPI's "Async SQL (Relational) Databases" notes example, ported to Starlette alone."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import json
import logging
import os
import sqlite3
import warnings
from collections.abc import AsyncIterator
from typing import Any

import databases
import sqlalchemy
from databases.interfaces import Record
from pydantic import BaseModel, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, to_json
from sqlalchemy.dialects import mysql
from starlette.applications import Starlette
from starlette.config import Config
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

import sqlite_tuning
from schema import APIRoute, docs_routes

logger = logging.getLogger("notes_app")
config = Config(".env" if os.path.exists(".env") else None)
DATABASE_URL = config("DATABASE_URL", default="sqlite:///./test.db")
MAX_BODY_SIZE = config("MAX_BODY_SIZE", cast=int, default=1024 * 1024)
PAGE_SIZE = 1000  # notes per query and per chunk of a streamed list

database = databases.Database(DATABASE_URL)
# What the drivers raise when the database is down, unreachable, locked or failing. Only the driver in use is
# imported: the others would take memory for nothing.
DATABASE_ERRORS: tuple[type[Exception], ...] = (OSError, asyncio.TimeoutError, sqlite3.Error)
if database.url.dialect == "postgresql":
    import asyncpg

    DATABASE_ERRORS += (asyncpg.PostgresError, asyncpg.InterfaceError)
elif database.url.dialect == "mysql":
    import pymysql

    DATABASE_ERRORS += (pymysql.Error,)

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

# Plain SQL, because databases compiles every statement on every call: this compiles four times faster than
# notes.select(). Its columns give the rows their types (SQLite and MySQL store booleans as 0 and 1).
select_page = sqlalchemy.text(
    "SELECT id, text, completed FROM notes WHERE id > :after ORDER BY id LIMIT :limit"
).columns(notes.c.id, notes.c.text, notes.c.completed)


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
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """Connect to the database, create the ``notes`` table if it is missing, and choose how to run INSERTs."""
    try:
        async with database:
            if database.url.dialect == "sqlite":
                async with sqlite_tuning.tuned(database) as group_commit:
                    await create_table()
                    yield {"execute": group_commit.execute}
            else:
                await create_table()
                yield {"execute": database.execute}
    except DATABASE_ERRORS as exc:
        logger.critical("Cannot use the database at %s: %s", database.url.obscure_password, exc)
        raise


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


async def read_limited(request: Request) -> bytes:
    """Return the body, refusing one over ``MAX_BODY_SIZE`` before it is read, or as soon as it goes over."""
    too_large = HTTPException(status_code=413, detail="Content Too Large")
    if int(request.headers.get("content-length") or 0) > MAX_BODY_SIZE:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_SIZE:
            raise too_large
    return bytes(body)


async def read_body(request: Request) -> Any:
    """Return the body as FastAPI hands it to a body parameter: decoded JSON, or the raw bytes if not JSON."""
    body = await read_limited(request)
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
    """List the notes; a long list goes out page by page, so memory stays bounded however many there are."""
    rows = await fetch_page(after=0)
    if len(rows) < PAGE_SIZE:
        return Response(to_json(as_notes(rows)), media_type="application/json")
    return StreamingResponse(stream_notes(rows), media_type="application/json")


async def fetch_page(after: int) -> list[Record]:
    """Return the next ``PAGE_SIZE`` notes after the id ``after``."""
    return await database.fetch_all(select_page.bindparams(after=after, limit=PAGE_SIZE))


async def stream_notes(rows: list[Record]) -> AsyncIterator[bytes]:
    """Yield the JSON array of all notes, a page of rows at a time, starting with ``rows``."""
    separator = b"["
    while rows:
        after, more = rows[-1]["id"], len(rows) == PAGE_SIZE
        chunk = separator + to_json(as_notes(rows))[1:-1]
        rows = []  # Let the rows go while the client takes the bytes: short notes' rows take six times more memory.
        yield chunk
        separator = b","
        if more:
            rows = await fetch_page(after=after)
    yield b"]"


def as_notes(rows: list[Record]) -> list[dict[str, Any]]:
    """Return rows of ``notes`` as ``Note`` dicts, the way FastAPI serializes ``response_model=list[Note]``."""
    # Unpacking a record's row is the cheapest way to read it (``dict(row._mapping)`` costs ten times more).
    return [{"id": id, "text": text, "completed": completed} for id, text, completed in (row._mapping for row in rows)]


async def create_note(request: Request) -> Response:
    """Validate the body as FastAPI would, insert the note, and return it with its new id."""
    try:
        note = NoteIn.model_validate(await read_body(request), from_attributes=True)
    except ValidationError as exc:
        return validation_error(exc)
    query = notes.insert().values(text=note.text, completed=note.completed)
    last_record_id = await request.state.execute(query)
    return Response(to_json({"id": last_record_id, **note.model_dump()}), media_type="application/json")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Answer an ``HTTPException`` with FastAPI's JSON body."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """Answer a 503 when the database fails, and log why: the client learns nothing of the database."""
    logger.error("%s %s failed: the database said %r", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "Database unavailable, try again later"}, status_code=503, headers={"Retry-After": "1"}
    )


async def server_error(request: Request, exc: Exception) -> Response:
    """Answer an unexpected error with a JSON 500 (uvicorn logs its traceback), never with the traceback."""
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)


routes = [
    APIRoute("/notes/", read_notes, method="GET", response_model=list[Note]),
    APIRoute("/notes/", create_note, method="POST", body=NoteIn, response_model=Note),
]

app = Starlette(
    routes=routes + docs_routes(routes, title="Notes", version="0.1.0"),
    lifespan=lifespan,
    exception_handlers={
        HTTPException: http_exception,
        **{error: database_unavailable for error in DATABASE_ERRORS},
        Exception: server_error,
    },
)
