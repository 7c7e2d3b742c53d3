"""Schemathesis, from the app's own OpenAPI document, against the port served by uvicorn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import BACKENDS

SCHEMATHESIS = Path(sys.executable).parent / "st"
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance,response_headers_conformance"


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_no_server_error_and_documented_responses(live_server: str, tmp_path: Path) -> None:
    command = [str(SCHEMATHESIS), "run", f"{live_server}/openapi.json", "--checks", CHECKS, "--max-examples", "300"]
    # In a directory of its own: Schemathesis keeps a cache in the working directory.
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-10_000:] + result.stderr[-5_000:]
    assert " passed" in result.stdout, result.stdout[-5_000:]
