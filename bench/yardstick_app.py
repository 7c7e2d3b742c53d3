"""The yardstick: the CRUD example's benchmarked endpoints on Starlette alone, straight on the drivers.

What a reader could write instead of the port: aiosqlite with one connection in WAL mode (each commit on disk before
it returns, as the port's), or an asyncpg pool; path and query parameters parsed by hand; bodies and answers through
Pydantic ``TypeAdapter``s; the FastAPI twin's SQL statements, one for one; its answers, byte for byte
(``tests/test_yardstick.py``). None of the port's guarantees: no deadlines, no clean 503s, no group commit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DATABASE_URL = os.environ["YARDSTICK_DATABASE_URL"]
COLUMNS = "id, text, completed, priority"


class NoteIn(BaseModel):
    text: str
    completed: bool
    priority: int = 0


class Note(BaseModel):
    id: int
    text: str
    completed: bool
    priority: int


note_in = TypeAdapter(NoteIn)
note = TypeAdapter(Note)
note_list = TypeAdapter(list[Note])
NOT_FOUND = Response(b'{"detail":"Note not found"}', status_code=404, media_type="application/json")


class SQLite:
    """One aiosqlite connection in WAL mode, each statement its own transaction."""

    async def connect(self) -> None:
        import aiosqlite

        self.connection = await aiosqlite.connect(DATABASE_URL.removeprefix("sqlite:///"), isolation_level=None)
        await self.connection.execute("PRAGMA journal_mode = WAL")
        await self.connection.execute("PRAGMA synchronous = FULL")

    async def disconnect(self) -> None:
        await self.connection.close()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.connection.execute_fetchall(sql, args))

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.connection.execute(sql, args) as cursor:
            return cursor.lastrowid or 0


class PostgreSQL:
    """An asyncpg pool."""

    async def connect(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(DATABASE_URL)

    async def disconnect(self) -> None:
        await self.pool.close()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.pool.fetch(sql, *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> int:
        key: int = await self.pool.fetchval(sql, *args)
        return key


database = SQLite() if DATABASE_URL.startswith("sqlite") else PostgreSQL()
SELECT_PAGE = f"SELECT {COLUMNS} FROM notes ORDER BY id LIMIT ? OFFSET ?"
SELECT_ONE = f"SELECT {COLUMNS} FROM notes WHERE id = ?"
UPDATE = "UPDATE notes SET text = ?, completed = ?, priority = ? WHERE id = ?"
INSERT = "INSERT INTO notes (text, completed, priority) VALUES (?, ?, ?)"


def numbered(sql: str) -> str:
    """Return ``sql`` with asyncpg's placeholders, ``$1``, ``$2``..., for its ``?``."""
    parts = sql.split("?")
    return "".join(f"{part}${index}" for index, part in enumerate(parts[:-1], 1)) + parts[-1]


if isinstance(database, PostgreSQL):
    SELECT_PAGE, SELECT_ONE, UPDATE = numbered(SELECT_PAGE), numbered(SELECT_ONE), numbered(UPDATE)
    INSERT = numbered(INSERT) + " RETURNING id"


def rows_as_notes(rows: list[Any]) -> list[dict[str, Any]]:
    return [{"id": key, "text": text, "completed": done, "priority": priority} for key, text, done, priority in rows]


def json_response(content: bytes, status_code: int = 200) -> Response:
    return Response(content, status_code=status_code, media_type="application/json")


def invalid(exc: ValidationError) -> Response:
    return json_response(b'{"detail":' + exc.json(include_url=False).encode() + b"}", 422)


def with_note_id(endpoint: Callable[[Request, int], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def parsed(request: Request) -> Response:
        try:
            note_id = int(request.path_params["note_id"])
        except ValueError:
            return json_response(b'{"detail":"note_id must be an integer"}', 422)
        return await endpoint(request, note_id)

    return parsed


async def read_notes(request: Request) -> Response:
    query = request.query_params
    try:
        skip, limit = int(query.get("skip", 0)), int(query.get("limit", 100))
    except ValueError:
        return json_response(b'{"detail":"skip and limit must be integers"}', 422)
    rows = await database.fetch(SELECT_PAGE, limit, skip)
    return json_response(note_list.dump_json(note_list.validate_python(rows_as_notes(rows))))


@with_note_id
async def read_note(request: Request, note_id: int) -> Response:
    rows = await database.fetch(SELECT_ONE, note_id)
    if not rows:
        return NOT_FOUND
    return json_response(note.dump_json(note.validate_python(rows_as_notes(rows)[0])))


async def create_note(request: Request) -> Response:
    try:
        created = note_in.validate_json(await request.body())
    except ValidationError as exc:
        return invalid(exc)
    key = await database.execute(INSERT, created.text, created.completed, created.priority)
    return json_response(note.dump_json(Note(id=key, **created.model_dump())), 201)


@with_note_id
async def replace_note(request: Request, note_id: int) -> Response:
    try:
        replaced = note_in.validate_json(await request.body())
    except ValidationError as exc:
        return invalid(exc)
    if not await database.fetch(SELECT_ONE, note_id):
        return NOT_FOUND
    await database.execute(UPDATE, replaced.text, replaced.completed, replaced.priority, note_id)
    return json_response(note.dump_json(Note(id=note_id, **replaced.model_dump())))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await database.connect()
    yield
    await database.disconnect()


app = Starlette(
    routes=[
        Route("/notes/", read_notes, methods=["GET"]),
        Route("/notes/", create_note, methods=["POST"]),
        Route("/notes/{note_id}", read_note, methods=["GET"]),
        Route("/notes/{note_id}", replace_note, methods=["PUT"]),
    ],
    lifespan=lifespan,
)
