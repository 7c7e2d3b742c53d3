"""What FastAPI's routes do around an endpoint (``fastapi/routing.py``), as calls a Starlette endpoint makes.

FastAPI reads an endpoint's signature and, for each request, validates its path, query and header parameters and
its body, then validates and serializes what it returns through its ``response_model``, with the route's status
code. Here ``APIRoute`` declares those things once, and the endpoint makes each step itself, with one call each:
``validate_request``, then ``serialize_response`` or, for a list that comes in pages, ``serialize_pages``.
``schema.py`` documents the same declarations.
"""

from __future__ import annotations

import contextlib
import email.message
import functools
import inspect
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Annotated, Any, NamedTuple, get_args, get_origin

from databases.interfaces import Record
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp
from typing_extensions import TypedDict

from responses import SpooledResponse, default_spools

logger = logging.getLogger("notes_app")


class RequestValidationError(Exception):
    """The request's parameters or body are not valid: FastAPI's 422, with its ``errors()``."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__(errors)
        self._errors = errors

    def errors(self) -> Sequence[Any]:
        return self._errors


class APIRoute(Route):
    """A ``Route`` that declares, like FastAPI's decorators, what it takes and answers, and how it is documented.

    ``validate_request`` validates what the route takes, and ``serialize_response`` answers with its ``status_code``
    through its ``response_model``; ``schema.py`` documents it, with FastAPI's defaults for what is not given.
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        method: str,
        path_params: type[BaseModel] | None = None,
        query_params: type[BaseModel] | None = None,
        header_params: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        response_model: Any = None,
        status_code: int = 200,
        tags: list[str] | None = None,
        summary: str | None = None,
        description: str | None = None,
        response_description: str = "Successful Response",
        responses: dict[int | str, dict[str, Any]] | None = None,
        deprecated: bool | None = None,
        include_in_schema: bool = True,
        idempotency: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        super().__init__(path, endpoint, methods=[method], include_in_schema=include_in_schema)
        if idempotency is not None:  # the port's own, IdempotencyKeys: FastAPI has no Idempotency-Key
            self.app = idempotency(self.app)
        # Starlette adds HEAD to a GET route; FastAPI does not, and answers HEAD with a 405.
        self.method = method.upper()
        self.methods = {self.method}
        declared = {"path": path_params, "query": query_params, "header": header_params}
        self.params = {location: model for location, model in declared.items() if model is not None}
        self.body = body
        self.response_model = response_model
        self.status_code = status_code
        self.tags = tags or []
        self.summary = summary
        # FastAPI's: the docstring, up to a form feed, when no description is given.
        self.description = (description or inspect.cleandoc(endpoint.__doc__ or "")).split("\f")[0].strip()
        self.response_description = response_description
        self.responses = responses or {}
        self.deprecated = deprecated


class RequestParams(NamedTuple):
    """What a request brings, validated with the models its route declares (``None`` where it declares none)."""

    path: Any
    query: Any
    headers: Any
    body: Any


async def validate_request(request: Request) -> RequestParams:
    """Return what the request's ``APIRoute`` takes, validated, as FastAPI validates an endpoint's parameters.

    The body is read first: JSON that does not parse is answered alone (``json_invalid``, with its position), a body
    that cannot be read with a 400. Then the path, query and header parameters and the body are validated, and their
    errors raised together, in that order, each located at ``["path", name]``, ``["query", name]``,
    ``["header", name]`` or ``["body", ...]``.
    """
    route = request.scope["route"]
    assert isinstance(route, APIRoute), "validate_request() serves the endpoints of APIRoutes"
    body = await body_from_json(request, route.body) if route.body is not None else None
    content = await read_body(request) if route.body is not None and body is None else PydanticUndefined
    found: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for location, model in route.params.items():  # path, query, header: in FastAPI's order
        found[location], location_errors = validate_params(request, location, model)
        errors += location_errors
    if route.body is not None and body is None:
        if content is PydanticUndefined:
            errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
        else:
            try:
                body = validated(route.body, content, from_attributes=True)
            except ValidationError as exc:
                errors += [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return RequestParams(found.get("path"), found.get("query"), found.get("header"), body)


def validate_params(request: Request, location: str, model: type[BaseModel]) -> tuple[Any, list[dict[str, Any]]]:
    """Return the request's parameters found in ``location`` validated with ``model`` and no errors, or ``None`` and
    the errors.

    The last value of a repeated query parameter counts, the first of a repeated header. A header is looked up by its
    field's name with underscores as hyphens, case-insensitively (FastAPI's ``Header()``), and its errors are located
    by that header name.
    """
    received: Mapping[str, Any]
    if location == "path":
        received = request.path_params
    elif location == "query":
        received = dict(request.query_params)
    else:
        headers = request.headers
        names = parameter_names(model, location)
        received = {name: headers[header] for name, header in names.items() if header in headers}
    try:
        return validated(model, received), []
    except ValidationError as exc:
        names = parameter_names(model, location)
        errors: list[dict[str, Any]] = []
        for error in exc.errors(include_url=False):
            field, *rest = error["loc"]
            # FastAPI validates each parameter alone: a missing one has no input.
            missing = {"input": None} if error["type"] == "missing" else {}
            errors.append({**error, "loc": (location, names.get(str(field), field), *rest), **missing})
        return None, errors


def validated(model: type[BaseModel], value: Any, from_attributes: bool | None = None) -> Any:
    """Return ``model.model_validate(value)``, made by the model's own validator, as that method makes it: without
    the method's own checks of its arguments, which cost half as much again as validating a small model."""
    return model.__pydantic_validator__.validate_python(value, from_attributes=from_attributes)


@functools.cache
def parameter_names(model: type[BaseModel], location: str) -> dict[str, str]:
    """Return the name each field of ``model`` is found by in ``location``: a header's with hyphens."""
    return {name: name.replace("_", "-") if location == "header" else name for name in model.model_fields}


async def body_from_json(request: Request, model: type[BaseModel]) -> Any:
    """Return the JSON body validated as ``model`` straight from its bytes, where that gives what FastAPI's
    ``json.loads`` and validation give (``reads_json_alike``), in a third of the time; ``None`` to take FastAPI's way,
    which then answers any error as FastAPI does."""
    if not reads_json_alike(model) or not is_json(request.headers.get("content-type", "")):
        return None
    try:
        return model.model_validate_json(await request.body())
    except ValidationError:
        return None


@functools.cache
def reads_json_alike(model: type[BaseModel]) -> bool:
    """Whether every JSON body that validates as ``model`` from its bytes gives the model that ``json.loads`` and
    validation give: a plain model whose fields are strings, integers, floats, booleans or ``None``, with no
    constraints of their own. (A body that does not validate from its bytes is read FastAPI's way, for its errors:
    one that only ``json.loads`` takes, a lone surrogate, say, is accepted as FastAPI accepts it.)"""
    fields = model.model_fields.values()
    return is_plain(model) and all(field.annotation in JSON_ALIKE and not field.metadata for field in fields)


JSON_ALIKE = {str, int, float, bool, str | None, int | None, float | None, bool | None}


async def read_body(request: Request) -> Any:
    """Return the body as FastAPI reads a body parameter (``note: NoteIn``), ``PydanticUndefined`` if there is none.

    FastAPI decodes the body as JSON only for a JSON content type (``application/json``, ``*/*+json``) and hands any
    other body to the model as bytes.
    """
    body = await request.body()
    if not body:
        return PydanticUndefined
    if not is_json(request.headers.get("content-type", "")):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}]) from None
    except (ValueError, RecursionError):  # Not UTF-8, or nested too deep.
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from None


