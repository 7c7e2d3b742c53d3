"""The README and the docs say true things: their links lead somewhere, the code and settings they name exist, and
the guide's line counts and crash table match the code."""

from __future__ import annotations

import ast
import importlib
import inspect
import operator
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GUIDE = (ROOT / "docs" / "comparison.md").read_text()
LINKS = re.findall(r"\[`([\w.]+)`\]\(\.\./([\w/]+)\.py#L(\d+)\) \| (\d+) \|", GUIDE)
CRASHES = GUIDE.split("## Where FastAPI's version answers 500")[1].split("\n## ")[0]
CRASH_ROWS = [line for line in CRASHES.splitlines() if line.startswith("| `") or line.startswith("| the bytes")]


def test_the_guide_links_code() -> None:
    assert len(LINKS) >= 20


@pytest.mark.parametrize(("name", "module", "line", "length"), LINKS, ids=[link[0] for link in LINKS])
def test_link_points_at_the_code(name: str, module: str, line: str, length: str) -> None:
    obj = inspect.unwrap(operator.attrgetter(name)(importlib.import_module(module.replace("/", "."))))
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


def test_the_readme_reads_in_five_minutes() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160


def test_the_readme_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, page.name


def slugs(page: Path) -> set[str]:
    """Return the anchors of the headings of ``page``, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_links_lead_somewhere(page: Path) -> None:
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), target
        if anchor and path.suffix == ".md":
            assert anchor in slugs(path), f"{target}#{anchor}"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_the_code_named_exists(page: Path) -> None:
    for name, target in re.findall(r"\[`([\w.]+)`\]\(([\w./]+)\.py(?:#L\d+)?\)", page.read_text()):
        module = (page.parent / target).resolve().relative_to(ROOT).as_posix().replace("/", ".")
        if name != f"{module.rpartition('.')[2]}.py":  # a link to the file itself
            operator.attrgetter(name)(importlib.import_module(module))


SETTINGS = {
    name
    for path in [ROOT / "notes_app.py", *ROOT.glob("examples/*.py"), *ROOT.glob("tests/*.py")]
    for name in re.findall(r"""(?:config\(|environ\.get\(|environ\[)"(\w+)\"""", path.read_text())
}


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_the_settings_named_are_read(page: Path) -> None:
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", page.read_text()))
    assert named <= SETTINGS, named - SETTINGS


FASTAPI_SIDE = [ROOT / "notes_app.py", *ROOT.glob("*.py"), *ROOT.glob("examples/*.py")]


@pytest.mark.parametrize("path", sorted(set(FASTAPI_SIDE)), ids=lambda path: path.name)
def test_the_fastapi_side_uses_the_engines_public_names(path: Path) -> None:
    """The README's two wings: the modules beside ``notes_app.py`` import the storage engine as ``storage`` only."""
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("storage")
    }
    assert imported <= {"storage"}, imported
