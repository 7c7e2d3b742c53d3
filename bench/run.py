"""Measure the port against the FastAPI reference, side by side, on one machine in one run.

Each scenario starts a fresh uvicorn (one worker, pinned to core 0) on a freshly seeded database, loads it
from core 1 (wrk, with 10 connections or 30 for the crowded large GET, or 20 concurrent clients for the big
reads), and reads the server's peak RSS. The apps take turns, three rounds each (the big reads: one), and each
app's median round counts: a machine shared with others drifts by more than 10% within a minute. The CRUD page's
share of the whole-table list is measured the same way, the two taking turns. Run with
``make bench``; ``python -m bench.run --help`` lists the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import decimal
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx2 as httpx
from pydantic_core import to_json

from tests.helpers import copy_modules, free_port

ROOT = Path(__file__).parent.parent
APPS = {"port": ("notes_app:app", "DATABASE_URL"), "fastapi": ("tests.reference_app:app", "REFERENCE_DATABASE_URL")}
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CREATE = "CREATE TABLE notes (id {serial} PRIMARY KEY, text VARCHAR, completed BOOLEAN)"
# The typed table: three columns more, added to both apps with the FastAPI version's four edits.
CREATE_TYPED = (
    "CREATE TABLE notes (id {serial} PRIMARY KEY, text VARCHAR, completed BOOLEAN, due {timestamp}, tags JSON,"
    " price NUMERIC(10, 2))"
)
TYPED_EDITS = [
    (
        '    sqlalchemy.Column("completed", sqlalchemy.Boolean),\n',
        '    sqlalchemy.Column("completed", sqlalchemy.Boolean),\n    sqlalchemy.Column("due", sqlalchemy.DateTime),\n'
        '    sqlalchemy.Column("tags", sqlalchemy.JSON),\n    sqlalchemy.Column("price", sqlalchemy.Numeric(10, 2)),\n',
    ),
    (
        "    completed: bool\n",
        "    completed: bool\n    due: datetime | None = None\n    tags: list[str] | None = None\n"
        "    price: Decimal | None = None\n",
    ),
    (
        '"completed": note.completed}',
        '"completed": note.completed, "due": note.due, "tags": note.tags, "price": note.price}',
    ),
    ("completed=note.completed)", "completed=note.completed, due=note.due, tags=note.tags, price=note.price)"),
    ("import os\n", "import os\nfrom datetime import datetime\nfrom decimal import Decimal\n"),
]
# The port's list read as the FastAPI version reads it, through fetch_all: the path every other query takes.
FETCHED_EDITS = [
    (
        "return await serialize_pages(request, database.iterate_pages(query))",
        "return serialize_response(request, await database.fetch_all(query))",
    )
]
# The CRUD example (examples/crud_app.py), grown as docs/growing.md says, against its FastAPI twin, on 1,000 notes.
CRUD_APPS = {
    "port": ("examples.crud_app:app", "CRUD_DATABASE_URL"),
    "fastapi": ("examples.crud_fastapi_app:app", "CRUD_FASTAPI_DATABASE_URL"),
    "yardstick": ("bench.yardstick_app:app", "YARDSTICK_DATABASE_URL"),  # Starlette on the drivers
    "fastapi_form": ("bench.fastapi_form_app:app", "CRUD_DATABASE_URL"),  # the port, statements built per request
}
CREATE_CRUD = "CREATE TABLE notes (id {serial} PRIMARY KEY, text VARCHAR(200), completed BOOLEAN, priority INTEGER)"
ONE_SCRIPT = """math.randomseed(1)
request = function() return wrk.format("GET", "/notes/" .. math.random(1, 1000)) end
"""
PUT_SCRIPT = """math.randomseed(1)
request = function()
  local body = '{"text": "a note changed by the benchmark", "completed": true, "priority": 3}'
  return wrk.format("PUT", "/notes/" .. math.random(1, 1000), {["Content-Type"] = "application/json"}, body)
