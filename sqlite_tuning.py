"""What makes ``databases`` fast on SQLite without losing a note: one shared connection, and group commit.

``databases`` opens a new SQLite connection, and a thread, for every query, and commits every INSERT on its
own, each with an fsync. Here all queries share one connection in WAL mode, and the INSERTs waiting at the
same moment are committed together: one fsync for many notes, each answered only once its commit is on disk.
A list read while a group commits may show the group's notes a moment before their creators hear back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import databases
from sqlalchemy.sql import ClauseElement

PRAGMAS = [
    "PRAGMA busy_timeout = 30000",  # Wait for other worker processes' writes instead of failing.
    "PRAGMA journal_mode = WAL",  # Readers and the writer do not block each other; one fsync per commit.
    "PRAGMA synchronous = FULL",  # A commit is on disk, power cut or not, before it returns.
]


class GroupCommit:
    """Run INSERTs in groups, one transaction each, and give each its result once the group is committed."""

    def __init__(self, database: databases.Database) -> None:
        self.database = database
        self.queue: asyncio.Queue[tuple[ClauseElement, asyncio.Future[Any]]] = asyncio.Queue()

    async def execute(self, query: ClauseElement) -> Any:
        """Return what ``database.execute(query)`` returns, once ``query`` is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((query, future))
        return await future

    async def run(self) -> None:
        """Commit, over and over, all the queries waiting: those that arrive meanwhile make the next group."""
        while True:
            group = [await self.queue.get()]
            while not self.queue.empty():
                group.append(self.queue.get_nowait())
            try:
                async with self.database.transaction():
                    results = [await self.database.execute(query) for query, _ in group]
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(group, results):
                    # A cancelled request's future is done already; its note is stored all the same.
                    if not future.done():
                        future.set_result(result)


@contextlib.asynccontextmanager
async def tuned(database: databases.Database) -> AsyncIterator[GroupCommit]:
    """Run every query of ``database`` on one connection, and its INSERTs through the yielded group commit."""
    async with database.connection() as connection:
        for pragma in PRAGMAS:
            await connection.execute(pragma)
        database._global_connection = connection
        group_commit = GroupCommit(database)
        task = asyncio.create_task(group_commit.run())
        try:
            yield group_commit
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            database._global_connection = None
