"""The OpenAPI document and the docs pages, against FastAPI's for the same app."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx2 as httpx
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.testclient import TestClient

from routing import APIRoute
from schema import docs_routes, get_openapi
from tests.helpers import ROOT, serve


def test_document_equals_fastapi(client: TestClient, reference_client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    expected = reference_client.get("/openapi.json").json()
    expected["info"] = {"title": "Notes", "version": "0.1.0"}
    assert response.json() == expected


def test_document_is_valid_openapi(client: TestClient) -> None:
    validate(client.get("/openapi.json").json())


class Tag(BaseModel):
    name: str
    weight: float | None = None


class Tagged(BaseModel):
    id: int
    tags: list[Tag]


async def endpoint(request: Request) -> Response:
    return JSONResponse({})


def test_new_route_is_documented() -> None:
    routes: list[BaseRoute] = [
        APIRoute("/items-v2/tags", endpoint, method="PUT", body=Tag, response_model=Tagged, status_code=201),
        APIRoute("/health", endpoint, method="GET"),
    ]
    document = get_openapi(title="Throwaway", version="1", routes=routes)
    validate(document)
    assert document["paths"] == {
        "/items-v2/tags": {
            "put": {
                "summary": "Endpoint",
                "operationId": "endpoint_items_v2_tags_put",
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tag"}}},
                    "required": True,
                },
                "responses": {
                    "201": {
                        "description": "Successful Response",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tagged"}}},
                    },
                    "422": {
                        "description": "Validation Error",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
                        },
                    },
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Endpoint",
                "operationId": "endpoint_health_get",
                "responses": {"200": {"description": "Successful Response"}},
            }
        },
    }
    assert list(document["components"]["schemas"]) == ["HTTPValidationError", "Tag", "Tagged", "ValidationError"]
    assert document["components"]["schemas"]["Tagged"]["properties"]["tags"] == {
        "items": {"$ref": "#/components/schemas/Tag"},
        "title": "Tags",
        "type": "array",
    }


def test_no_input_no_validation_error() -> None:
    routes: list[BaseRoute] = [APIRoute("/", endpoint, method="GET", response_model=list[int])]
    document = get_openapi(title="Throwaway", version="1", routes=routes)
    assert "components" not in document
    schema = document["paths"]["/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"items": {"type": "integer"}, "type": "array", "title": "Response Endpoint  Get"}


def test_throwaway_app_serves_its_document() -> None:
    routes: list[BaseRoute] = [APIRoute("/tags", endpoint, method="POST", body=Tag)]
    app = Starlette(routes=routes + docs_routes(routes, title="Throwaway", version="2"))
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.json()["paths"]["/tags"]["post"]["operationId"] == "endpoint_tags_post"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        pytest.param("/docs", "text/html; charset=utf-8", id="swagger-ui"),
        pytest.param("/docs/oauth2-redirect", "text/html; charset=utf-8", id="oauth2-redirect"),
        pytest.param("/redoc", "text/html; charset=utf-8", id="redoc"),
        pytest.param("/docs/assets/swagger-ui-bundle.js", "text/javascript; charset=utf-8", id="swagger-ui-js"),
        pytest.param("/docs/assets/swagger-ui.css", "text/css; charset=utf-8", id="swagger-ui-css"),
        pytest.param("/redoc/assets/redoc.standalone.js", "text/javascript; charset=utf-8", id="redoc-js"),
    ],
)
def test_docs_pages_and_assets(client: TestClient, path: str, content_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert "cdn" not in response.text.lower() or path.endswith(".js")


def referenced(html: str) -> list[str]:
    """Return the paths of the scripts, styles and icons a page loads."""
    return re.findall(r'(?:src|href)="(/[^"]*)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_everything_a_docs_page_loads_is_served(client: TestClient, page: str) -> None:
    html = client.get(page).text
    paths = referenced(html)
    assert paths, html
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path


def test_oauth2_redirect_page_loads_swagger_uis_script(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200, response.text
    assert referenced(response.text) == ["/docs/assets/oauth2-redirect.js"]
    script = client.get("/docs/assets/oauth2-redirect.js")
    assert "swaggerUIRedirectOauth2" in script.text


def test_without_the_npm_packages_the_pages_say_what_is_missing(tmp_path: Path) -> None:
    """A pip-only install (no ``npm ci``) serves pages that say what to install, and nothing answers a 5xx."""
    for module in ROOT.glob("*.py"):
        shutil.copy(module, tmp_path)
    with serve("notes_app:app", {"DATABASE_URL": f"sqlite:///{tmp_path / 'notes.db'}"}, cwd=tmp_path, stderr=PIPE) as s:
        pages = {path: httpx.get(f"{s.url}{path}") for path in ("/docs", "/redoc", "/docs/oauth2-redirect")}
        assets = [httpx.get(f"{s.url}{path}") for path in ("/docs/assets/swagger-ui.css", "/redoc/assets/x.js")]
        document = httpx.get(f"{s.url}/openapi.json")
        s.process.terminate()
        assert s.process.stderr is not None
        with s.process.stderr:
            stderr = s.process.stderr.read().decode()
    for path, page in pages.items():
        assert page.status_code == 200, path
        assert "npm ci" in page.text, page.text
        assert referenced(page.text) == ["/openapi.json"], page.text
    assert [asset.status_code for asset in assets] == [404, 404]
    assert document.status_code == 200
    assert "The docs pages need the npm packages swagger-ui-dist and redoc: run `npm ci`" in stderr, stderr
    assert stderr.count("npm ci") == 1, stderr


def test_docs_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "http://" not in html and "https://" not in html, html


def test_document_documents_the_answers(client: TestClient) -> None:
    document: dict[str, Any] = client.get("/openapi.json").json()
    created = client.post("/notes/", json={"text": "a", "completed": True})
    assert created.status_code == 200, created.text
    assert set(created.json()) == set(document["components"]["schemas"]["Note"]["required"])
    invalid = client.post("/notes/", json={})
    assert invalid.status_code == 422, invalid.text
    assert set(invalid.json()) == set(document["components"]["schemas"]["HTTPValidationError"]["properties"])
