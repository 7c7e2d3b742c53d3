"""Past one database server: libpq's multi-host URLs, with ``target_session_attrs``, wherever the port connects.

The first and last hosts of each URL here have no server behind them, as a primary that has died: the port must
start on the one between, for the app, ``create_all`` and the migrations, with the URL's other options kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from storage.replicas import Replica
from storage.urls import listed_hosts, without_password
from tests.helpers import ROOT, Cluster, PgBouncer, free_port, load, pgbouncer, postgres_cluster, serve
from tests.test_migrations import alembic


def cluster_url(url: str, form: str, **options: str) -> str:
    """Return ``url`` (one host) as a cluster's URL in libpq's ``form``: its own host between two with no server, at
    an address where no port has one."""
    parts = urllib.parse.urlsplit(url)
    userinfo, _, live = parts.netloc.rpartition("@")
    addresses = [f"127.0.0.2:{free_port()}", live, f"127.0.0.2:{free_port()}"]
    query = [*urllib.parse.parse_qsl(parts.query), *options.items()]
    if form == "netloc":
        netloc = f"{userinfo}@{','.join(addresses)}"
    elif form == "host=h:p&host=h:p":
        netloc, query = f"{userinfo}@", [*(("host", address) for address in addresses), *query]
    else:
        hosts, ports = zip(*(address.split(":") for address in addresses))
        netloc, query = f"{userinfo}@", [("host", ",".join(hosts)), ("port", ",".join(ports)), *query]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=urllib.parse.urlencode(query)))


FORMS = [
    pytest.param("netloc", id="user@h1:p1,h2:p2"),
    pytest.param("host=h:p&host=h:p", id="host=h1:p1&host=h2:p2"),
    pytest.param("host=h,h&port=p,p", id="host=h1,h2&port=p1,p2"),
]


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        pytest.param("postgresql://u@db:5432/n", [("db", 5432)], id="one host"),
        pytest.param("postgresql://u:p@db1:5432,db2:5433/n", [("db1", 5432), ("db2", 5433)], id="netloc"),
        pytest.param("postgresql://u@db1,[::1]:6432/n", [("db1", None), ("::1", 6432)], id="IPv6"),
        pytest.param("postgresql://u@/n?host=db1:5432&host=db2", [("db1", 5432), ("db2", None)], id="host=h:p"),
        pytest.param("postgresql://u@/n?host=db1,db2&port=5432,5433", [("db1", 5432), ("db2", 5433)], id="port=p,p"),
        pytest.param("postgresql://u@/n?host=db1,db2&port=6432", [("db1", 6432), ("db2", 6432)], id="one port"),
        pytest.param("postgresql://u@/n?host=/run/postgresql", [("/run/postgresql", None)], id="socket"),
    ],
)
def test_the_hosts_of_a_url(url: str, hosts: list[tuple[str, int | None]]) -> None:
    assert listed_hosts(url) == hosts


def test_a_host_the_url_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="Cannot read the host 'db1:5432:1'"):
        listed_hosts("postgresql://u@db1:5432:1,db2/n")


def test_the_password_is_hidden_whatever_the_hosts() -> None:
    url = "postgresql://user:s3cret@db1:5432,db2:5433/notes?target_session_attrs=read-write"
    assert without_password(url) == "postgresql://user:********@db1:5432,db2:5433/notes?target_session_attrs=read-write"
    assert without_password("postgresql://user@db1,db2/notes") == "postgresql://user@db1,db2/notes"


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer-transaction"], indirect=True)
@pytest.mark.parametrize("form", FORMS)
def test_the_app_serves_on_a_cluster_url(database_url: str, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = load(
        "notes_app", "DATABASE_URL", cluster_url(database_url, form, target_session_attrs="read-write"), monkeypatch
    )
    with TestClient(app.app) as client:  # create_all on the cluster URL too
        response = client.post("/notes/", json={"text": "on the live host", "completed": False})
        assert response.status_code == 200, response.text
        assert client.get("/notes/").json() == [{"id": 1, "text": "on the live host", "completed": False}]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("form", FORMS)
def test_the_migrations_run_on_a_cluster_url(database_url: str, form: str) -> None:
    url = cluster_url(database_url, form, target_session_attrs="primary")
    alembic(url, "upgrade", "head")
    assert "No new upgrade operations detected" in alembic(url, "check")
    alembic(url, "downgrade", "base")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_target_session_attrs_chooses_the_server(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = load(
        "notes_app",
        "DATABASE_URL",
        cluster_url(database_url, "netloc", target_session_attrs="prefer-standby"),
        monkeypatch,
    )
    with TestClient(app.app) as client:  # no standby: the primary will do
        assert client.get("/notes/").status_code == 200

    url = cluster_url(database_url, "netloc", target_session_attrs="standby")
    password = url.replace("postgres@", "postgres:s3cret@")
    command = [sys.executable, "-c", "import asyncio, notes_app; asyncio.run(notes_app.database.connect())"]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "DATABASE_URL": password}, capture_output=True, text=True
    )
    assert result.returncode == 1
    hosts = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    assert f"Cannot use the database at postgresql://postgres:********@{hosts}/" in result.stderr
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_uvicorn_serves_on_a_cluster_url(database_url: str) -> None:
    url = cluster_url(database_url, "netloc", target_session_attrs="read-write")
    with serve("notes_app:app", {"DATABASE_URL": url}) as server:
        response = httpx.post(f"{server.url}/notes/", json={"text": "over the wire", "completed": True})
        assert response.status_code == 200, response.text
        assert httpx.get(f"{server.url}/notes/").json() == [{"id": 1, "text": "over the wire", "completed": True}]


async def post_through_a_failover(
    base_url: str, cluster: Cluster, bouncer: PgBouncer | None, clients: int = 20
) -> Failover:
    """POST notes from ``clients`` at once for 8 s; kill the primary 2 s in and promote the standby a second later
    (then point ``bouncer`` at it)."""
    failover = Failover()
    start = time.monotonic()

    async def client(number: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            for index in itertools.count():
                began = time.monotonic()
                if began > start + 8:
                    return
                text = f"client {number} note {index}"
                response = await client.post("/notes/", json={"text": text, "completed": False})
                failover.answers.append((began, time.monotonic(), response.status_code))
                if response.status_code == 200:
                    assert response.json() == {"id": response.json()["id"], "text": text, "completed": False}
                    failover.acknowledged[response.json()["id"]] = text
                else:
                    failover.refused.add(text)
                    assert response.json() == {"detail": "Database unavailable, try again later"}, response.text
                    assert response.headers["retry-after"] == "1"

    async def chaos() -> None:
        await asyncio.sleep(2)
        failover.killed = time.monotonic()
        cluster.kill("primary")
        await asyncio.sleep(1)
        await asyncio.to_thread(cluster.promote, "standby")
        if bouncer is not None:
            bouncer.point_at(cluster.url("standby"))

    await asyncio.gather(chaos(), *(client(number) for number in range(clients)))
    return failover


async def cluster_state(cluster: Cluster) -> tuple[bool, str | None]:
    """Return whether the standby is still in recovery, and whether the old primary answers."""
    in_recovery = await cluster.sql("standby", "SELECT pg_is_in_recovery()")
    try:
        await cluster.sql("primary", "SELECT 1")
    except OSError as exc:
        return in_recovery, None if isinstance(exc, ConnectionRefusedError) else repr(exc)
    return in_recovery, "the primary answers"


class Failover:
    """What the clients heard through a failover."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, float, int]] = []  # when each request began and ended, and its status
        self.acknowledged: dict[int, str] = {}
        self.refused: set[str] = set()
        self.killed = 0.0


