"""The twin of ``examples/crud_fastapi_app.py``, built with the port's machinery as a user would build it."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy
from pydantic import BaseModel, Field
from sqlalchemy import bindparam
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from exception_handlers import exception_handlers
from routing import APIRoute, serialize_response, validate_request
from schema import docs_routes
from storage import Database

DATABASE_URL = os.environ["CRUD_DATABASE_URL"]

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

# Each statement built once: a call binds its values by name (SQLAlchemy's bindparam()), so that no statement is built
# for a request. The FastAPI twin builds them in its endpoints, notes.select().where(notes.c.id == note_id); that form
# works here too.
notes_page = notes.select().order_by(notes.c.id).offset(bindparam("skip")).limit(bindparam("limit"))
notes_page_by_state = notes_page.where(notes.c.completed == bindparam("completed"))
note_by_id = notes.select().where(notes.c.id == bindparam("note_id"))
notes_like = notes.select().where(notes.c.text.like(bindparam("pattern"))).order_by(notes.c.id)
notes_like_limited = notes_like.limit(bindparam("limit"))
add_note = notes.insert()
change_note = notes.update().where(notes.c.id == bindparam("note_id"))
remove_note = notes.delete().where(notes.c.id == bindparam("note_id"))


class NoteIn(BaseModel):
    text: str
    completed: bool
    priority: int = 0


class NoteUpdate(BaseModel):
    text: str | None = None
    completed: bool | None = None
    priority: int | None = None


class Note(BaseModel):
    id: int
    text: str
    completed: bool
    priority: int


class Message(BaseModel):
    detail: str


class ReadNotesQuery(BaseModel):  # FastAPI: skip: Annotated[int, Query(ge=0)] = 0, ...
    skip: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=100)
    completed: bool | None = None


class NotePath(BaseModel):  # FastAPI: note_id: int
    note_id: int


class SearchQuery(BaseModel):
    q: str
    limit: int | None = None


class CreateHeaders(BaseModel):  # FastAPI: x_request_source: Annotated[str | None, Header()] = None
    x_request_source: str | None = None


class UpdateHeaders(BaseModel):
    x_author: str


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await database.connect()
    await database.create_all(metadata)
    gc.freeze()
    yield
    await database.disconnect()


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message, "description": "No note has this id"}}


async def read_notes(request: Request) -> Response:
    """List the notes, oldest first.

    Filter them with ``completed``.
    \f
    Everything after the form feed is for the code's readers only.
    """
    params: ReadNotesQuery = (await validate_request(request)).query
    if params.completed is None:
        notes_read = await database.fetch_all(notes_page, {"skip": params.skip, "limit": params.limit})
    else:
        notes_read = await database.fetch_all(notes_page_by_state, params.model_dump())
    return serialize_response(request, notes_read)


async def find_note(note_id: int) -> Any:
    note = await database.fetch_one(note_by_id, {"note_id": note_id})
    if note is None:
        raise HTTPException(status_code=404, detail="Note not found")
    return note


async def read_note(request: Request) -> Response:
    path: NotePath = (await validate_request(request)).path
    return serialize_response(request, await find_note(path.note_id))


async def search_notes(request: Request) -> Response:
    params: SearchQuery = (await validate_request(request)).query
    pattern = f"%{params.q}%"
    if params.limit is None:
        return serialize_response(request, await database.fetch_all(notes_like, {"pattern": pattern}))
    found = await database.fetch_all(notes_like_limited, {"pattern": pattern, "limit": params.limit})
    return serialize_response(request, found)


async def create_note(request: Request) -> Response:
    note: NoteIn = (await validate_request(request)).body
    values = {"text": note.text, "completed": note.completed, "priority": note.priority}
    last_record_id = await database.execute(query=add_note, values=values)
    return serialize_response(request, {**note.model_dump(), "id": last_record_id})


async def replace_note(request: Request) -> Response:
    params = await validate_request(request)
    path: NotePath = params.path
    note: NoteIn = params.body
    await find_note(path.note_id)
    await database.execute(change_note, {"note_id": path.note_id, **note.model_dump()})
    return serialize_response(request, {**note.model_dump(), "id": path.note_id})


async def update_note(request: Request) -> Response:
    params = await validate_request(request)
    path: NotePath = params.path
    note: NoteUpdate = params.body
    stored = await find_note(path.note_id)
    changes = note.model_dump(exclude_unset=True)
    if changes:
        await database.execute(change_note, {"note_id": path.note_id, **changes})
    return serialize_response(request, {**stored._mapping, **changes})


async def delete_note(request: Request) -> Response:
    path: NotePath = (await validate_request(request)).path
    await find_note(path.note_id)
    await database.execute(remove_note, {"note_id": path.note_id})
    return serialize_response(request, None)


async def read_notes_legacy(request: Request) -> Response:
    return serialize_response(request, await database.fetch_all(notes.select().order_by(notes.c.id)))


async def health(request: Request) -> Response:
    return serialize_response(request, {"status": "ok"})


routes = [
    APIRoute(
        "/notes/", read_notes, method="GET", query_params=ReadNotesQuery, response_model=list[Note], tags=["notes"]
    ),
    APIRoute(
        "/notes/{note_id}",
        read_note,
        method="GET",
        path_params=NotePath,
        response_model=Note,
        tags=["notes"],
        responses=NOT_FOUND,
    ),
    APIRoute(
        "/search/",
        search_notes,
        method="GET",
        query_params=SearchQuery,
        response_model=list[Note],
        tags=["search"],
        summary="Find notes by their text",
    ),
    APIRoute(
        "/notes/",
        create_note,
        method="POST",
        header_params=CreateHeaders,
        body=NoteIn,
        response_model=Note,
        status_code=201,
        tags=["notes"],
        response_description="The note, with its id",
        description="Create a note.",
    ),
    APIRoute(
        "/notes/{note_id}",
        replace_note,
        method="PUT",
        path_params=NotePath,
        body=NoteIn,
        response_model=Note,
        tags=["notes"],
        responses=NOT_FOUND,
    ),
    APIRoute(
        "/notes/{note_id}",
        update_note,
        method="PATCH",
        path_params=NotePath,
        header_params=UpdateHeaders,
        body=NoteUpdate,
        response_model=Note,
        tags=["notes"],
        responses=NOT_FOUND,
    ),
    APIRoute(
        "/notes/{note_id}",
        delete_note,
        method="DELETE",
        path_params=NotePath,
        status_code=204,
        tags=["notes"],
        responses=NOT_FOUND,
    ),
    APIRoute(
        "/legacy/notes/", read_notes_legacy, method="GET", response_model=list[Note], tags=["notes"], deprecated=True
    ),
    APIRoute("/health", health, method="GET", include_in_schema=False),
]

app = Starlette(
    routes=routes + docs_routes(routes, title="FastAPI", version="0.1.0"),
    exception_handlers=exception_handlers,
    lifespan=lifespan,
)