end
"""
CREATE_SCRIPT = """wrk.method = "POST"
wrk.body = '{"text": "a note from the benchmark", "completed": false, "priority": 1}'
wrk.headers["Content-Type"] = "application/json"
"""
# scenario: (path, wrk script)
CRUD = {
    "page": ("/notes/?skip=100&limit=100", None),
    "one": ("/notes/", ONE_SCRIPT),
    "put": ("/notes/", PUT_SCRIPT),
    "create": ("/notes/", CREATE_SCRIPT),
}
POST_SCRIPT = """wrk.method = "POST"
wrk.body = '{"text": "a note from the benchmark", "completed": false}'
wrk.headers["Content-Type"] = "application/json"
"""


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """Return the process's peak resident memory (``VmHWM``), or its current one (``VmRSS``), in MiB; with worker
    processes, theirs added up."""
    match = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    own = int(match.group(1)) / 1024 if match else float("nan")
    return sum(rss_mib(int(child), field) for child in children) if children else own


@dataclass
class Result:
    rate: float  # requests per second
    p99_ms: float
    idle_rss_mib: float  # once started, before the first request
    peak_rss_mib: float
    errors: str = ""  # what wrk saw go wrong, if anything


def seed_sqlite(path: Path, rows: int, typed: bool = False, crud: bool = False) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        if crud:
            connection.execute(CREATE_CRUD.format(serial="INTEGER"))
            crud_rows = [(*note, index % 5) for index, note in enumerate(plain_rows(rows))]
            connection.executemany("INSERT INTO notes (text, completed, priority) VALUES (?, ?, ?)", crud_rows)
        elif typed:
            connection.execute(CREATE_TYPED.format(serial="INTEGER", timestamp="DATETIME"))
            values = [
                (*note, due.isoformat(" ", "microseconds"), json.dumps(tags), str(price))
                for note, due, tags, price in typed_rows(rows)
            ]
            connection.executemany(
                "INSERT INTO notes (text, completed, due, tags, price) VALUES (?, ?, ?, ?, ?)", values
            )
        else:
            connection.execute(CREATE.format(serial="INTEGER"))
            connection.executemany("INSERT INTO notes (text, completed) VALUES (?, ?)", plain_rows(rows))
    return f"sqlite:///{path}"


async def seed_postgres(name: str, rows: int, typed: bool = False, crud: bool = False) -> str:
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    connection = await asyncpg.connect(url)
    records: list[tuple[Any, ...]]
    if crud:
        await connection.execute(CREATE_CRUD.format(serial="SERIAL"))
        records = [(*note, index % 5) for index, note in enumerate(plain_rows(rows))]
        columns = ["text", "completed", "priority"]
    elif typed:
        await connection.execute(CREATE_TYPED.format(serial="SERIAL", timestamp="TIMESTAMP"))
        records = [(*note, due, json.dumps(tags), price) for note, due, tags, price in typed_rows(rows)]
        columns = ["text", "completed", "due", "tags", "price"]
    else:
        await connection.execute(CREATE.format(serial="SERIAL"))
        records, columns = list(plain_rows(rows)), ["text", "completed"]
    await connection.copy_records_to_table("notes", records=records, columns=columns)
    await connection.close()
    return url


def plain_rows(rows: int) -> Iterator[tuple[str, bool]]:
    return ((f"note number {index}", index % 2 == 0) for index in range(rows))


def typed_rows(rows: int) -> Iterator[tuple[tuple[str, bool], datetime.datetime, list[str], decimal.Decimal]]:
    start = datetime.datetime(2026, 1, 1, 9, 30)
    for index, note in enumerate(plain_rows(rows)):
        due = start + datetime.timedelta(minutes=index, microseconds=index)
        yield note, due, ["home", f"tag {index % 7}"], decimal.Decimal(index) / 4


def edited_apps(directory: Path, edits: list[tuple[str, str]], names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Write both apps, those ``names`` with ``edits``, beside the port's modules in ``directory``; return ``APPS``
    for them. Each edit must change one app at least."""
    copy_modules(directory)
    docs_files = directory / "node_modules"  # the docs pages' files, as beside the port
    docs_files.unlink(missing_ok=True)
    docs_files.symlink_to(ROOT / "node_modules")
    sources = {"port": ROOT / "notes_app.py", "fastapi": ROOT / "tests" / "reference_app.py"}
    unused = set(edits)
    apps = {}
    for name, (_, variable) in APPS.items():
        text = sources[name].read_text()
        for old, new in edits if name in names else []:
            if old in text:
                text = text.replace(old, new)
                unused.discard((old, new))
        (directory / f"edited_{name}.py").write_text(text)
        apps[name] = (f"edited_{name}:app", variable)
    assert not unused, f"edits that change no app: {unused}"
    return apps


@contextmanager
def server(app: str, variable: str, url: str, workers: int = 1, cwd: Path = ROOT) -> Iterator[tuple[str, int, float]]:
    """Serve ``app`` on ``url``'s database under uvicorn on core 0 (both cores for 2 workers), from ``cwd``; yield its
    address, pid and idle RSS."""
    port = free_port()
    cores = "0" if workers == 1 else "0,1"
    command = ["taskset", "-c", cores, sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log", "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, variable: url})
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5 if workers > 1 else 0)  # the workers start after the supervisor listens
        idle = rss_mib(process.pid, "VmRSS")
        httpx.get(f"http://127.0.0.1:{port}/notes/", timeout=120)  # warm up
        yield f"http://127.0.0.1:{port}", process.pid, idle
    finally:
        process.terminate()
        process.wait(timeout=60)


