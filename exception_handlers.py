"""How errors are answered: FastAPI's handlers (``fastapi/exception_handlers.py``), and the port's for failures.

``exception_handlers`` is what FastAPI registers on every app, plus a 503 when the database fails or the long lists
being sent fill their spools, a 409 or 422 for data the database refuses, a quiet end for a client that left, and a
JSON 500 for a bug: ``Starlette(exception_handlers=exception_handlers)``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from responses import SpoolsFull
from routing import RequestValidationError
from storage import ConstraintConflict, DatabaseError, ParameterNotStorable, RefusedByDatabase

logger = logging.getLogger("notes_app")


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer an ``HTTPException`` (404, 405, 400, 413, or one an endpoint raises) with ``{"detail": ...}``."""
    assert isinstance(exc, HTTPException)
    if exc.status_code < 200 or exc.status_code in (204, 205, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def request_validation_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer a ``RequestValidationError`` with FastAPI's 422: ``{"detail": [{"type", "loc", "msg", "input"}]}``."""
    assert isinstance(exc, RequestValidationError)
    detail = [dict(error) for error in exc.errors()]
    for error in detail:
        if isinstance(error["input"], bytes):
            error["input"] = error["input"].decode(errors="replace")
    try:
        return JSONResponse({"detail": detail}, status_code=422)
    except (ValueError, RecursionError):
        # FastAPI answers a plain-text 500 here: NaN, Infinity or a lone surrogate in the input have no JSON form.
        return JSONResponse({"detail": [{**error, "input": None} for error in detail]}, status_code=422)


async def database_error_handler(request: Request, exc: Exception) -> Response:
    """Answer a 503 when the database fails, and log why: the client learns nothing of the database."""
    logger.error("%s %s failed: the database said %r", request.method, request.url.path, exc.__cause__ or exc)
    return JSONResponse(
        {"detail": "Database unavailable, try again later"}, status_code=503, headers={"Retry-After": "1"}
    )


async def spools_full_handler(request: Request, exc: Exception) -> Response:
    """Answer a 503 when the long lists being answered hold all the memory and disk they may: nothing else waits."""
    logger.warning("%s %s refused: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "Too many long lists being sent, try again later"}, status_code=503, headers={"Retry-After": "1"}
    )


async def client_disconnect_handler(request: Request, exc: Exception) -> Response:
    """End quietly a request whose client left before it was read: nothing was done, and no one hears the answer."""
    logger.info("%s %s: the client left before its request was read", request.method, request.url.path)
    return Response(status_code=400)


async def refused_by_database_handler(request: Request, exc: Exception) -> Response:
    """Answer data the database refused: a 409 for a conflict with a constraint, a 422 for a value that its column
    cannot hold, in FastAPI's 422 format. Nothing was stored, and the same request would be refused again: no
    ``Retry-After``."""
    assert isinstance(exc, RefusedByDatabase)
    if isinstance(exc, ConstraintConflict):
        return JSONResponse({"detail": exc.detail}, status_code=409)
    location, received = given_where(request, exc)
    error = {"type": "value_not_storable", "loc": location, "msg": exc.detail, "input": received}
    return JSONResponse({"detail": [error]}, status_code=422)


def given_where(request: Request, exc: RefusedByDatabase) -> tuple[tuple[str, ...], Any]:
    """Return where the request gave the value the database refused, and the value as received: the path or query
    parameter a statement's parameter came from, else the body (at the column, where the database names it)."""
    if isinstance(exc, ParameterNotStorable):
        for location, params in (("path", request.path_params), ("query", request.query_params)):
            for name, received in params.items():
                if received == exc.value or is_integer(received, exc.value):
                    return (location, name), received
    return ("body", exc.column) if exc.column else ("body",), None


def is_integer(received: Any, value: Any) -> bool:
    """Whether ``received``, a parameter's text, is the integer ``value``."""
    try:
        return isinstance(value, int) and isinstance(received, str) and int(received) == value
    except ValueError:
        return False


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """Answer an unexpected error with a JSON 500 (uvicorn logs its traceback), never with the traceback."""
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)


exception_handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: http_exception_handler,
    RequestValidationError: request_validation_exception_handler,
    DatabaseError: database_error_handler,
    RefusedByDatabase: refused_by_database_handler,
    SpoolsFull: spools_full_handler,
    ClientDisconnect: client_disconnect_handler,
    Exception: server_error_handler,
}
