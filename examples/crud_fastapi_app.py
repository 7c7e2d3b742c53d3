"""A FastAPI app that grows the notes example to a CRUD API: one more field, path, query and header
parameters, a 201 on create, a 404 documented through ``responses``, a 204 on delete, tags and docstrings.

Its twin, ``examples/crud_app.py``, is built with the port's machinery; ``tests/test_crud_example.py`` compares them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import databases
import sqlalchemy
from fastapi import FastAPI, Header, HTTPException, Query
from pydantic import BaseModel

DATABASE_URL = os.environ["CRUD_FASTAPI_DATABASE_URL"]

database = databases.Database(DATABASE_URL)

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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await database.connect()
    await database.execute(sqlalchemy.schema.CreateTable(notes, if_not_exists=True))
    yield
    await database.disconnect()


app = FastAPI(lifespan=lifespan)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message, "description": "No note has this id"}}


@app.get("/notes/", response_model=list[Note], tags=["notes"])
async def read_notes(
    skip: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    completed: bool | None = None,
) -> Any:
    """List the notes, oldest first.

    Filter them with ``completed``.
    \f
    Everything after the form feed is for the code's readers only.
    """
    query = notes.select().order_by(notes.c.id).offset(skip).limit(limit)
    if completed is not None:
        query = query.where(notes.c.completed == completed)
    return await database.fetch_all(query)


@app.get("/notes/{note_id}", response_model=Note, tags=["notes"], responses=NOT_FOUND)
async def read_note(note_id: int) -> Any:
    query = notes.select().where(notes.c.id == note_id)
    note = await database.fetch_one(query)
    if note is None:
        raise HTTPException(status_code=404, detail="Note not found")
    return note


@app.get("/search/", response_model=list[Note], tags=["search"], summary="Find notes by their text")
async def search_notes(q: str, limit: int | None = None) -> Any:
    query = notes.select().where(notes.c.text.like(f"%{q}%")).order_by(notes.c.id).limit(limit)
    return await database.fetch_all(query)


@app.post(
    "/notes/",
    response_model=Note,
    status_code=201,
    tags=["notes"],
    response_description="The note, with its id",
    description="Create a note.",
)
async def create_note(note: NoteIn, x_request_source: Annotated[str | None, Header()] = None) -> Any:
    query = notes.insert().values(text=note.text, completed=note.completed, priority=note.priority)
    last_record_id = await database.execute(query)
    return {**note.model_dump(), "id": last_record_id}


@app.put("/notes/{note_id}", response_model=Note, tags=["notes"], responses=NOT_FOUND)
async def replace_note(note_id: int, note: NoteIn) -> Any:
    if await database.fetch_one(notes.select().where(notes.c.id == note_id)) is None:
        raise HTTPException(status_code=404, detail="Note not found")
    await database.execute(notes.update().where(notes.c.id == note_id).values(**note.model_dump()))
    return {**note.model_dump(), "id": note_id}


@app.patch("/notes/{note_id}", response_model=Note, tags=["notes"], responses=NOT_FOUND)
async def update_note(note_id: int, note: NoteUpdate, x_author: Annotated[str, Header()]) -> Any:
    stored = await database.fetch_one(notes.select().where(notes.c.id == note_id))
    if stored is None:
        raise HTTPException(status_code=404, detail="Note not found")
    changes = note.model_dump(exclude_unset=True)
    if changes:
        await database.execute(notes.update().where(notes.c.id == note_id).values(**changes))
    return {**stored._mapping, **changes}


@app.delete("/notes/{note_id}", status_code=204, tags=["notes"], responses=NOT_FOUND)
async def delete_note(note_id: int) -> None:
    if await database.fetch_one(notes.select().where(notes.c.id == note_id)) is None:
        raise HTTPException(status_code=404, detail="Note not found")
    await database.execute(notes.delete().where(notes.c.id == note_id))


@app.get("/legacy/notes/", response_model=list[Note], tags=["notes"], deprecated=True)
async def read_notes_legacy() -> Any:
    return await database.fetch_all(notes.select().order_by(notes.c.id))


@app.get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok"}
