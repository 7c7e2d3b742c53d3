"""The distance on PostgreSQL: the notes API on a bare asyncpg pool, with no databases, SQLAlchemy or Pydantic."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

pool: Any = None


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    async with asyncpg.create_pool(os.environ["DATABASE_URL"]) as pool:
        yield


async def read_notes(request: Request) -> Response:
    rows = await pool.fetch("SELECT id, text, completed FROM notes ORDER BY id")
    return Response(to_json([dict(row) for row in rows]), media_type="application/json")


async def create_note(request: Request) -> Response:
    note = json.loads(await request.body())
    query = "INSERT INTO notes (text, completed) VALUES ($1, $2) RETURNING id"
    note_id = await pool.fetchval(query, note["text"], note["completed"])
    return Response(to_json({"id": note_id, **note}), media_type="application/json")


app = Starlette(
    routes=[Route("/notes/", read_notes, methods=["GET"]), Route("/notes/", create_note, methods=["POST"])],
    lifespan=lifespan,
)
