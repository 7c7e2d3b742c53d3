"""The CRUD example's benchmarked endpoints in the FastAPI twin's form, on the port: each statement built in its
endpoint for each request, ``notes.select().where(notes.c.id == note_id)``, where ``examples/crud_app.py`` builds its
statements once. ``make bench`` measures it in a row of its own; ``tests/test_yardstick.py`` checks its answers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from examples.crud_app import NOT_FOUND, Note, NoteIn, NotePath, ReadNotesQuery, database, lifespan, notes
from exception_handlers import exception_handlers
from routing import APIRoute, serialize_response, validate_request


async def read_notes(request: Request) -> Response:
    params: ReadNotesQuery = (await validate_request(request)).query
    query = notes.select().order_by(notes.c.id).offset(params.skip).limit(params.limit)
    if params.completed is not None:
        query = query.where(notes.c.completed == params.completed)
    return serialize_response(request, await database.fetch_all(query))


async def read_note(request: Request) -> Response:
    path: NotePath = (await validate_request(request)).path
    note = await database.fetch_one(notes.select().where(notes.c.id == path.note_id))
    if note is None:
        raise HTTPException(status_code=404, detail="Note not found")
    return serialize_response(request, note)


async def create_note(request: Request) -> Response:
    note: NoteIn = (await validate_request(request)).body
    query = notes.insert().values(text=note.text, completed=note.completed, priority=note.priority)
    last_record_id = await database.execute(query)
    return serialize_response(request, {**note.model_dump(), "id": last_record_id})


async def replace_note(request: Request) -> Response:
    params = await validate_request(request)
    path: NotePath = params.path
    note: NoteIn = params.body
    if await database.fetch_one(notes.select().where(notes.c.id == path.note_id)) is None:
        raise HTTPException(status_code=404, detail="Note not found")
    await database.execute(notes.update().where(notes.c.id == path.note_id).values(**note.model_dump()))
    return serialize_response(request, {**note.model_dump(), "id": path.note_id})


routes = [
    APIRoute("/notes/", read_notes, method="GET", query_params=ReadNotesQuery, response_model=list[Note]),
    APIRoute(
        "/notes/{note_id}", read_note, method="GET", path_params=NotePath, response_model=Note, responses=NOT_FOUND
    ),
    APIRoute("/notes/", create_note, method="POST", body=NoteIn, response_model=Note, status_code=201),
    APIRoute("/notes/{note_id}", replace_note, method="PUT", path_params=NotePath, body=NoteIn, response_model=Note),
]

app = Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)
