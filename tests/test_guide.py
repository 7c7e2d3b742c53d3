"""docs/comparison.md says true things: its links, line counts and crash table are checked against the code."""

from __future__ import annotations

import importlib
import inspect
import operator
import re

import pytest
from starlette.testclient import TestClient

from tests.helpers import ROOT

GUIDE = (ROOT / "docs" / "comparison.md").read_text()
LINKS = re.findall(r"\[`([\w.]+)`\]\(\.\./(\w+)\.py#L(\d+)\) \| (\d+) \|", GUIDE)
CRASHES = GUIDE.split("## Where FastAPI's version answers 500")[1].split("\n## ")[0]
CRASH_ROWS = [line for line in CRASHES.splitlines() if line.startswith("| `") or line.startswith("| the bytes")]


def test_the_guide_links_code() -> None:
    assert len(LINKS) >= 20


@pytest.mark.parametrize(("name", "module", "line", "length"), LINKS, ids=[link[0] for link in LINKS])
def test_link_points_at_the_code(name: str, module: str, line: str, length: str) -> None:
    obj = inspect.unwrap(operator.attrgetter(name)(importlib.import_module(module)))
    source, start = inspect.getsourcelines(obj)
    assert (int(line), int(length)) == (start, len(source)), f"[`{name}`](../{module}.py#L{start}) | {len(source)} |"


def test_every_file_linked_exists() -> None:
    for target in re.findall(r"\]\(\.\./([^)#]+)", GUIDE):
        assert (ROOT / target).exists(), target


def crash_request(row: str) -> tuple[bytes, str]:
    spans = re.findall(r"`([^`]+)`", row)
    if row.startswith("| the bytes"):
        return bytes.fromhex(spans[0]), spans[1].removeprefix("content-type: ")
    return spans[0].encode(), "application/json"


def test_the_crash_table_is_filled() -> None:
    assert len(CRASH_ROWS) >= 8


@pytest.mark.parametrize("row", CRASH_ROWS)
def test_crash_row(row: str, client: TestClient, reference_client: TestClient) -> None:
    body, content_type = crash_request(row)
    headers = {"content-type": content_type}
    expected = reference_client.post("/notes/", content=body, headers=headers)
    assert expected.status_code == 500
    assert expected.headers["content-type"] == "text/plain; charset=utf-8"

    response = client.post("/notes/", content=body, headers=headers)
    port = row.rstrip(" |").split(" | ")[-1]
    assert response.status_code == int(port.split(",")[0]), response.text
    detail = response.json()["detail"]
    if '"input": null' in port:
        assert {error["input"] for error in detail} == {None}
    for error_type in re.findall(r"`(\w+)`", port):
        assert error_type in {error["type"] for error in detail}
    assert client.get("/notes/").json() == []


def test_readme_links_the_guide() -> None:
    assert "docs/comparison.md" in (ROOT / "README.md").read_text()
