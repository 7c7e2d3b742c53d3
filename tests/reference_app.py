"""The FastAPI counterpart, as close to the original example as current FastAPI allows.

Changes from the original: ``DATABASE_URL`` comes from ``REFERENCE_DATABASE_URL``, so that each test
has its own file; the sync engine that creates the table runs on SQLite only (the benchmark creates
the table itself on PostgreSQL), and is disposed of once it has (the tests load the app many times: an engine
left open is a ``ResourceWarning`` on Python 3.13); ``note.dict()`` is ``note.model_dump()`` (Pydantic 2); the startup
and shutdown handlers are a ``lifespan`` (``on_event`` is deprecated).
"""

import os
from contextlib import asynccontextmanager
from typing import List

import databases
import sqlalchemy
from fastapi import FastAPI
from pydantic import BaseModel

# SQLAlchemy specific code, as with any other app
DATABASE_URL = os.environ.get("REFERENCE_DATABASE_URL", "sqlite:///./test.db")
# DATABASE_URL = "postgresql://user:password@postgresserver/db"

database = databases.Database(DATABASE_URL)

metadata = sqlalchemy.MetaData()

notes = sqlalchemy.Table(
    "notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String),
    sqlalchemy.Column("completed", sqlalchemy.Boolean),
)


if DATABASE_URL.startswith("sqlite"):  # The benchmark creates the table itself on PostgreSQL.
    engine = sqlalchemy.create_engine(DATABASE_URL, connect_args={"check_same_thread": False})
    metadata.create_all(engine)
    engine.dispose()


class NoteIn(BaseModel):
    text: str
    completed: bool


class Note(BaseModel):
    id: int
    text: str
    completed: bool


@asynccontextmanager
async def lifespan(app: FastAPI):
    await database.connect()
    yield
    await database.disconnect()


app = FastAPI(lifespan=lifespan)


@app.get("/notes/", response_model=List[Note])
async def read_notes():
    query = notes.select()
    return await database.fetch_all(query)


@app.post("/notes/", response_model=Note)
async def create_note(note: NoteIn):
    query = notes.insert().values(text=note.text, completed=note.completed)
    last_record_id = await database.execute(query)
    return {**note.model_dump(), "id": last_record_id}