FAILOVER_RUNS = int(os.environ.get("FAILOVER_RUNS", "1"))  # make soak runs each ten times


@pytest.mark.parametrize("run", range(FAILOVER_RUNS))
@pytest.mark.parametrize("through", ["netloc", "host=h:p&host=h:p", "pgbouncer-transaction"])
def test_a_failover_loses_no_acknowledged_note(through: str, run: int) -> None:
    with postgres_cluster() as cluster, contextlib.ExitStack() as stack:
        nodes = ["primary", "standby"]
        bouncer = None
        if through == "netloc":
            hosts = ",".join(f"127.0.0.1:{cluster.ports[node]}" for node in nodes)
            options = "target_session_attrs=read-write"
        elif through == "host=h:p&host=h:p":
            hosts = ""
            options = "&".join(f"host=127.0.0.1:{cluster.ports[node]}" for node in nodes)
            options += "&target_session_attrs=read-write"
        else:
            # One PgBouncer in front, pointed at the new primary once it is promoted, as an HA manager's callback
            # does; a client waits for a server at most a second.
            settings = "query_wait_timeout = 1\nserver_connect_timeout = 1\nserver_login_retry = 1"
            bouncer = stack.enter_context(pgbouncer("transaction", cluster.url("primary"), settings))
            hosts, options = f"127.0.0.1:{bouncer.port}", "statement_cache_size=0"
        url = f"postgresql://postgres@{hosts}/notes?{options}"
        with serve("notes_app:app", {"DATABASE_URL": url, "DATABASE_TIMEOUT": "2"}) as server:
            failover = asyncio.run(post_through_a_failover(server.url, cluster, bouncer))
            listed = httpx.get(f"{server.url}/notes/", timeout=30)
        assert listed.status_code == 200, listed.text
        state = asyncio.run(cluster_state(cluster))

    statuses = collections.Counter(status for _, _, status in failover.answers)
    assert set(statuses) <= {200, 503}, statuses  # PgBouncer may hold the requests until it has a server again
    assert state == (False, None)  # the standby took over, the primary is gone
    assert max(ended - began for began, ended, _ in failover.answers) < 2 + 2  # DATABASE_TIMEOUT + 2 s
    back = min(ended for began, ended, status in failover.answers if began > failover.killed and status == 200)
    assert back - failover.killed < 5
    notes = {note["id"]: note["text"] for note in listed.json()}
    assert {key: notes.get(key) for key in failover.acknowledged} == failover.acknowledged  # none lost
    # A note answered 503 may be stored (its commit reached the standby, its answer was lost): no other is.
    assert set(notes.values()) - set(failover.acknowledged.values()) <= failover.refused
    assert [note["id"] for note in listed.json()] == sorted(notes)


