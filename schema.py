"""The OpenAPI document and the docs pages that FastAPI builds for an app, built by hand for Starlette.

Each step is named after its FastAPI counterpart (``fastapi/openapi/utils.py``, ``fastapi/utils.py``,
``fastapi/openapi/docs.py``). The docs pages are FastAPI's: they load Swagger UI and ReDoc from their CDN, or,
where ``npm ci`` (run by ``make``) has installed them in ``node_modules``, from the app itself, offline.
"""

from __future__ import annotations

import http.client
import json
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

from routing import APIRoute, is_body_allowed_for_status_code

logger = logging.getLogger("notes_app")
REF_TEMPLATE = "#/components/schemas/{model}"
NODE_MODULES = Path(__file__).parent / "node_modules"
SWAGGER_UI_DIST = NODE_MODULES / "swagger-ui-dist"
REDOC_BUNDLES = NODE_MODULES / "redoc" / "bundles"
# The docs pages may load nothing from another host than their files' (ReDoc's sidebar would fetch its logo from
# a CDN of its own): the app itself where npm installed them, else the CDN and the fonts of FastAPI's pages.
OFFLINE_DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
}
CDN_DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "worker-src 'self' blob:"
}
swagger_ui_default_parameters = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
}

STATUS_CODE_RANGES = {
    "1XX": "Information",
    "2XX": "Success",
    "3XX": "Redirection",
    "4XX": "Client Error",
    "5XX": "Server Error",
    "DEFAULT": "Default Response",
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


def get_definitions(routes: Sequence[APIRoute]) -> tuple[dict[tuple[Any, JsonSchemaMode], Any], dict[str, Any]]:
    """Return the JSON schema of each route's body, response and additional responses, and the models they refer
    to; the schemas are keyed by ``(id(route), "body")``, ``"response"`` or the status of a response."""
    inputs: list[tuple[Any, JsonSchemaMode, Any]] = []
    for route in routes:
        if route.body is not None:
            inputs.append(((id(route), "body"), "validation", TypeAdapter(route.body).core_schema))
        if route.response_model is not None:
            inputs.append(((id(route), "response"), "serialization", TypeAdapter(route.response_model).core_schema))
        for status, response in route.responses.items():
            if "model" in response:
                inputs.append(((id(route), status), "serialization", TypeAdapter(response["model"]).core_schema))
    field_mapping, definitions = GenerateJsonSchema(ref_template=REF_TEMPLATE).generate_definitions(inputs)
    return field_mapping, {str(name): schema for name, schema in definitions.items()}


def takes_input(route: APIRoute) -> bool:
    return route.body is not None or bool(route.params)


def get_openapi_operation_parameters(route: APIRoute) -> list[dict[str, Any]]:
    """Return the OpenAPI parameters of a route: each field of its path, query and header models, in that order, as
    FastAPI lists them (a header by its name with hyphens)."""
    parameters = []
    for location, model in route.params.items():
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, field_schema in schema["properties"].items():
            field = model.model_fields[name]
            alias = name.replace("_", "-") if location == "header" else name
            field_schema["title"] = field.title or alias.title().replace("_", " ")
            parameter = {"name": alias, "in": location, "required": field.is_required(), "schema": field_schema}
            if field.description:
                parameter["description"] = field.description
            parameters.append(parameter)
    return parameters


def get_openapi_operation(route: APIRoute, field_mapping: dict[tuple[Any, JsonSchemaMode], Any]) -> dict[str, Any]:
    """Return the OpenAPI operation of one route, with FastAPI's metadata, parameters, body and responses."""
    operation: dict[str, Any] = {}
    if route.tags:
        operation["tags"] = route.tags
    operation["summary"] = route.summary or route.name.replace("_", " ").title()
    if route.description:
        operation["description"] = route.description
    operation["operationId"] = generate_unique_id(route)
    if route.deprecated:
        operation["deprecated"] = route.deprecated
    parameters = get_openapi_operation_parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        body_schema = field_mapping[((id(route), "body"), "validation")]
        operation["requestBody"] = {"content": {"application/json": {"schema": body_schema}}, "required": True}
    response: dict[str, Any] = {"description": route.response_description}
    if is_body_allowed_for_status_code(route.status_code):
        response_schema: dict[str, Any] = {}
        if route.response_model is not None:
            response_schema = dict(field_mapping[((id(route), "response"), "serialization")])
            if "$ref" not in response_schema:
                response_schema["title"] = f"Response_{generate_unique_id(route)}".title().replace("_", " ")
        response["content"] = {"application/json": {"schema": response_schema}}
    responses = operation["responses"] = {str(route.status_code): response}
    for status, additional in route.responses.items():
        key = "default" if str(status).upper() == "DEFAULT" else str(status).upper()
        openapi_response = {**responses.get(key, {}), **additional}
        if openapi_response.pop("model", None) is not None:
            schema = field_mapping[((id(route), status), "serialization")]
            openapi_response.setdefault("content", {}).setdefault("application/json", {})["schema"] = schema
        status_text = STATUS_CODE_RANGES.get(key.upper()) or (
            http.client.responses.get(int(key)) if key.isdigit() else None
        )
        description = additional.get("description") or responses.get(key, {}).get("description")
        openapi_response["description"] = description or status_text or "Additional Response"
        responses[key] = openapi_response
    if takes_input(route) and not {"422", "4XX", "default"} & set(responses):
        responses["422"] = {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="HTTPValidationError")}}},
        }
    return operation


