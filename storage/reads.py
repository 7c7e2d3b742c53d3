"""How a ``Database`` reads: each select within its deadline, from a replica where one may serve it, and a long list a
page at a time from one cursor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.sql import ClauseElement

from storage.backends import Described
from storage.exceptions import DatabaseError, RefusedByDatabase
from storage.replicas import Leased, reads_from_replicas
from storage.statements import Prepared, at_most

if TYPE_CHECKING:
    from storage.core import Database


class Reads:
    """The reads of ``database``: rows at once, or pages from one cursor, all within one deadline."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.backend = database.backend

    async def rows(self, prepared: Prepared, one: bool = False) -> Described:
        """Return the rows of ``prepared`` (only the first if ``one``) and, for a statement that does not type its
        columns (``text()``), their names; no rows where it compares a column for equality with a value the column
        cannot hold."""
        database = self.database
        try:
            with database.bounded():
                if database.replicas is not None and (leased := await self.replica()) is not None:
                    try:
                        return await database.run_on(
                            leased.driver, leased.release, lambda driver: self.fetch(driver, prepared, one)
                        )
                    except self.backend.errors as exc:
                        if self.backend.refusal(exc) is not None:
                            raise
                        leased.replica.skip(f"failed: {exc}")  # and the primary reads it
                return await database.with_connection(lambda driver: self.fetch(driver, prepared, one))
        except (RefusedByDatabase, DatabaseError) as exc:
            if prepared.matches_nothing(exc):
                return [], []
            raise

    async def fetch(self, driver: Any, prepared: Prepared, one: bool) -> Described:
        if prepared.statement.columns and (not one or prepared.statement.one_row):
            return await self.backend.fetch(driver, prepared.sql, prepared.args), []
        return await self.backend.fetch_described(driver, prepared.sql, prepared.args, one)

    async def pages(
        self, query: ClauseElement | str, values: dict[str, Any] | None
    ) -> AsyncGenerator[tuple[Prepared, Described], None]:
        """Yield the rows of ``query`` a page at a time: read at once where a select gives no more than a page (as
        most lists do), else from one cursor.

        The whole read is bounded by one deadline, whatever the caller does between pages: a caller that waits on
        anything but the database (a client, say) gets a ``DatabaseError`` once the deadline has passed, and the
        connection is given back.
        """
        database = self.database
        at_once = at_most(query, database.page_size) if values is None else None
        if at_once is not None:
            prepared = database.statements.prepare(at_once, None)
            described = await self.rows(prepared)
            if len(described[0]) <= database.page_size:
                yield prepared, described
                return
            del described  # One page more: all of it again, from a cursor, so that the rows come from one snapshot.
        prepared = database.statements.prepare(query, values)
        try:
            with database.bounded():
                async with contextlib.aclosing(self.stream(prepared)) as pages:
                    async for page in pages:
                        yield prepared, page
        except (RefusedByDatabase, DatabaseError) as exc:
            if not prepared.matches_nothing(exc):
                raise

    async def stream(self, prepared: Prepared) -> AsyncGenerator[Described, None]:
        """Yield the rows of ``prepared`` a page at a time from one cursor on one connection, given back however the
        read ends."""
        database = self.database
        if (leased := await self.replica()) is not None:
            driver, release = leased.driver, leased.release
        else:
            driver, release = await database.acquire()
        pages = self.backend.stream(driver, prepared.sql, prepared.args, database.page_size)
        try:
            while (page := await anext(pages, None)) is not None:
                yield page
        except BaseException as exc:
            database.discard_after(exc, driver)
            raise
        finally:
            await close_stream(pages, release)

    async def replica(self) -> Leased | None:
        """Return, for a read of a ``GET`` request (``DatabaseSelector``), a replica that has replayed every commit
        the primary has acknowledged, and a connection to it; ``None`` to read from the primary."""
        replicas = self.database.replicas
        if replicas is None or not reads_from_replicas.get():
            return None
        position = await self.database.with_connection(self.backend.position)
        return await replicas.acquire(position)


async def close_stream(pages: AsyncGenerator[Any, None], release: Callable[[], Awaitable[Any]]) -> None:
    """Close the cursor behind ``pages``, then ``release`` its connection, even where the read was cancelled: a
    connection given back inside the cursor's transaction would be rolled back by asyncpg's pool, with a warning. The
    read's deadline still bounds it."""
    with anyio.CancelScope(shield=True):
        try:
            await pages.aclose()
        finally:
            await release()