def is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of ``content_type`` as JSON: ``application/json`` or ``application/*+json``."""
    # Cached for speed where short: a cache keyed by what clients send keeps nothing large.
    return reads_as_json(content_type) if len(content_type) <= 100 else parse_as_json(content_type)


def parse_as_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


reads_as_json = functools.lru_cache(maxsize=64)(parse_as_json)


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
    if type(value) is dict:  # as it is, told before the check for a Record, an abstract class's, which costs more
        return value
    if hasattr(value, "_asdict"):  # the port's records, SQLAlchemy's rows
        return value._asdict()
    if isinstance(value, Record):
        return {key: value[key] for key in value._mapping.keys()}
    if isinstance(value, list) and value:
        # A list is of one kind of record: tell it once, not for each row.
        if type(getattr(value[0], "_mapping", None)) is dict:  # the port's records: the dict itself, not a call
            return [record._mapping for record in value]
        if hasattr(value[0], "_asdict"):
            return [record._asdict() for record in value]
        if isinstance(value[0], Record):
            return [as_content(record) for record in value]
    return value


def dump_json(adapter: TypeAdapter[Any], content: Any) -> bytes:
    return adapter.dump_json(adapter.validate_python(as_content(content), from_attributes=True))


def serialize_response(request: Request, response_content: Any) -> Response:
    """Answer ``response_content`` with the route's ``status_code``, as JSON through its ``response_model``.

    What the model does not declare is not sent. Without a model the content is sent as it is: a ``Response``
    unchanged, anything else as JSON. A 204 or 304 has no body.
    """
    route = request.scope["route"]
    assert isinstance(route, APIRoute), "serialize_response() serves the endpoints of APIRoutes"
    if isinstance(response_content, Response):
        return response_content
    if not is_body_allowed_for_status_code(route.status_code):
        return Response(status_code=route.status_code, media_type="application/json")
    if route.response_model is None:
        return JSONResponse(as_content(response_content), status_code=route.status_code)
    content = dump_json(response_adapter(route.response_model), response_content)
    return Response(content, status_code=route.status_code, media_type="application/json")


def is_body_allowed_for_status_code(status_code: int) -> bool:
    return not (status_code < 200 or status_code in (204, 205, 304))


async def serialize_pages(request: Request, pages: AsyncGenerator[list[Any], None]) -> Response:
    """Answer a list that comes in ``pages`` as ``serialize_response`` would answer it whole: the same status, headers
    (``content-length`` included) and bytes.

    The pages are read to the end before anything is sent, so that the database is done with the list whatever pace
    the client reads at; a list of several pages is serialized a page at a time into a ``Spool``, which keeps memory
    bounded, and sent from there.
    """
    route = request.scope["route"]
    assert isinstance(route, APIRoute), "serialize_pages() serves the endpoints of APIRoutes"
    adapter = response_adapter(route.response_model)
    async with contextlib.aclosing(pages):
        first = dump_json(adapter, await anext(pages, []))
        page = await anext(pages, None)
        if page is None:
            return Response(first, status_code=route.status_code, media_type="application/json")
        spool = request.scope.get("spools", default_spools).open()
        try:
            # One array: the first page's without its "]", then the items of each other page after a ",".
            spool.write(first[:-1])
            separator = b"," if len(first) > 2 else b""  # none after an empty first page: "[]"
            while page is not None:
                if page:
                    spool.write(separator + dump_json(adapter, page)[1:-1])
                    separator = b","
                del page  # Let the rows go before the next page comes.
                page = await anext(pages, None)
            spool.write(b"]")
        except BaseException:
            spool.close()
            raise
    return SpooledResponse(spool, status_code=route.status_code, media_type="application/json")
