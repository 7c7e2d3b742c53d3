"""The OpenAPI document and the docs pages that FastAPI builds for an app, built by hand for Starlette.

Each step is named after its FastAPI counterpart (``fastapi/openapi/utils.py``, ``fastapi/utils.py``,
``fastapi/openapi/docs.py``). The docs pages load Swagger UI and ReDoc from ``node_modules``, installed
from npm by ``make``, instead of a CDN, so they work offline.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from routing import APIRoute

logger = logging.getLogger("notes_app")
REF_TEMPLATE = "#/components/schemas/{model}"
NODE_MODULES = Path(__file__).parent / "node_modules"
SWAGGER_UI_DIST = NODE_MODULES / "swagger-ui-dist"
REDOC_BUNDLES = NODE_MODULES / "redoc" / "bundles"
# The docs pages may load nothing from another host (ReDoc's sidebar would fetch its logo from a CDN).
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
}

validation_error_definition = {
    "title": "ValidationError",
    "type": "object",
    "properties": {
        "loc": {"title": "Location", "type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"title": "Message", "type": "string"},
        "type": {"title": "Error Type", "type": "string"},
        "input": {"title": "Input"},
        "ctx": {"title": "Context", "type": "object"},
    },
    "required": ["loc", "msg", "type"],
}

validation_error_response_definition = {
    "title": "HTTPValidationError",
    "type": "object",
    "properties": {
        "detail": {"title": "Detail", "type": "array", "items": {"$ref": REF_TEMPLATE.format(model="ValidationError")}}
    },
}


def generate_unique_id(route: APIRoute) -> str:
    """Return FastAPI's ``operationId``: the endpoint's name and path, then the method."""
    operation_id = re.sub(r"\W", "_", f"{route.name}{route.path_format}")
    return f"{operation_id}_{route.method.lower()}"


def get_definitions(routes: Sequence[APIRoute]) -> tuple[dict[tuple[int, JsonSchemaMode], Any], dict[str, Any]]:
    """Return the JSON schema of each route's body and response, and the models they refer to."""
    inputs: list[tuple[int, JsonSchemaMode, Any]] = []
    for index, route in enumerate(routes):
        if route.body is not None:
            inputs.append((index, "validation", TypeAdapter(route.body).core_schema))
        if route.response_model is not None:
            inputs.append((index, "serialization", TypeAdapter(route.response_model).core_schema))
    field_mapping, definitions = GenerateJsonSchema(ref_template=REF_TEMPLATE).generate_definitions(inputs)
    return field_mapping, {str(name): schema for name, schema in definitions.items()}


def takes_input(route: APIRoute) -> bool:
    return any(declared is not None for declared in (route.path_params, route.query_params, route.body))


def get_openapi_operation_parameters(route: APIRoute) -> list[dict[str, Any]]:
    """Return the OpenAPI parameters of a route: each field of its path and query models, as FastAPI lists them."""
    parameters = []
    for location, model in (("path", route.path_params), ("query", route.query_params)):
        if model is None:
            continue
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, field_schema in schema["properties"].items():
            if "default" in field_schema and field_schema["default"] is None:
                del field_schema["default"]  # FastAPI documents no default of None for a parameter.
            required = name in schema.get("required", ())
            parameters.append({"name": name, "in": location, "required": required, "schema": field_schema})
    return parameters


def get_openapi_operation(
    route: APIRoute, index: int, field_mapping: dict[tuple[int, JsonSchemaMode], Any]
) -> dict[str, Any]:
    """Return the OpenAPI operation of one route, with FastAPI's summary, id and responses."""
    operation: dict[str, Any] = {
        "summary": route.name.replace("_", " ").title(),
        "operationId": generate_unique_id(route),
    }
    parameters = get_openapi_operation_parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        body_schema = field_mapping[(index, "validation")]
        operation["requestBody"] = {"content": {"application/json": {"schema": body_schema}}, "required": True}
    response: dict[str, Any] = {"description": "Successful Response"}
    if route.response_model is not None:
        response_schema = dict(field_mapping[(index, "serialization")])
        if "$ref" not in response_schema:
            response_schema["title"] = f"Response_{generate_unique_id(route)}".title().replace("_", " ")
        response["content"] = {"application/json": {"schema": response_schema}}
    operation["responses"] = {str(route.status_code): response}
    if takes_input(route):
        operation["responses"]["422"] = {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="HTTPValidationError")}}},
        }
    return operation


