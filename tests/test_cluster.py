"""Past one database server: libpq's multi-host URLs, with ``target_session_attrs``, wherever the port connects.

The first and last hosts of each URL here have no server behind them, as a primary that has died: the port must
start on the one between, for the app, ``create_all`` and the migrations, with the URL's other options kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from backends import listed_hosts, without_password
from tests.helpers import ROOT, free_port, load, serve
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