def run_wrk(
    url: str, seconds: int, connections: int, script: str | None = None, path: str = "/notes/"
) -> tuple[float, float, int, str]:
    """Return wrk's requests per second, 99th percentile latency in ms, count of 2xx answers, and errors seen."""
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
    command += ["--latency", f"{url}{path}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            command += ["-s", lua.name]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = [f"{failed.group(1)} non-2xx"] if failed else []
    errors += re.findall(r"Socket errors: (.*)", output)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    acknowledged = answered - (int(failed.group(1)) if failed else 0)
    return rate, float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit], acknowledged, ", ".join(errors)


async def concurrent_reads(url: str, clients: int) -> tuple[float, float]:
    """Send ``clients`` GETs at once; return the wall time of all and the slowest one's, in seconds."""
    async with httpx.AsyncClient(timeout=600) as client:

        async def read() -> float:
            start = time.perf_counter()
            response = await client.get(f"{url}/notes/")
            assert response.status_code == 200
            return time.perf_counter() - start

        start = time.perf_counter()
        slowest = max(await asyncio.gather(*(read() for _ in range(clients))))
        return time.perf_counter() - start, slowest


def database_for(backend: str, app: str, rows: int, directory: Path, typed: bool = False, crud: bool = False) -> str:
    if backend == "sqlite":
        path = directory / f"{app}-{rows}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return seed_sqlite(path, rows, typed, crud)
    return asyncio.run(seed_postgres(f"bench_{app}", rows, typed, crud))


def measure(backend: str, scenario: str, args: argparse.Namespace, directory: Path) -> dict[str, Result]:
    """Run ``scenario`` on each app in turn, ``args.rounds`` times over; keep each app's median round."""
    sizes = {"small": 10, "hundred": 100, "fetched": 100, "post": 0, "post2": 0}
    sizes |= {"large": args.large, "crowded": args.large, "huge": args.huge}
    rows = sizes.get(scenario, 1000 if scenario in CRUD else args.large)
    connections = args.crowd if scenario == "crowded" else args.connections
    workers = 2 if scenario == "post2" else 1
    typed, crud = scenario == "typed", scenario in CRUD
    apps, cwd = CRUD_APPS if crud else APPS, ROOT
    if typed:
        apps, cwd = edited_apps(directory, TYPED_EDITS, APPS), directory
    elif scenario == "fetched":
        apps, cwd = edited_apps(directory, FETCHED_EDITS, ["port"]), directory
    rounds: dict[str, list[Result]] = {name: [] for name in apps}
    for _ in range(1 if scenario == "huge" else args.rounds):
        for name, (app, variable) in apps.items():
            url = database_for(backend, name, rows, directory, typed, crud)
            with server(app, variable, url, workers, cwd) as (address, pid, idle):
                if scenario == "huge":
                    wall, slowest = asyncio.run(concurrent_reads(address, args.clients))
                    rounds[name].append(Result(args.clients / wall, slowest * 1000, idle, rss_mib(pid)))
                else:
                    path, script = CRUD.get(scenario, ("/notes/", POST_SCRIPT if scenario.startswith("post") else None))
                    rate, p99, acknowledged, errors = run_wrk(address, args.seconds, connections, script, path)
                    rounds[name].append(Result(rate, p99, idle, rss_mib(pid), errors))
            if scenario.startswith("post"):
                check_durable(backend, url, name, acknowledged)
    return {name: median(results) for name, results in rounds.items()}


