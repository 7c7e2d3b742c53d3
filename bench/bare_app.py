"""The framework's ceiling: Starlette answering the 10-row GET from memory, with no database."""

from __future__ import annotations

from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = to_json([{"id": index, "text": f"note number {index}", "completed": index % 2 == 0} for index in range(10)])


async def read_notes(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/notes/", read_notes)])
