"""The OpenAPI document and the docs pages, against FastAPI's for the same app."""

from __future__ import annotations

import datetime
import decimal
import enum
import re
import uuid
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.testclient import TestClient

from routing import APIRoute
from schema import docs_routes, get_openapi
from tests.helpers import require_docs_files


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
                # FastAPI's, for a route without a response model: any JSON.
                "responses": {
                    "200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}
                },
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


def test_the_crud_example_serves_its_document() -> None:
    routes: list[BaseRoute] = [APIRoute("/tags", endpoint, method="POST", body=Tag)]
    app = Starlette(routes=routes + docs_routes(routes, title="Throwaway", version="2"))
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.json()["paths"]["/tags"]["post"]["operationId"] == "endpoint_tags_post"


@pytest.fixture
def offline_client(client: TestClient) -> TestClient:
    """The port's client, where ``npm ci`` has installed the docs pages' files."""
    require_docs_files()
    return client


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
def test_docs_pages_and_assets(offline_client: TestClient, path: str, content_type: str) -> None:
    response = offline_client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert "cdn" not in response.text.lower() or path.endswith(".js")


def referenced(html: str) -> list[str]:
    """Return the addresses of the scripts, styles and icons a page loads."""
    return re.findall(r'(?:src|href)="([^"]*)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_everything_a_docs_page_loads_is_served(offline_client: TestClient, page: str) -> None:
    html = offline_client.get(page).text
    paths = referenced(html)
    assert paths, html
    for path in paths:
        response = offline_client.get(path)
        assert response.status_code == 200, path


@pytest.mark.parametrize(
    ("page", "cdn"),
    [
        pytest.param(
            "/docs",
            {
                "/docs/assets/swagger-ui-bundle.js": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js",
                "/docs/assets/swagger-ui.css": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
                "/docs/assets/favicon-32x32.png": "https://fastapi.tiangolo.com/img/favicon.png",
            },
            id="swagger-ui",
        ),
        pytest.param("/docs/oauth2-redirect", {}, id="oauth2-redirect"),
    ],
)
def test_offline_pages_are_fastapis_with_the_files_served_here(
    offline_client: TestClient, reference_client: TestClient, page: str, cdn: dict[str, str]
) -> None:
    """As FastAPI's guide to self-hosting the docs' files does it: FastAPI's pages, given the local URLs."""
    html = offline_client.get(page).text.replace("Notes - ", "FastAPI - ")
    for local, remote in cdn.items():
        html = html.replace(local, remote)
    assert html == reference_client.get(page).text


def test_offline_pages_load_nothing_from_elsewhere(offline_client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = offline_client.get(path)
        assert "http://" not in response.text and "https://" not in response.text, response.text
        assert "http" not in response.headers["content-security-policy"]


def test_document_documents_the_answers(client: TestClient) -> None:
    document: dict[str, Any] = client.get("/openapi.json").json()
    created = client.post("/notes/", json={"text": "a", "completed": True})
    assert created.status_code == 200, created.text
    assert set(created.json()) == set(document["components"]["schemas"]["Note"]["required"])
    invalid = client.post("/notes/", json={})
    assert invalid.status_code == 422, invalid.text
    assert set(invalid.json()) == set(document["components"]["schemas"]["HTTPValidationError"]["properties"])


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Place(BaseModel):
    city: str = Field(min_length=1, max_length=40, description="Where")
    zip_code: str | None = Field(None, pattern=r"^\d{5}$")


class RichIn(BaseModel):
    """A model with what readers put in theirs."""

    title: str = Field(max_length=20)
    score: int = Field(0, ge=0, le=10, multiple_of=2)
    ratio: float | None = None
    price: decimal.Decimal = Field(decimal.Decimal("1.50"), max_digits=10, decimal_places=2)
    due: datetime.datetime | None = None
    day: datetime.date = datetime.date(2026, 1, 1)
    ref: uuid.UUID | None = None
    kind: Literal["todo", "idea"] = "todo"
    color: Color = Color.RED
    tags: list[str] = []
    places: list[Place] | None = None
    home: Place | None = None
    extra: dict[str, int] = {}


class Rich(RichIn):
    id: int


def test_rich_models_are_documented_as_fastapi_documents_them() -> None:
    fastapi = FastAPI()

    @fastapi.post("/rich/", response_model=Rich, status_code=201)
    async def create_rich(rich: RichIn) -> Any:
        return {}

    @fastapi.get("/rich/", response_model=list[Rich])
    async def read_rich() -> Any:
        return []

    routes: list[BaseRoute] = [
        APIRoute("/rich/", create_rich, method="POST", body=RichIn, response_model=Rich, status_code=201),
        APIRoute("/rich/", read_rich, method="GET", response_model=list[Rich]),
    ]
    document = get_openapi(title="FastAPI", version="0.1.0", routes=routes)
    validate(document)
    assert document == fastapi.openapi()
