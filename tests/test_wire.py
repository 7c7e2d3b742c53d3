"""The differential cases again, over real HTTP to two uvicorn processes: the raw answers must be the same bytes."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CASES, Server, serve


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    directory: Path = tmp_path_factory.mktemp("wire")
    with (
        serve("notes_app:app", {"DATABASE_URL": f"sqlite:///{directory / 'port.db'}"}) as port,
        serve("tests.reference_app:app", {"REFERENCE_DATABASE_URL": f"sqlite:///{directory / 'reference.db'}"}) as ref,
    ):
        yield port, ref


def exchange(server: Server, request: tuple[str, str, dict[str, str], bytes]) -> bytes:
    """Send ``request`` on a new connection and return the raw answer, without its ``date`` header."""
    method, path, headers, content = request
    head = f"{method} {path} HTTP/1.1\r\nhost: testserver\r\nconnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if content or method == "POST":
        head += f"content-length: {len(content)}\r\n"
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + content)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return re.sub(rb"\r\ndate: [^\r]*", b"", answer)


@pytest.mark.parametrize("request_", CASES)
def test_same_bytes_on_the_wire(
    servers: tuple[Server, Server], request_: tuple[str, str, dict[str, str], bytes]
) -> None:
    port, reference = servers
    expected = exchange(reference, request_)
    answer = exchange(port, request_)
    if expected.startswith(b"HTTP/1.1 500 "):
        assert re.match(rb"HTTP/1.1 4\d\d ", answer), answer
        assert b"\r\ncontent-type: application/json\r\n" in answer, answer
    else:
        assert answer == expected
    listed: tuple[str, str, dict[str, str], bytes] = ("GET", "/notes/", {}, b"")
    assert exchange(port, listed) == exchange(reference, listed)
