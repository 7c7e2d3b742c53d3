"""A throwaway FastAPI app that grows the notes example: path and query parameters, a 404, one more field.

Its twin, ``tests/throwaway_app.py``, is built with the port's machinery; ``tests/test_throwaway.py`` compares them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import databases
import sqlalchemy
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

DATABASE_URL = os.environ["THROWAWAY_REFERENCE_DATABASE_URL"]

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


class Note(BaseModel):
    id: int
    text: str
    completed: bool
    priority: int


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await database.connect()
    await database.execute(sqlalchemy.schema.CreateTable(notes, if_not_exists=True))
    yield
    await database.disconnect()


app = FastAPI(lifespan=lifespan)


@app.get("/notes/", response_model=list[Note])
async def read_notes(skip: int = 0, limit: int = 100, completed: bool | None = None) -> Any:
    query = notes.select().order_by(notes.c.id).offset(skip).limit(limit)
    if completed is not None:
        query = query.where(notes.c.completed == completed)
    return await database.fetch_all(query)


@app.get("/notes/{note_id}", response_model=Note)
async def read_note(note_id: int) -> Any:
    query = notes.select().where(notes.c.id == note_id)
    note = await database.fetch_one(query)
    if note is None:
        raise HTTPException(status_code=404, detail="Note not found")
    return note


@app.get("/search/", response_model=list[Note])
async def search_notes(q: str, limit: int | None = None) -> Any:
    query = notes.select().where(notes.c.text.like(f"%{q}%")).order_by(notes.c.id).limit(limit)
    return await database.fetch_all(query)


@app.post("/notes/", response_model=Note)
async def create_note(note: NoteIn) -> Any:
    query = notes.insert().values(text=note.text, completed=note.completed, priority=note.priority)
    last_record_id = await database.execute(query)
    return {**note.model_dump(), "id": last_record_id}