def get_openapi(*, title: str, version: str, routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Return the OpenAPI document of the ``APIRoute``s among ``routes`` that are included in the schema.

    As FastAPI's, the document leaves out every key whose value is ``None``: an optional field's ``"default": null``.
    """
    api_routes = [route for route in routes if isinstance(route, APIRoute) and route.include_in_schema]
    field_mapping, definitions = get_definitions(api_routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes:
        paths.setdefault(route.path_format, {})[route.method.lower()] = get_openapi_operation(route, field_mapping)
        if takes_input(route):
            definitions["ValidationError"] = validation_error_definition
            definitions["HTTPValidationError"] = validation_error_response_definition
    output: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths}
    if definitions:
        output["components"] = {"schemas": dict(sorted(definitions.items()))}
    document: dict[str, Any] = without_none(output)
    return document


def without_none(value: Any) -> Any:
    """Return ``value`` without the keys whose value is ``None``, at any depth: FastAPI's ``exclude_none=True``."""
    if isinstance(value, dict):
        return {key: without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_none(item) for item in value]
    return value


def get_swagger_ui_html(
    *,
    openapi_url: str,
    title: str,
    swagger_js_url: str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js",
    swagger_css_url: str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
    swagger_favicon_url: str = "https://fastapi.tiangolo.com/img/favicon.png",
    oauth2_redirect_url: str | None = None,
) -> str:
    """Return FastAPI's Swagger UI page, which loads Swagger UI from its CDN unless given other URLs."""
    html = f"""
    <!DOCTYPE html>
    <html>
    <head>
    <meta name="viewport" content="width=device-width, initial-scale=1.0">
    <link type="text/css" rel="stylesheet" href="{swagger_css_url}">
    <link rel="shortcut icon" href="{swagger_favicon_url}">
    <title>{title}</title>
    </head>
    <body>
    <div id="swagger-ui">
    </div>
    <script src="{swagger_js_url}"></script>
    <!-- `SwaggerUIBundle` is now available on the page -->
    <script>
    const ui = SwaggerUIBundle({{
        url: '{openapi_url}',
    """
    for key, value in swagger_ui_default_parameters.items():
        html += f"{json.dumps(key)}: {json.dumps(value)},\n"
    if oauth2_redirect_url:
        html += f"oauth2RedirectUrl: window.location.origin + '{oauth2_redirect_url}',"
    html += """
    presets: [
        SwaggerUIBundle.presets.apis,
        SwaggerUIBundle.SwaggerUIStandalonePreset
        ],
    })
    </script>
    </body>
    </html>
    """
    return html


def get_redoc_html(
    *,
    openapi_url: str,
    title: str,
    redoc_js_url: str = "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js",
    redoc_favicon_url: str = "https://fastapi.tiangolo.com/img/favicon.png",
    with_google_fonts: bool = True,
) -> str:
    """Return FastAPI's ReDoc page, which loads ReDoc from its CDN unless given other URLs."""
    html = f"""
    <!DOCTYPE html>
    <html>
    <head>
    <title>{title}</title>
    <!-- needed for adaptive design -->
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    """
    if with_google_fonts:
        html += """
    <link href="https://fonts.googleapis.com/css?family=Montserrat:300,400,700|Roboto:300,400,700" rel="stylesheet">
    """
    html += f"""
    <link rel="shortcut icon" href="{redoc_favicon_url}">
    <!--
    ReDoc doesn't change outer page styles
    -->
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
    <script src="{redoc_js_url}"> </script>
    </body>
    </html>
    """
    return html


def get_swagger_ui_oauth2_redirect_html() -> str:
    """Return FastAPI's page for OAuth2 flows to come back to: Swagger UI's script, which hands Swagger UI the token.

    The script is Swagger UI's ``oauth2-redirect.html`` as FastAPI inlines it, so that the page needs no file.
    """
    return SWAGGER_UI_OAUTH2_REDIRECT_HTML


def docs_routes(routes: Sequence[BaseRoute], *, title: str, version: str) -> list[BaseRoute]:
    """Return the routes FastAPI's ``setup()`` adds for ``routes``: the OpenAPI document, Swagger UI and ReDoc.

    Where ``npm ci`` has installed Swagger UI and ReDoc, the pages load them from the app itself and work offline;
    elsewhere they are FastAPI's own pages, which load them from their CDN (and one line at start-up says so).
    """
    openapi_schema = get_openapi(title=title, version=version, routes=routes)
    offline = SWAGGER_UI_DIST.is_dir() and REDOC_BUNDLES.is_dir()
    if offline:
        swagger_ui: dict[str, str] = {
            "swagger_js_url": "/docs/assets/swagger-ui-bundle.js",
            "swagger_css_url": "/docs/assets/swagger-ui.css",
            "swagger_favicon_url": "/docs/assets/favicon-32x32.png",
        }
        redoc: dict[str, Any] = {
            "redoc_js_url": "/redoc/assets/redoc.standalone.js",
            "redoc_favicon_url": "/docs/assets/favicon-32x32.png",
            "with_google_fonts": False,
        }
        headers = OFFLINE_DOCS_HEADERS
    else:
        swagger_ui, redoc, headers = {}, {}, CDN_DOCS_HEADERS
        logger.warning("/docs and /redoc load Swagger UI and ReDoc from their CDN: `npm ci` makes them work offline")

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema)

    async def swagger_ui_html(request: Request) -> Response:
        html = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            **swagger_ui,
        )
        return HTMLResponse(html, headers=headers)

    async def swagger_ui_redirect(request: Request) -> Response:
        return HTMLResponse(get_swagger_ui_oauth2_redirect_html(), headers=headers)

    async def redoc_html(request: Request) -> Response:
        html = get_redoc_html(openapi_url="/openapi.json", title=f"{title} - ReDoc", **redoc)
        return HTMLResponse(html, headers=headers)

    docs: list[BaseRoute] = [
        Route("/openapi.json", openapi, include_in_schema=False),
        Route("/docs", swagger_ui_html, include_in_schema=False),
        Route("/docs/oauth2-redirect", swagger_ui_redirect, include_in_schema=False),
        Route("/redoc", redoc_html, include_in_schema=False),
    ]
    if offline:
        docs.append(Mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIST)))
        docs.append(Mount("/redoc/assets", StaticFiles(directory=REDOC_BUNDLES)))
    return docs