def page_share(backend: str, args: argparse.Namespace, directory: Path) -> float:
    """Return the port's CRUD page of 100 as a share of its whole-table list of 100, in req/s, the two taking turns
    as the apps do in ``measure``: two scenarios measured a few minutes apart differ by the machine's drift."""
    rates: dict[str, list[float]] = {"hundred": [], "page": []}
    for _ in range(args.rounds):
        for scenario, measured in rates.items():
            crud = scenario in CRUD
            app, variable = (CRUD_APPS if crud else APPS)["port"]
            url = database_for(backend, "port", 1000 if crud else 100, directory, crud=crud)
            path, script = CRUD.get(scenario, ("/notes/", None))
            with server(app, variable, url) as (address, _, _):
                measured.append(run_wrk(address, args.seconds, args.connections, script, path)[0])
    hundred, page = (sorted(measured)[len(measured) // 2] for measured in rates.values())
    return page / hundred


def median(results: list[Result]) -> Result:
    """Return the round of median rate, with the highest peak memory of all rounds."""
    middle = sorted(results, key=lambda result: result.rate)[len(results) // 2]
    return dataclasses.replace(middle, peak_rss_mib=max(result.peak_rss_mib for result in results))


def check_durable(backend: str, url: str, app: str, acknowledged: int) -> None:
    """Stop the benchmark unless every note acknowledged with a 200 is stored (counted after the server stopped)."""
    if backend == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            stored = connection.execute("SELECT count(*) FROM notes").fetchone()[0]
    else:
        stored = asyncio.run(count_postgres(url))
    if stored < acknowledged:
        raise SystemExit(f"{app} on {backend}: {acknowledged} notes acknowledged, {stored} stored")


async def count_postgres(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM notes")
        return count
    finally:
        await connection.close()


def distance(args: argparse.Namespace, port_rates: dict[tuple[str, str], float]) -> None:
    """Print the req/s of the notes API on a bare asyncpg pool, and how close the port comes to it."""
    rates = {}
    for scenario, rows, script in (("small", 10, None), ("post", 0, POST_SCRIPT)):
        measured = []
        for _ in range(args.rounds):
            url = asyncio.run(seed_postgres("bench_bare", rows))
            with server("bench.bare_asyncpg_app:app", "DATABASE_URL", url) as (address, _, _):
                measured.append(run_wrk(address, args.seconds, args.connections, script)[0])
        rates[scenario] = sorted(measured)[len(measured) // 2]
    print(
        f"\nDistance on PostgreSQL: a bare asyncpg pool answers the 10-row GET at {rates['small']:,.0f} req/s", end=""
    )
    print(f" and the POST at {rates['post']:,.0f} req/s", end="")
    if ("postgresql", "small") in port_rates and ("postgresql", "post") in port_rates:
        small, post = (port_rates["postgresql", scenario] / rates[scenario] for scenario in ("small", "post"))
        print(f"; the port reaches {small:.0%} and {post:.0%} of that", end="")
    print(".", end="")


def ceiling(args: argparse.Namespace) -> float:
    """Return the req/s of a bare Starlette app answering the small GET from memory: the framework's limit."""
    with server("bench.bare_app:app", "UNUSED", "") as (address, _, _):
        rate, _, _, _ = run_wrk(address, args.seconds, args.connections)
    return rate


async def floor(path: Path, rows: int, repeat: int) -> float:
    """Return the ms for aiosqlite alone to fetch ``rows`` notes and pydantic_core to encode them."""
    async with aiosqlite.connect(path) as connection:
        start = time.perf_counter()
        for _ in range(repeat):
            cursor = await connection.execute("SELECT id, text, completed FROM notes")
            fetched = await cursor.fetchall()
            to_json([{"id": id, "text": text, "completed": bool(done)} for id, text, done in fetched])
        return (time.perf_counter() - start) / repeat * 1000


LABELS = {
    "small": "GET /notes/, 10 rows",
    "large": "GET /notes/, {large:,} rows",
    "crowded": "GET /notes/, {large:,} rows, {crowd} connections",
    "post": "POST /notes/",
    "post2": "POST /notes/, 2 workers on 2 cores",
    "huge": "{clients} concurrent GETs of {huge:,} rows",
    "typed": "GET /notes/, {large:,} rows, with DateTime, JSON and Numeric columns",
    "hundred": "GET /notes/, 100 rows (the whole-table list)",
    "fetched": "GET /notes/, 100 rows through fetch_all",
    "page": "CRUD: GET /notes/?skip=100&limit=100 of 1,000",
    "one": "CRUD: GET /notes/{{id}}",
    "put": "CRUD: PUT /notes/{{id}}",
    "create": "CRUD: POST /notes/ (201)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    scenarios = "small,large,crowded,post,post2,huge,typed,hundred,fetched,page,one,put,create"
    parser.add_argument("--scenarios", default=scenarios)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each app, taken in turn; the median counts")
    parser.add_argument("--connections", type=int, default=10, help="wrk's open connections")
    parser.add_argument("--large", type=int, default=10_000, help="rows in the large GET")
    parser.add_argument("--crowd", type=int, default=30, help="wrk's connections in the crowded large GET")
    parser.add_argument("--huge", type=int, default=100_000, help="rows in the concurrent big reads")
    parser.add_argument("--clients", type=int, default=20, help="concurrent big reads")
    args = parser.parse_args()

    print(f"# {os.cpu_count()} cores, {platform_line()}; server on core 0, load on core 1, one uvicorn worker;", end="")
    print(f" median of {args.rounds} rounds\n")
    columns = ["backend", "scenario", "FastAPI req/s", "port req/s", "ratio", "FastAPI p99 ms", "port p99 ms"]
    columns += ["FastAPI RSS MiB, idle → peak", "port RSS MiB, idle → peak"]
    print("| " + " | ".join(columns) + " |\n|---|---|" + "---:|" * 7)
    port_rates: dict[tuple[str, str], float] = {}
    yardstick_rows: list[str] = []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        directory = Path(tmp)
        for backend in args.backends.split(","):
            for scenario in args.scenarios.split(","):
                results = measure(backend, scenario, args, directory)
                fastapi, port = results["fastapi"], results["port"]
                port_rates[backend, scenario] = port.rate
                label = LABELS[scenario].format(**vars(args))
                rates = [f"{r.rate:,.1f}" + (f" ({r.errors})" if r.errors else "") for r in (fastapi, port)]
                cells = [backend, label, *rates]
                ratio = f"{port.rate / fastapi.rate:.2f}x" if fastapi.rate else "n/a"  # none answered in a round
                cells += [ratio, f"{fastapi.p99_ms:,.1f}", f"{port.p99_ms:,.1f}"]
                cells += [f"{result.idle_rss_mib:,.0f} → {result.peak_rss_mib:,.0f}" for result in (fastapi, port)]
                print("| " + " | ".join(cells) + " |", flush=True)
                if "yardstick" in results:
                    form = results["fastapi_form"]
                    yardstick_rows.append(yardstick_row(backend, label, results["yardstick"], port, form))
        if yardstick_rows:
            print("\nThe CRUD rows against the yardstick, Starlette on the drivers (bench/yardstick_app.py), and the")
            print("port in the FastAPI twin's form, statements built per request (bench/fastapi_form_app.py):\n")
            columns = ["backend", "scenario", "yardstick req/s", "port req/s", "port / yardstick"]
            columns += ["yardstick p99 ms", "port p99 ms", "FastAPI's form req/s", "its / yardstick", "its p99 ms"]
            print("| " + " | ".join(columns) + " |\n|---|---|" + "---:|" * 8)
            print("\n".join(yardstick_rows))
        if "page" in args.scenarios.split(","):
            shares = ", ".join(
                f"{page_share(name, args, directory):.0%} on {name}" for name in args.backends.split(",")
            )
            print(
                f"\nShare: the CRUD page of 100 answers {shares} of the whole-table list's req/s, taking turns.", end=""
            )
        if "postgresql" in args.backends.split(","):
            distance(args, port_rates)
        bare = ceiling(args)
        print(f"\nCeiling: a bare Starlette app answers the 10-row GET from memory at {bare:,.0f} req/s", end="")
        if ("sqlite", "small") in port_rates:
            print(f"; the port, on SQLite, reaches {port_rates['sqlite', 'small'] / bare:.0%} of that", end="")
        path = Path(seed_sqlite(directory / "floor.db", args.large).removeprefix("sqlite:///"))
        milliseconds = asyncio.run(floor(path, args.large, 20))
        print(f".\nFloor: aiosqlite fetching {args.large:,} rows", end="")
        print(f" and pydantic_core encoding them take {milliseconds:.1f} ms", end="")
        if ("sqlite", "large") in port_rates:
            print(
                f"; the port serves them in {1000 / port_rates['sqlite', 'large']:.1f} ms a request under load", end=""
            )
        print(".")


def yardstick_row(backend: str, label: str, yardstick: Result, port: Result, form: Result) -> str:
    def rate(result: Result) -> str:
        return f"{result.rate:,.1f}" + (f" ({result.errors})" if result.errors else "")

    def share(result: Result) -> str:
        return f"{result.rate / yardstick.rate:.0%}" if yardstick.rate else "n/a"

    cells = [
        backend,
        label,
        rate(yardstick),
        rate(port),
        share(port),
        f"{yardstick.p99_ms:,.1f}",
        f"{port.p99_ms:,.1f}",
    ]
    cells += [rate(form), share(form), f"{form.p99_ms:,.1f}"]
    return "| " + " | ".join(cells) + " |"


def platform_line() -> str:
    model = re.search(r"model name\s+: (.*)", Path("/proc/cpuinfo").read_text())
    return f"{model.group(1) if model else 'unknown CPU'}, Python {sys.version.split()[0]}"


if __name__ == "__main__":
    main()