def get_openapi(*, title: str, version: str, routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Return the OpenAPI document of the ``APIRoute``s among ``routes``."""
    api_routes = [route for route in routes if isinstance(route, APIRoute)]
    field_mapping, definitions = get_definitions(api_routes)
    paths: dict[str, dict[str, Any]] = {}
    for index, route in enumerate(api_routes):
        operation = get_openapi_operation(route, index, field_mapping)
        paths.setdefault(route.path_format, {})[route.method.lower()] = operation
        if takes_input(route):
            definitions["ValidationError"] = validation_error_definition
            definitions["HTTPValidationError"] = validation_error_response_definition
    output: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths}
    if definitions:
        output["components"] = {"schemas": dict(sorted(definitions.items()))}
    return output


def get_swagger_ui_html(*, openapi_url: str, title: str, oauth2_redirect_url: str) -> HTMLResponse:
    """Return FastAPI's Swagger UI page, with its assets served by the app itself."""
    return HTMLResponse(
        f"""<!DOCTYPE html>
<html>
<head>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link type="text/css" rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="shortcut icon" href="/docs/assets/favicon-32x32.png">
<title>{title}</title>
</head>
<body>
<div id="swagger-ui">
</div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
const ui = SwaggerUIBundle({{
    url: '{openapi_url}',
    dom_id: '#swagger-ui',
    layout: 'BaseLayout',
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    oauth2RedirectUrl: window.location.origin + '{oauth2_redirect_url}',
    presets: [
        SwaggerUIBundle.presets.apis,
        SwaggerUIBundle.SwaggerUIStandalonePreset
    ],
}})
</script>
</body>
</html>
""",
        headers=DOCS_HEADERS,
    )


def get_redoc_html(*, openapi_url: str, title: str) -> HTMLResponse:
    """Return FastAPI's ReDoc page, with its script served by the app itself."""
    return HTMLResponse(
        f"""<!DOCTYPE html>
<html>
<head>
<title>{title}</title>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body {{
    margin: 0;
    padding: 0;
  }}
</style>
</head>
<body>
<noscript>
    ReDoc requires Javascript to function. Please enable it to browse the documentation.
</noscript>
<redoc spec-url="{openapi_url}"></redoc>
<script src="/redoc/assets/redoc.standalone.js"> </script>
</body>
</html>
""",
        headers=DOCS_HEADERS,
    )


def get_swagger_ui_oauth2_redirect_html() -> HTMLResponse:
    """Return the page Swagger UI's OAuth2 flows come back to: swagger-ui-dist's script, which hands back the token."""
    return HTMLResponse(
        """<!doctype html>
<html lang="en-US">
<head>
<title>Swagger UI: OAuth2 Redirect</title>
</head>
<body>
<script src="/docs/assets/oauth2-redirect.js"></script>
</body>
</html>
""",
        headers=DOCS_HEADERS,
    )


def get_missing_docs_html(*, title: str, package: str) -> HTMLResponse:
    """Return the page that stands for a docs page whose files are not installed, and says how to install them."""
    return HTMLResponse(
        f"""<!DOCTYPE html>
<html>
<head>
<title>{title}</title>
<meta charset="utf-8"/>
</head>
<body>
<h1>{title}</h1>
<p>This page needs the files of the npm package <code>{package}</code>, which are not installed.
Run <code>npm ci</code> (<code>make run</code> does it) in the project's folder, then restart the app.</p>
<p>The API's OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</p>
</body>
</html>
""",
        headers=DOCS_HEADERS,
    )


def docs_routes(routes: Sequence[BaseRoute], *, title: str, version: str) -> list[BaseRoute]:
    """Return the routes FastAPI's ``setup()`` adds for ``routes``: the OpenAPI document, Swagger UI and ReDoc.

    Swagger UI and ReDoc are served from ``node_modules``; where their packages are not installed, their pages say so
    (and one line at start-up) instead of loading files that are not there.
    """
    openapi_schema = get_openapi(title=title, version=version, routes=routes)
    assets = {"swagger-ui-dist": SWAGGER_UI_DIST, "redoc": REDOC_BUNDLES}
    missing = [package for package, directory in assets.items() if not directory.is_dir()]
    if missing:
        logger.warning("The docs pages need the npm packages %s: run `npm ci` (or `make run`)", " and ".join(missing))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema)

    async def swagger_ui_html(request: Request) -> Response:
        if "swagger-ui-dist" in missing:
            return get_missing_docs_html(title=f"{title} - Swagger UI", package="swagger-ui-dist")
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{title} - Swagger UI", oauth2_redirect_url="/docs/oauth2-redirect"
        )

    async def swagger_ui_redirect(request: Request) -> Response:
        if "swagger-ui-dist" in missing:
            return get_missing_docs_html(title="Swagger UI: OAuth2 Redirect", package="swagger-ui-dist")
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc_html(request: Request) -> Response:
        if "redoc" in missing:
            return get_missing_docs_html(title=f"{title} - ReDoc", package="redoc")
        return get_redoc_html(openapi_url="/openapi.json", title=f"{title} - ReDoc")

    docs: list[BaseRoute] = [
        Route("/openapi.json", openapi, include_in_schema=False),
        Route("/docs", swagger_ui_html, include_in_schema=False),
        Route("/docs/oauth2-redirect", swagger_ui_redirect, include_in_schema=False),
        Route("/redoc", redoc_html, include_in_schema=False),
    ]
    if "swagger-ui-dist" not in missing:
        docs.append(Mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIST)))
    if "redoc" not in missing:
        docs.append(Mount("/redoc/assets", StaticFiles(directory=REDOC_BUNDLES)))
    return docs