def test_a_write_reaching_a_read_only_standby_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    with postgres_cluster(synchronous=False) as cluster:
        primary = load("notes_app", "DATABASE_URL", cluster.url("primary", "notes"), monkeypatch)
        with TestClient(primary.app):  # the table, made on the primary, streamed to the standby
            pass
        while asyncio.run(cluster.sql("standby", "SELECT to_regclass('notes') IS NULL", "notes")):
            time.sleep(0.05)
        app = load("notes_app", "DATABASE_URL", cluster.url("standby", "notes"), monkeypatch)
        with TestClient(app.app, raise_server_exceptions=False) as client:
            response = client.post("/notes/", json={"text": "to a standby", "completed": False})
            assert response.status_code == 503, response.text
            assert response.json() == {"detail": "Database unavailable, try again later"}
            assert client.get("/notes/").json() == []


def test_a_shutdown_waits_no_longer_than_its_deadline_for_a_server_that_does_not_answer(tmp_path: Path) -> None:
    # PgBouncer holds the port's connections while it has no server: a statement, its cancellation and the release
    # that waits for it never complete, until the request's deadline closes the connection.
    log = tmp_path / "stderr"
    with postgres_cluster(synchronous=False) as cluster, pgbouncer("transaction", cluster.url("primary")) as bouncer:
        url = f"postgresql://postgres@127.0.0.1:{bouncer.port}/notes?statement_cache_size=0"
        environment = {"DATABASE_URL": url, "DATABASE_TIMEOUT": "2"}
        with log.open("w") as stderr, serve("notes_app:app", environment, stderr=stderr) as server:
            response = httpx.post(f"{server.url}/notes/", json={"text": "before", "completed": True})
            assert response.status_code == 200, response.text
            cluster.kill("primary")

            async def post_then_stop() -> tuple[list[int], float]:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    note = {"text": "while the server is gone", "completed": True}
                    posts = [asyncio.create_task(client.post("/notes/", json=note)) for _ in range(10)]
                    await asyncio.sleep(1)
                    server.process.terminate()
                    stopping = time.monotonic()
                    statuses = [response.status_code for response in await asyncio.gather(*posts)]
                    while server.process.poll() is None and time.monotonic() - stopping < 30:
                        await asyncio.sleep(0.05)
                    return statuses, time.monotonic() - stopping

            statuses, stopped_in = asyncio.run(post_then_stop())
    logged = log.read_text()
    assert statuses == [503] * 10
    assert stopped_in < 2 + 2, logged  # the requests' deadline, within which their connections are closed
    assert "closed at once" not in logged, logged  # no connection was left for the shutdown to close
    assert "Traceback" not in logged


