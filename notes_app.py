"""FastAPI's "Async SQL (Relational) Databases" notes example, ported to Starlette alone.

Read it beside the FastAPI version (``tests/reference_app.py``): the sections come in the same order. What FastAPI
does without being asked is one named call away: ``routing.py`` validates requests and serializes responses,
``exception_handlers.py`` answers errors, ``schema.py`` documents the API; the ``storage`` package keeps the database
fast and its failures clean.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Annotated

import sqlalchemy
from pydantic import BaseModel
from sqlalchemy.dialects import mysql
from starlette.applications import Starlette
from starlette.config import Config
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from exception_handlers import exception_handlers
from idempotency import IdempotencyKeys
from middleware import ClientLimits
from responses import Spools
from routing import APIRoute, serialize_pages, serialize_response, validate_request
from schema import docs_routes
from storage import Database, DatabaseSelector, storable_in

config = Config(".env" if os.path.exists(".env") else None)
DATABASE_URL = config("DATABASE_URL", default="sqlite:///./test.db")
MAX_BODY_SIZE = config("MAX_BODY_SIZE", cast=int, default=1024 * 1024)
MAX_HEADER_SIZE = config("MAX_HEADER_SIZE", cast=int, default=8 * 1024)
SEND_TIMEOUT = config("SEND_TIMEOUT", cast=float, default=60.0)  # a client that takes no bytes for so long is cut off
MAX_SPOOL_MEMORY = config("MAX_SPOOL_MEMORY", cast=int, default=8 * 1024 * 1024)  # long lists being sent, in memory
MAX_SPOOL_DISK = config("MAX_SPOOL_DISK", cast=int, default=1024 * 1024 * 1024)  # and on disk, past which a 503
DATABASE_TIMEOUT = config("DATABASE_TIMEOUT", cast=float, default=10.0)
DATABASE_REPLICA_URL = config("DATABASE_REPLICA_URL", default=None)  # PostgreSQL's read replicas, for GET requests
DATABASE_REPLICA_MAX_LAG = config("DATABASE_REPLICA_MAX_LAG", cast=float, default=1.0)
IDEMPOTENCY_TTL = config("IDEMPOTENCY_TTL", cast=float, default=24 * 60 * 60)  # how long a key's answer is kept

database = Database(
    DATABASE_URL,
    timeout=DATABASE_TIMEOUT,
    replica_url=DATABASE_REPLICA_URL,
    replica_max_lag=DATABASE_REPLICA_MAX_LAG,
)

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

idempotency_keys = IdempotencyKeys(database, metadata, ttl=IDEMPOTENCY_TTL)  # the port's own: a retry's answer


class NoteIn(BaseModel):
    text: Annotated[str, storable_in(database)]
    completed: bool


class Note(BaseModel):
    id: int
    text: str
    completed: bool


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await database.connect()
    await database.create_all(metadata)  # FastAPI's version: metadata.create_all(engine), at import
    gc.freeze()  # What start-up made lives as long as the process: spare it the garbage collector's full passes.
    yield
    await database.disconnect()


async def read_notes(request: Request) -> Response:
    query = notes.select()
    return await serialize_pages(request, database.iterate_pages(query))  # FastAPI's version: fetch_all, in memory


async def create_note(request: Request) -> Response:
    note: NoteIn = (await validate_request(request)).body
    query = notes.insert()  # FastAPI's version: notes.insert().values(...); apart, no SQL is compiled per note
    values = {"text": note.text, "completed": note.completed}
    last_record_id = await database.execute(query=query, values=values)
    return serialize_response(request, {**note.model_dump(), "id": last_record_id})


routes = [
    APIRoute("/notes/", read_notes, method="GET", response_model=list[Note]),
    APIRoute("/notes/", create_note, method="POST", body=NoteIn, response_model=Note, idempotency=idempotency_keys),
]

app = ClientLimits(
    Starlette(
        routes=routes + docs_routes(routes, title="Notes", version="0.1.0"),
        middleware=[Middleware(DatabaseSelector)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    ),
    max_body_size=MAX_BODY_SIZE,
    max_header_size=MAX_HEADER_SIZE,
    send_timeout=SEND_TIMEOUT,
    spools=Spools(memory=MAX_SPOOL_MEMORY, disk=MAX_SPOOL_DISK),
)
