"""Instructions per request of the CRUD example (the port) and of the yardstick (Starlette on the drivers), counted by
callgrind in one process: figures a noisy machine cannot move.

Each app runs under ``valgrind --tool=callgrind`` on its own database of 1,000 notes, with uvloop as uvicorn runs it,
and answers each scenario's requests through ASGI in the same process (no HTTP parsing: uvicorn's is the same for
both). Only the measured requests are counted: a client request of callgrind's, from a small C helper built with
gcc, starts the count before them and dumps it after. What the database server does (PostgreSQL) is not counted;
SQLite, in the process, is.

    .venv/bin/python -m bench.callgrind [--backends sqlite,postgresql] [--requests 200]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

APPS = {
    "port": ("examples.crud_app", "CRUD_DATABASE_URL"),
    "yardstick": ("bench.yardstick_app", "YARDSTICK_DATABASE_URL"),
    "fastapi_form": ("bench.fastapi_form_app", "CRUD_DATABASE_URL"),  # the port, statements built per request
}
BODY = b'{"text": "a note changed by the benchmark", "completed": true, "priority": 3}'
CREATE_BODY = b'{"text": "a note from the benchmark", "completed": false, "priority": 1}'
# scenario: (method, path of the n-th request, query, body), as make bench sends them
SCENARIOS: dict[str, tuple[str, Callable[[random.Random], str], bytes, bytes]] = {
    "page": ("GET", lambda _: "/notes/", b"skip=100&limit=100", b""),
    "one": ("GET", lambda draw: f"/notes/{draw.randint(1, 1000)}", b"", b""),
    "put": ("PUT", lambda draw: f"/notes/{draw.randint(1, 1000)}", b"", BODY),
    "create": ("POST", lambda _: "/notes/", b"", CREATE_BODY),
}
HELPER = """#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("start"); }
void stop(const char *name) { CALLGRIND_DUMP_STATS_AT(name); CALLGRIND_STOP_INSTRUMENTATION; }
"""


async def answer(app: Any, method: str, path: str, query: bytes, body: bytes) -> int:
    """Send one request to the ASGI ``app``; return its status."""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def count(module: str, requests: int, helper: Path) -> None:
    """Answer each scenario's requests with the app of ``module``, counted between the helper's calls."""
    callgrind = ctypes.CDLL(str(helper))
    app = importlib.import_module(module).app
    async with app.router.lifespan_context(app):
        for name, (method, path, query, body) in SCENARIOS.items():
            draw = random.Random(1)
            statuses = []
            for _ in range(20):  # warm up: statements compiled, caches filled
                statuses.append(await answer(app, method, path(draw), query, body))
            callgrind.start()
            for _ in range(requests):
                statuses.append(await answer(app, method, path(draw), query, body))
            callgrind.stop(name.encode())
            assert set(statuses) <= {200, 201}, f"{module} {name}: {set(statuses)}"


def measure(backend: str, app: str, requests: int, directory: Path, helper: Path) -> dict[str, float]:
    """Return the instructions per request of ``app`` on ``backend``, by scenario."""
    from bench.run import database_for

    module, variable = APPS[app]
    url = database_for(backend, app, 1000, directory, crud=True)
    out = directory / f"callgrind.{app}.{backend}"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p"]
    command += [sys.executable, "-m", "bench.callgrind", "--child", module, "--requests", str(requests)]
    command += ["--helper", str(helper)]
    subprocess.run(command, env={**os.environ, variable: url}, check=True, capture_output=True)
    counts = {}
    for dump in directory.glob(f"callgrind.{app}.{backend}.*"):
        text = dump.read_text()
        trigger = re.search(r"^desc: Trigger: Client Request: (\w+)", text, re.MULTILINE)
        totals = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if trigger and totals:
            counts[trigger.group(1)] = int(totals.group(1)) / requests
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=200, help="requests counted in each scenario")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(count(args.child, args.requests, Path(args.helper)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        helper = directory / "callgrind_helper.so"
        (directory / "helper.c").write_text(HELPER)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", helper, directory / "helper.c"], check=True)
        print(f"# instructions per request, {args.requests} requests a scenario, Python {sys.version.split()[0]}\n")
        print("| backend | scenario | yardstick | port | port / yardstick | FastAPI's form | its / yardstick |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for backend in args.backends.split(","):
            measured = {app: measure(backend, app, args.requests, directory, helper) for app in APPS}
            for scenario in SCENARIOS:
                port, yardstick = measured["port"][scenario], measured["yardstick"][scenario]
                form = measured["fastapi_form"][scenario]
                cells = [backend, scenario, f"{yardstick / 1e3:,.0f}k", f"{port / 1e3:,.0f}k"]
                cells += [f"{port / yardstick:.2f}x", f"{form / 1e3:,.0f}k", f"{form / yardstick:.2f}x"]
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
