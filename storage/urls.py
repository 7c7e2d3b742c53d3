"""Database URLs in libpq's forms: a cluster's hosts, one of them alone, and the password hidden for the log."""

from __future__ import annotations

import re
import urllib.parse


def listed_hosts(url: str) -> list[tuple[str, int | None]]:
    """Return the hosts of a URL with their ports, in libpq's forms: ``user@h1:5432,h2:5433/db``,
    ``?host=h1:5432&host=h2:5433``, ``?host=h1,h2&port=5432,5433``; an IPv6 address in brackets."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    listed = [host for host in parts.netloc.rpartition("@")[2].split(",") if host]
    listed += [host for value in query.get("host", []) for host in value.split(",") if host]
    ports = [port for value in query.get("port", []) for port in value.split(",")]
    hosts: list[tuple[str, int | None]] = []
    for index, item in enumerate(listed):
        found = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d*))?|(?P<host>[^:]*)(?::(?P<port>\d*))?", item)
        if found is None or (found["v6"] is None and ":" in item.partition(":")[2]):
            raise ValueError(f"Cannot read the host {item!r} of the database URL")
        port = found["p6"] or found["port"] or (ports[index] if index < len(ports) else ports[0] if ports else "")
        hosts.append((urllib.parse.unquote(found["v6"] or found["host"]), int(port) if port else None))
    return hosts


def with_host(url: str, host: str, port: int | None) -> str:
    """Return ``url`` with ``host`` and ``port`` as its only host, whatever its form."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    query = [(key, value) for key, value in urllib.parse.parse_qsl(parts.query) if key not in ("host", "port")]
    netloc = f"{userinfo}{at}{netloc_host(host, port)}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=urllib.parse.urlencode(query)))


def netloc_host(host: str, port: int | None) -> str:
    """Return ``host`` and ``port`` as a URL's network location writes them."""
    written = f"[{host}]" if ":" in host else host
    return f"{written}:{port}" if port else written


def without_password(url: str) -> str:
    """Return ``url`` with its password, if any, as ``********``, whatever its hosts."""
    parts = urllib.parse.urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:********@{hosts}")) if colon else url
