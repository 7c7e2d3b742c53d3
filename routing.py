"""What FastAPI's routes do around an endpoint (``fastapi/routing.py``), as calls a Starlette endpoint makes.

FastAPI reads an endpoint's signature and, for each request, validates its path and query parameters and its body,
then validates and serializes what it returns through its ``response_model``. Here the endpoint makes each of those
steps itself, with one call each: ``validate_path``, ``validate_query``, ``validate_body``, then
``serialize_response`` or, for a list that comes in pages, ``stream_response``. ``APIRoute`` declares the same
things for the OpenAPI document (``schema.py``).
"""

from __future__ import annotations

import email.message
import functools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any, TypeVar, get_args, get_origin

from databases.interfaces import Record
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypedDict

Model = TypeVar("Model", bound=BaseModel)


class RequestValidationError(Exception):
    """The request's parameters or body are not valid: FastAPI's 422, with its ``errors()``."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__(errors)
        self._errors = errors

    def errors(self) -> Sequence[Any]:
        return self._errors


class APIRoute(Route):
    """A ``Route`` that declares, like FastAPI's decorators, its parameters, request body and response model."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        method: str,
        path_params: type[BaseModel] | None = None,
        query_params: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        response_model: Any = None,
        status_code: int = 200,
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        # Starlette adds HEAD to a GET route; FastAPI does not, and answers HEAD with a 405.
        self.method = method.upper()
        self.methods = {self.method}
        self.path_params = path_params
        self.query_params = query_params
        self.body = body
        self.response_model = response_model
        self.status_code = status_code


def validate_params(location: str, model: type[Model], received: dict[str, str]) -> Model:
    """Validate the parameters found in ``location`` with ``model``, as FastAPI validates each parameter."""
    try:
        return model.model_validate(received)
    except ValidationError as exc:
        errors = [{**error, "loc": (location, *error["loc"])} for error in exc.errors(include_url=False)]
        for error in errors:
            if error["type"] == "missing":
                error["input"] = None  # FastAPI validates each parameter alone: a missing one has no input.
        raise RequestValidationError(errors) from None


def validate_path(request: Request, model: type[Model]) -> Model:
    """Return the path parameters validated with ``model`` (FastAPI: ``note_id: int`` for ``/notes/{note_id}``)."""
    return validate_params("path", model, request.path_params)


def validate_query(request: Request, model: type[Model]) -> Model:
    """Return the query parameters validated with ``model`` (FastAPI: ``skip: int = 0``); the last value counts."""
    return validate_params("query", model, dict(request.query_params))


async def validate_body(request: Request, model: type[Model]) -> Model:
    """Return the body validated with ``model``, read and decoded as FastAPI reads a body parameter ``note: NoteIn``.

    FastAPI decodes the body as JSON only for a JSON content type (``application/json``, ``*/*+json``) and hands any
    other body to the model as bytes; an empty body is ``missing`` and bad JSON ``json_invalid``, with its position.
    """
    body = await request.body()
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    content: Any = body
    if is_json(request.headers.get("content-type", "")):
        try:
            content = json.loads(body)
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
            raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}]) from None
        except (ValueError, RecursionError):  # Not UTF-8, or nested too deep.
            raise HTTPException(status_code=400, detail="There was an error parsing the body") from None
    try:
        return model.model_validate(content, from_attributes=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors]) from None


@functools.lru_cache(maxsize=64)
def is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of ``content_type`` as JSON: ``application/json`` or ``application/*+json``."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


@functools.cache
def response_adapter(response_model: Any) -> TypeAdapter[Any]:
    """Return what validates and serializes content as ``response_model``, built once per model.

    A model with no validators, serializers or configuration of its own is validated as a ``TypedDict`` of its
    fields: the same JSON, without building a model instance for each row of a long list.
    """
    return TypeAdapter(as_typed_dict(response_model))


def as_typed_dict(annotation: Any) -> Any:
    """Return ``annotation`` with plain models, alone or in a list, replaced by ``TypedDict``s of their fields."""
    if get_origin(annotation) is list:
        return list[as_typed_dict(get_args(annotation)[0])]  # type: ignore[misc]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and is_plain(annotation):
        fields = {name: Annotated[field.annotation, field] for name, field in annotation.model_fields.items()}
        return TypedDict(annotation.__name__, fields)  # type: ignore[operator]
    return annotation


def is_plain(model: type[BaseModel]) -> bool:
    decorators = model.__pydantic_decorators__
    behaviours = [decorators.validators, decorators.field_validators, decorators.root_validators]
    behaviours += [decorators.field_serializers, decorators.model_serializers, decorators.model_validators]
    behaviours += [decorators.computed_fields, model.model_config]
    return not any(behaviours) and all(not field.alias for field in model.model_fields.values())


def as_content(value: Any) -> Any:
    """Return ``databases`` records, alone or in a list, as the dicts they hold, which a ``TypedDict`` reads."""
    if isinstance(value, Record):
        return {key: value[key] for key in value._mapping.keys()}
    if isinstance(value, list) and value and isinstance(value[0], Record):
        return [as_content(record) for record in value]
    return value


def dump_json(adapter: TypeAdapter[Any], content: Any) -> bytes:
    return adapter.dump_json(adapter.validate_python(as_content(content), from_attributes=True))


def serialize_response(response_model: Any, response_content: Any, status_code: int = 200) -> Response:
    """Answer ``response_content`` as JSON through ``response_model``: what the model does not declare is not sent."""
    content = dump_json(response_adapter(response_model), response_content)
    return Response(content, status_code=status_code, media_type="application/json")


async def stream_response(response_model: Any, pages: AsyncIterator[list[Any]]) -> Response:
    """Answer a list that comes in ``pages`` as ``serialize_response`` would, and page by page if there are several.

    The bytes are the same either way; a list of several pages goes out with chunked transfer encoding, and memory
    holds the bytes of one page at a time, however long the list.
    """
    adapter = response_adapter(response_model)
    first = dump_json(adapter, await anext(pages, []))
    try:
        second = dump_json(adapter, await anext(pages))
    except StopAsyncIteration:
        return Response(first, media_type="application/json")
    return StreamingResponse(join_arrays(adapter, [first, second], pages), media_type="application/json")


async def join_arrays(
    adapter: TypeAdapter[Any], arrays: list[bytes], pages: AsyncIterator[Any]
) -> AsyncIterator[bytes]:
    """Yield the items of the JSON ``arrays``, then of the ``pages`` serialized, as one JSON array."""
    separator = b"["
    while arrays:
        yield separator + arrays.pop(0)[1:-1]
        separator = b","
    async for page in pages:
        chunk = b"," + dump_json(adapter, page)[1:-1]
        del page  # Let the rows go while the client takes the bytes.
        yield chunk
    yield b"]"


class LimitRequestBody:
    """Refuse a request body over ``max_size`` bytes with a 413: unread if its length says so, else once over."""

    def __init__(self, app: ASGIApp, max_size: int) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            if not received and int(Headers(scope=scope).get("content-length") or 0) > self.max_size:
                raise HTTPException(status_code=413, detail="Content Too Large")
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_size:
                raise HTTPException(status_code=413, detail="Content Too Large")
            return message

        await self.app(scope, receive_limited, send)
