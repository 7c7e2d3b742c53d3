"""The twin of ``tests/throwaway_reference_app.py``, built with the port's machinery as a user would build it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import sqlalchemy
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from exception_handlers import exception_handlers
from routing import APIRoute, serialize_response, validate_body, validate_path, validate_query
from schema import docs_routes
from storage import Database

DATABASE_URL = os.environ["THROWAWAY_DATABASE_URL"]

database = Database(DATABASE_URL)

metadata = sqlalchemy.MetaData()

notes = sqlalchemy.Table(
    "notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String(200)),
    sqlalchemy.Column("completed", sqlalchemy.Boolean),
    sqlalchemy.Column("priority", sqlalchemy.Integer),
)


class NoteIn(BaseModel):
    text: str
    completed: bool
    priority: int = 0


class Note(BaseModel):
    id: int
    text: str
    completed: bool
    priority: int


class ReadNotesQuery(BaseModel):
    skip: int = 0
    limit: int = 100
    completed: bool | None = None


class NotePath(BaseModel):
    note_id: int


class SearchQuery(BaseModel):
    q: str
    limit: int | None = None


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await database.connect()
    await database.create_all(metadata)
    yield
    await database.disconnect()


async def read_notes(request: Request) -> Response:
    params = validate_query(request, ReadNotesQuery)
    query = notes.select().order_by(notes.c.id).offset(params.skip).limit(params.limit)
    if params.completed is not None:
        query = query.where(notes.c.completed == params.completed)
    return serialize_response(list[Note], await database.fetch_all(query))


async def read_note(request: Request) -> Response:
    params = validate_path(request, NotePath)
    query = notes.select().where(notes.c.id == params.note_id)
    note = await database.fetch_one(query)
    if note is None:
        raise HTTPException(status_code=404, detail="Note not found")
    return serialize_response(Note, note)


async def search_notes(request: Request) -> Response:
    params = validate_query(request, SearchQuery)
    query = notes.select().where(notes.c.text.like(f"%{params.q}%")).order_by(notes.c.id)
    return serialize_response(list[Note], await database.fetch_all(query.limit(params.limit)))


async def create_note(request: Request) -> Response:
    note = await validate_body(request, NoteIn)
    query = notes.insert()
    values = {"text": note.text, "completed": note.completed, "priority": note.priority}
    last_record_id = await database.execute(query=query, values=values)
    return serialize_response(Note, {**note.model_dump(), "id": last_record_id})


routes = [
    APIRoute("/notes/", read_notes, method="GET", query_params=ReadNotesQuery, response_model=list[Note]),
    APIRoute("/notes/{note_id}", read_note, method="GET", path_params=NotePath, response_model=Note),
    APIRoute("/search/", search_notes, method="GET", query_params=SearchQuery, response_model=list[Note]),
    APIRoute("/notes/", create_note, method="POST", body=NoteIn, response_model=Note),
]

app = Starlette(
    routes=routes + docs_routes(routes, title="FastAPI", version="0.1.0"),
    exception_handlers=exception_handlers,
    lifespan=lifespan,
)