# Swagger UI's dist/oauth2-redirect.html (v4.14.0, Apache 2.0), as FastAPI's get_swagger_ui_oauth2_redirect_html
# inlines it: FastAPI's page, byte for byte.
SWAGGER_UI_OAUTH2_REDIRECT_HTML = """
    <!doctype html>
    <html lang="en-US">
    <head>
        <title>Swagger UI: OAuth2 Redirect</title>
    </head>
    <body>
    <script>
        'use strict';
        function run () {
            var oauth2 = window.opener.swaggerUIRedirectOauth2;
            var sentState = oauth2.state;
            var redirectUrl = oauth2.redirectUrl;
            var isValid, qp, arr;

            if (/code|token|error/.test(window.location.hash)) {
                qp = window.location.hash.substring(1).replace('?', '&');
            } else {
                qp = location.search.substring(1);
            }

            arr = qp.split("&");
            arr.forEach(function (v,i,_arr) { _arr[i] = '"' + v.replace('=', '":"') + '"';});
            qp = qp ? JSON.parse('{' + arr.join() + '}',
                    function (key, value) {
                        return key === "" ? value : decodeURIComponent(value);
                    }
            ) : {};

            isValid = qp.state === sentState;

            if ((
              oauth2.auth.schema.get("flow") === "accessCode" ||
              oauth2.auth.schema.get("flow") === "authorizationCode" ||
              oauth2.auth.schema.get("flow") === "authorization_code"
            ) && !oauth2.auth.code) {
                if (!isValid) {
                    oauth2.errCb({
                        authId: oauth2.auth.name,
                        source: "auth",
                        level: "warning",
                        message: "Authorization may be unsafe, passed state was changed in server. The passed state wasn't returned from auth server."
                    });
                }

                if (qp.code) {
                    delete oauth2.state;
                    oauth2.auth.code = qp.code;
                    oauth2.callback({auth: oauth2.auth, redirectUrl: redirectUrl});
                } else {
                    let oauthErrorMsg;
                    if (qp.error) {
                        oauthErrorMsg = "["+qp.error+"]: " +
                            (qp.error_description ? qp.error_description+ ". " : "no accessCode received from the server. ") +
                            (qp.error_uri ? "More info: "+qp.error_uri : "");
                    }

                    oauth2.errCb({
                        authId: oauth2.auth.name,
                        source: "auth",
                        level: "error",
                        message: oauthErrorMsg || "[Authorization failed]: no accessCode received from the server."
                    });
                }
            } else {
                oauth2.callback({auth: oauth2.auth, token: qp, isValid: isValid, redirectUrl: redirectUrl});
            }
            window.close();
        }

        if (document.readyState !== 'loading') {
            run();
        } else {
            document.addEventListener('DOMContentLoaded', function () {
                run();
            });
        }
    </script>
    </body>
    </html>
        """  # noqa: E501 (Swagger UI's own lines)