def replica_app(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, max_lag: str = "1", replicas: str = "") -> Any:
    """Return the app on the cluster's primary, reading from its standby (or from ``replicas``)."""
    monkeypatch.setenv("DATABASE_REPLICA_URL", replicas or cluster.url("standby", "notes"))
    monkeypatch.setenv("DATABASE_REPLICA_MAX_LAG", max_lag)
    return load("notes_app", "DATABASE_URL", cluster.url("primary", "notes"), monkeypatch)


LISTS_READ = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'notes' AND query LIKE 'SELECT notes.id%'"


def test_lists_are_read_from_a_replica_and_hold_each_clients_own_writes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_cluster(synchronous=False) as cluster:
        # Two replicas, taken in turn: one with no server, left alone once it fails.
        dead = f"127.0.0.2:{free_port()}"
        replicas = f"postgresql://postgres@{dead},127.0.0.1:{cluster.ports['standby']}/notes"
        app = replica_app(cluster, monkeypatch, replicas=replicas)
        with TestClient(app.app) as client:
            listed: list[dict[str, Any]] = []
            for index in range(50):
                response = client.post("/notes/", json={"text": f"note {index}", "completed": False})
                assert response.status_code == 200, response.text
                listed.append(response.json())
                response = client.get("/notes/")  # at once: the standby replays asynchronously
                assert response.status_code == 200, response.text
                assert response.json() == listed
            assert asyncio.run(cluster.sql("standby", LISTS_READ, "notes")) > 0
            assert asyncio.run(cluster.sql("primary", LISTS_READ, "notes")) == 0
    assert caplog.text.count(f"the replica at postgresql://postgres@{dead}/notes failed") == 1


def test_a_replica_behind_or_down_is_skipped(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(Replica, "retry", 1.0)
    with postgres_cluster(synchronous=False) as cluster:
        app = replica_app(cluster, monkeypatch, max_lag="0.5")
        with TestClient(app.app) as client:
            assert client.get("/notes/").json() == []
            asyncio.run(cluster.sql("standby", "ALTER SYSTEM SET recovery_min_apply_delay = '3s'"))
            asyncio.run(cluster.sql("standby", "SELECT pg_reload_conf()"))
            response = client.post("/notes/", json={"text": "behind", "completed": False})
            assert response.status_code == 200, response.text
            began = time.monotonic()
            response = client.get("/notes/")
            assert response.status_code == 200, response.text
            assert response.json() == [{"id": 1, "text": "behind", "completed": False}]  # from the primary
            assert 0.5 <= time.monotonic() - began < 1.5  # the replica waited for, then left alone
            began = time.monotonic()
            assert client.get("/notes/").json() == [{"id": 1, "text": "behind", "completed": False}]
            assert time.monotonic() - began < 0.5
            assert "has not replayed the primary's last commits in 0.5 s" in caplog.text

            cluster.kill("standby")
            time.sleep(1)  # the replica's retry
            response = client.get("/notes/")
            assert response.status_code == 200, response.text
            assert response.json() == [{"id": 1, "text": "behind", "completed": False}]
            assert f"the replica at {cluster.url('standby', 'notes')} failed" in caplog.text
