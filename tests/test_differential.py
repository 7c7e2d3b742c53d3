"""Send the same requests to the port and to the FastAPI reference, and compare the answers; and what the port's
shorter way to read a body rests on."""

from __future__ import annotations

import decimal
import json
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator
from starlette.testclient import TestClient

from routing import reads_json_alike
from tests.helpers import BACKENDS, CASES, post, send, summary


@pytest.mark.parametrize("database_url", [*BACKENDS, "pgbouncer-transaction"], indirect=True)
@pytest.mark.parametrize("request_", CASES)
def test_same_answer(
    client: TestClient,
    reference_client: TestClient,
    database_url: str,
    request_: tuple[str, str, dict[str, str], bytes],
) -> None:
    seed = post({"text": "seed", "completed": False})
    assert summary(send(client, seed)) == summary(send(reference_client, seed))

    expected = send(reference_client, request_)
    response = send(client, request_)

    # PostgreSQL cannot store NUL in text: the port says so, where the reference on SQLite stores it.
    unstorable = database_url.startswith("postgresql") and b"\\u0000" in request_[3]
    if expected.status_code >= 500 or unstorable:
        # The reference crashes here: the port answers a clean 4xx in FastAPI's shape, and stores nothing.
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["detail"], list)
        assert client.get("/notes/").json() == [{"id": 1, "text": "seed", "completed": False}]
        assert send(client, seed).json()["id"] == 2, "a rejected note consumed an id"
    else:
        assert summary(response) == summary(expected)
        assert summary(client.get("/notes/")) == summary(reference_client.get("/notes/"))


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("count", [6, 7, 8, 21, 25])
def test_long_list_answers_the_same_headers_and_bytes(
    port_app: ModuleType, client: TestClient, reference_client: TestClient, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_app.database, "page_size", 7)
    for index in range(count):
        note = {"text": f"note {index} ✓", "completed": index % 3 == 0}
        assert client.post("/notes/", json=note).json() == reference_client.post("/notes/", json=note).json()

    response = client.get("/notes/")
    expected = reference_client.get("/notes/")
    assert response.status_code == 200, response.text
    assert response.headers.raw == expected.headers.raw  # content-length included, in the same order
    assert response.content == expected.content
    assert len(response.json()) == count


class Plain(BaseModel):
    text: str
    completed: bool
    priority: int = 0
    score: float | None = None
    note: str | None = None


class Priced(BaseModel):
    price: decimal.Decimal  # JSON's 1.10 gives Decimal("1.10"); json.loads's 1.1 gives Decimal("1.1")


class Checked(BaseModel):
    text: str

    @field_validator("text")
    @classmethod
    def strip(cls, value: str) -> str:
        return value.strip()


@pytest.mark.parametrize(
    ("model", "alike"),
    [
        pytest.param(Plain, True, id="plain"),
        pytest.param(Priced, False, id="decimal"),
        pytest.param(Checked, False, id="validator"),
        pytest.param(create_model("Bounded", text=(str, Field(max_length=3))), False, id="constraint"),
        pytest.param(create_model("Strict", flag=(bool, Field(strict=True))), False, id="strict"),
    ],
)
def test_a_body_is_validated_from_its_bytes_only_where_that_reads_as_fastapi(model: Any, alike: bool) -> None:
    assert reads_json_alike(model) is alike


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=5,
)


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional={name: JSON_VALUES for name in [*Plain.model_fields, "other"]}))
def test_a_plain_model_from_its_bytes_is_the_model_from_json_loads(document: dict[str, Any]) -> None:
    """What ``reads_json_alike`` rests on: for such a model, a body that validates from its bytes gives the model that
    ``json.loads`` and validation give (one that does not is read FastAPI's way)."""
    text = json.dumps(document)
    try:
        from_bytes = Plain.model_validate_json(text)
    except ValidationError:
        return
    assert from_bytes == Plain.model_validate(json.loads(text))
