"""Reads from PostgreSQL's read replicas, opt in: ``DATABASE_REPLICA_URL`` names them, one host each.

``DatabaseSelector``, an ASGI middleware named after Rails' own, sends the reads of ``GET`` and ``HEAD`` requests to
the replicas; everything else, and every write, goes to the primary. A client never reads an older state than its
own writes: a read first asks the primary where its log ends (every commit it has acknowledged, to any client, from
any process, is before that point), and goes to a replica only once the replica has replayed up to there. A replica
that has not within ``max_lag`` seconds, or that does not answer, is left alone for ``retry`` seconds, and the read
goes to the next replica or to the primary; the client sees no error.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from typing import Any, NamedTuple

import databases
from starlette.types import ASGIApp, Receive, Scope, Send

from storage.backends import Backend
from storage.backends.postgres import PostgresBackend, release_to_pool
from storage.urls import listed_hosts, with_host, without_password

logger = logging.getLogger("notes_app")

reads_from_replicas: contextvars.ContextVar[bool] = contextvars.ContextVar("reads_from_replicas", default=False)


class DatabaseSelector:
    """Send the database reads of ``GET`` and ``HEAD`` requests to the replicas, if there are any."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        token = reads_from_replicas.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            reads_from_replicas.reset(token)


class Replica:
    """One read replica: its URL, its pool once open, and until when it is left alone."""

    retry = 5.0  # seconds a replica behind or down is left alone

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: Any = None
        self.skipped_until = 0.0

    async def open(self, timeout: float) -> None:
        """Open the replica's pool, its options (``max_size``, ``ssl``) read from its URL as ``databases`` reads the
        primary's; no connection is opened yet, so that a replica down does not keep the app from starting."""
        import asyncpg
        from databases.backends.postgres import PostgresBackend as DatabasesBackend

        backend = PostgresBackend(databases.DatabaseURL(self.url), timeout)
        url = backend.url
        options = DatabasesBackend(url, **backend.options())._get_connection_kwargs()
        self.pool = await asyncpg.create_pool(
            host=url.hostname,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            **{**options, "min_size": 0},
        )

    def skip(self, why: str) -> None:
        """Leave the replica alone for ``retry`` seconds."""
        self.skipped_until = asyncio.get_running_loop().time() + self.retry
        logger.warning("Reading elsewhere for %g s: the replica at %s %s", self.retry, without_password(self.url), why)


class Leased(NamedTuple):
    """A connection to a replica, to give back with ``release``."""

    replica: Replica
    driver: Any

    async def release(self) -> None:
        await release_to_pool(self.driver)


class Replicas:
    """The read replicas of a database, taken in turn."""

    poll = 0.005  # seconds between two looks at a replica catching up

    def __init__(self, backend: Backend, url: str, max_lag: float) -> None:
        if backend.name != "postgresql":
            raise ValueError(f"{backend.name} has no read replicas here: DATABASE_REPLICA_URL is for PostgreSQL")
        self.backend = backend
        self.max_lag = max_lag
        self.members = [Replica(with_host(url, host, port)) for host, port in listed_hosts(url)]
        self.turn = itertools.count()

    async def connect(self) -> None:
        for replica in self.members:
            await replica.open(self.backend.timeout)

    def close(self) -> None:
        """Close every replica's connections at once: they hold nothing to keep."""
        for replica in self.members:
            if replica.pool is not None:
                replica.pool.terminate()
                replica.pool = None

    async def acquire(self, position: int) -> Leased | None:
        """Return a replica that has replayed the primary's log up to ``position``, with a connection to it; ``None``
        if none has within ``max_lag`` seconds."""
        start, now = next(self.turn), asyncio.get_running_loop().time()
        for index in range(len(self.members)):
            replica = self.members[(start + index) % len(self.members)]
            if replica.skipped_until > now or replica.pool is None:
                continue
            try:
                async with asyncio.timeout(self.max_lag):
                    driver = await replica.pool.acquire()
                    try:
                        while await self.backend.position(driver) < position:
                            await asyncio.sleep(self.poll)
                    except BaseException:
                        await release_to_pool(driver)
                        raise
                    return Leased(replica, driver)
            except TimeoutError:
                replica.skip(f"has not replayed the primary's last commits in {self.max_lag:g} s")
            except self.backend.errors as exc:
                replica.skip(f"failed: {exc}")
        return None
