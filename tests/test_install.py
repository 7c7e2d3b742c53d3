"""What a reader gets without npm: ``make run`` with Python and make alone, and FastAPI's own docs pages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import httpx2 as httpx
from starlette.testclient import TestClient

from tests.helpers import clone_project, free_port, path_without, serve, wait_for_port

PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]
CDN_POLICY = (
    "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "worker-src 'self' blob:"
)


def test_without_npms_files_the_docs_pages_are_fastapis(tmp_path: Path, reference_client: TestClient) -> None:
    """A pip-only install serves FastAPI's pages, which load Swagger UI and ReDoc from FastAPI's CDN."""
    project = clone_project(tmp_path)
    assert not (project / "node_modules").exists()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'notes.db'}"}
    with serve("notes_app:app", env, cwd=project, stderr=PIPE) as server:
        pages = {path: httpx.get(f"{server.url}{path}") for path in PAGES}
        assets = [httpx.get(f"{server.url}{path}") for path in ("/docs/assets/swagger-ui.css", "/redoc/assets/x.js")]
        document = httpx.get(f"{server.url}/openapi.json")
        server.process.terminate()
        assert server.process.stderr is not None
        with server.process.stderr:
            stderr = server.process.stderr.read().decode()
    for path, page in pages.items():
        assert page.status_code == 200, page.text
        assert page.headers["content-security-policy"] == CDN_POLICY
        expected = reference_client.get(path)
        assert page.text.replace("<title>Notes - ", "<title>FastAPI - ") == expected.text, path
        assert page.headers["content-type"] == expected.headers["content-type"]
    assert [asset.status_code for asset in assets] == [404, 404]
    assert document.status_code == 200, document.text
    line = "/docs and /redoc load Swagger UI and ReDoc from their CDN: `npm ci` makes them work offline"
    assert stderr.count(line) == 1, stderr


def test_make_run_without_npm_serves_notes_and_the_docs(tmp_path: Path, reference_client: TestClient) -> None:
    """``make run`` in a fresh clone, with Python and make and no npm on the ``PATH``: it says so and serves."""
    project = clone_project(tmp_path / "clone")
    path = path_without(tmp_path / "bin", "npm", "npx", "node")
    port = free_port()
    command = ["make", "run", f"PORT={port}", f"PYTHON={sys._base_executable}"]  # type: ignore[attr-defined]
    env = {**os.environ, "PATH": path}
    env.pop("VIRTUAL_ENV", None)
    env.pop("CI", None)  # CI's make fails without npm, on purpose; a reader's does not.
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port(port, process, timeout=300)  # make creates the virtualenv and installs first.
        url = f"http://127.0.0.1:{port}"
        created = httpx.post(f"{url}/notes/", json={"text": "Buy milk", "completed": False})
        listed = httpx.get(f"{url}/notes/")
        docs = httpx.get(f"{url}/docs")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert created.status_code == 200, created.text
    assert created.json() == {"id": 1, "text": "Buy milk", "completed": False}
    assert listed.json() == [created.json()]
    assert docs.status_code == 200, docs.text
    assert docs.text.replace("<title>Notes - ", "<title>FastAPI - ") == reference_client.get("/docs").text
    assert "npm not found: /docs and /redoc will load Swagger UI and ReDoc from their CDN" in output, output
    assert not (project / "node_modules").exists()
    assert (project / "test.db").exists()
