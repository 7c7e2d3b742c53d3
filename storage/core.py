"""``Database``: ``databases.Database``, every statement compiled once and run on the driver itself, every call
within a deadline, failing with the engine's own errors, and the writes waiting together committed together.

It answers as ``databases.Database`` does, through the same public methods: ``connect``, ``disconnect``,
``connection``, ``transaction``, ``fetch_all``, ``fetch_one``, ``fetch_val``, ``execute``, ``execute_many`` and
``iterate``; ``iterate_pages``, ``end``, ``lock`` and ``create_all`` are the port's. Its reads are in ``reads.py``,
its writes in ``writes.py``; what differs from one database to another in ``backends/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import databases
import sqlalchemy
from databases.core import Connection, Transaction
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.ddl import DDLElement

from storage.backends import BACKENDS, Release
from storage.deadline import Deadline, Deadlines
from storage.exceptions import DatabaseError
from storage.reads import Reads
from storage.records import Record
from storage.replicas import Replicas
from storage.statements import CompiledCache
from storage.urls import without_password
from storage.writes import Writes

logger = logging.getLogger("notes_app")

Result = TypeVar("Result")


class Database(databases.Database):
    """``databases.Database``, each statement compiled once, failing with ``DatabaseError``, tuned on SQLite, and
    able to read any select a page at a time.

    Every call is bounded by ``timeout`` seconds: past it the call fails with a ``DatabaseError``, the statement is
    cancelled on the server (PostgreSQL gets a cancel request; MySQL's lock waits end at the same time) and the
    connection is released, or closed if it is no longer in a known state. Data the database refuses fails with a
    ``RefusedByDatabase``.
    """

    page_size = 1000  # rows per query of a long list, and per page serialized

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        replica_url: str | None = None,
        replica_max_lag: float = 1.0,
        **options: Any,
    ) -> None:
        database_url = databases.DatabaseURL(url)
        backend = BACKENDS.get(database_url.dialect)
        if backend is None or database_url.driver not in ("", backend.driver):
            raise ValueError(f"{database_url.scheme}:// is not supported: use sqlite://, postgresql:// or mysql://")
        self.backend = backend(database_url, timeout)
        super().__init__(self.backend.databases_url(), **{**self.backend.options(), **options})
        self.timeout = timeout
        self.deadlines = Deadlines(timeout, self.backend)
        self.shared: Connection | None = None
        self.shared_driver: Any = None  # the shared connection's own, the driver's (aiosqlite's)
        self.statements = CompiledCache(self.backend)
        self.replicas = Replicas(self.backend, replica_url, replica_max_lag) if replica_url else None
        self.reads = Reads(self)
        self.writes = Writes(self)

    def bounded(self) -> Deadline:
        """Return the context of a database call: within ``timeout`` seconds, failing with a ``DatabaseError``, or a
        ``RefusedByDatabase`` for data the database refuses."""
        return Deadline(self.deadlines)

    async def connect(self) -> None:
        try:
            with self.bounded():
                await super().connect()
                if self.backend.shares_connection:
                    self.shared = Connection(self, self._backend)  # every task's, none's own
                    await self.shared.__aenter__()
                    self.shared_driver = self.shared.raw_connection
                self.writes.start()
                async with self.connection() as connection:
                    await self.backend.setup(connection)
                if self.replicas is not None:
                    await self.replicas.connect()
        except DatabaseError as exc:
            logger.critical("Cannot use the database at %s: %s", without_password(str(self.backend.url)), exc)
            raise

    async def disconnect(self) -> None:
        """Close the connections within ``timeout`` seconds: past it, those still open (a close that waits on a server
        gone) are closed at once, so that a server that does not answer never holds up a shutdown."""
        try:
            async with asyncio.timeout(self.timeout):
                if self.replicas is not None:
                    self.replicas.close()
                await self.writes.stop()
                if self.shared is not None:
                    await self.shared.__aexit__()
                    self.shared = self.shared_driver = None
                await self.backend.close()
                await super().disconnect()
        except TimeoutError:
            logger.warning("Connections still open after %g s: closed at once", self.timeout)
            self.backend.terminate(self._backend)
            self.is_connected = False

    def connection(self) -> Connection:
        if self.shared is not None and (self.backend.in_memory or not self.in_transaction()):
            return self.shared
        return super().connection()

    def transaction(self, *, force_rollback: bool = False, **kwargs: Any) -> Transaction:
        # A transaction has a connection of its own even on SQLite: on the shared one, the writes of other tasks
        # committed meanwhile would be part of it, and lost with it if it rolls back. A database in memory has no
        # other connection.
        connection = self.connection if self.backend.in_memory else super().connection
        return Transaction(connection, force_rollback=force_rollback, **kwargs)

    async def end(self, transaction: Transaction, commit: bool) -> None:
        """Commit ``transaction``, or roll it back, within the deadline, and give its connection back however that
        ends: a rollback that fails (on a connection lost, which took the transaction with it) is not an error.

        ``databases`` keeps the connection of a transaction whose commit or rollback failed: its ``Transaction``
        gives it back after them, as ``_connection.__aexit__()``, and keeps its state as ``_transaction``.
        """
        try:
            with self.bounded():
                await (transaction.commit() if commit else transaction.rollback())
        except DatabaseError:
            if transaction._transaction is not None:
                transaction._transaction = None
                connection = transaction._connection
                self.backend.discard(connection.raw_connection)  # in a state unknown
                with contextlib.suppress(*self.backend.errors):
                    await connection.__aexit__()
            if commit:
                raise

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[bool]:
        """Inside ``transaction()``, take a lock on ``name`` that every process using the database sees, without
        waiting, and give whether it was had; it is given up when the block ends, or when its process does."""
        assert self.in_transaction(), "lock() is for a transaction's block"
        driver = self.connection().raw_connection
        with self.bounded():
            held = await self.backend.try_lock(driver, name)
        try:
            yield held
        finally:
            if held:
                with self.bounded():
                    await self.backend.unlock(driver, name)

    async def fetch_all(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> list[Any]:
        prepared = self.statements.prepare(query, values)
        return prepared.records(*await self.reads.rows(prepared))

    async def fetch_one(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Record | None:
        prepared = self.statements.prepare(query, values)
        rows, names = await self.reads.rows(prepared, one=True)
        return prepared.record(rows[0], names) if rows else None

    async def fetch_val(self, query: ClauseElement | str, values: dict[str, Any] | None = None, column: Any = 0) -> Any:
        record = await self.fetch_one(query, values)
        return None if record is None else record[column]

    async def iterate(
        self, query: ClauseElement | str, values: dict[str, Any] | None = None
    ) -> AsyncGenerator[Any, None]:
        async with contextlib.aclosing(self.reads.pages(query, values)) as pages:
            async for prepared, (rows, names) in pages:
                for record in prepared.records(rows, names):
                    yield record

    async def iterate_pages(self, query: ClauseElement) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield the rows of ``query`` as dicts, ``page_size`` at a time, as ``fetch_all(query)`` would return them:
        in its order, from one snapshot, each value as ``databases`` gives it; however many, memory holds one page."""
        async with contextlib.aclosing(self.reads.pages(query, None)) as pages:
            async for prepared, (rows, names) in pages:
                # Held in a list and popped, so that nothing here keeps the page while the caller holds it.
                page = [prepared.dicts(rows, names)]
                del rows
                yield page.pop()

    async def execute(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Any:
        if isinstance(query, DDLElement):
            with self.bounded():
                return await super().execute(query, values)
        return await self.writes.execute(query, values)

    async def execute_many(self, query: ClauseElement | str, values: list[dict[str, Any]]) -> None:
        """Run ``query`` with each of ``values``, in one transaction: all are stored, or none."""
        if values:
            await self.writes.write([self.statements.prepare(query, each) for each in values])

    async def create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Create what ``metadata`` holds and the database lacks, with SQLAlchemy's ``metadata.create_all``: tables,
        their indexes, constraints and defaults, and PostgreSQL's enum types (production databases use the Alembic
        migrations). Workers starting together race to create the same things; the losers try again."""
        for attempt in range(3):
            try:
                with self.bounded():
                    await self.backend.create_all(metadata)
                return
            except DatabaseError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    def in_transaction(self) -> bool:
        """Whether this task is inside ``transaction()``, or the database in ``force_rollback``.

        ``databases`` has no public name for it: its ``Connection`` keeps the transactions it is in as
        ``_transaction_stack``, and its ``Database`` a task's connection as ``_connection``, from ``_connection_map``.
        """
        if self._global_connection is None and not self._connection_map:  # no task holds a connection of its own
            return False
        connection = self._global_connection or self._connection
        return connection is not None and bool(connection._transaction_stack)

    async def acquire(self) -> tuple[Any, Release]:
        """Return the driver's connection for a call, and what gives it back: inside ``transaction()`` the
        transaction's, on SQLite the shared one, else one from ``databases``' pool.

        Outside a transaction a call needs none of what ``databases``' ``Connection`` keeps for a task (its locks,
        its transactions): it takes the connection the way that ``Connection`` does, from the backend's own, and
        gives it back as the backend says (``Backend.acquire``).
        """
        if self.in_transaction():
            connection = self.connection()
            await connection.__aenter__()
            return connection.raw_connection, connection.__aexit__
        if self.shared is not None:
            return self.shared_driver, nothing_to_release
        return await self.backend.acquire(self._backend)

    async def with_connection(self, call: Callable[[Any], Awaitable[Result]]) -> Result:
        """Return what ``call`` returns for the driver's connection that ``acquire`` gives, given back after."""
        if self.shared is not None and not self.in_transaction():
            return await call(self.shared_driver)  # nothing to give back, and never closed
        driver, release = await self.acquire()
        return await self.run_on(driver, release, call)

    async def run_on(self, driver: Any, release: Release, call: Callable[[Any], Awaitable[Result]]) -> Result:
        """Return what ``call`` returns for ``driver``, then ``release`` it: closed first where the call ended in a
        state its driver cannot vouch for (the driver's own error, a statement it could not cancel), so that such a
        connection never serves another operation."""
        try:
            return await call(driver)
        except BaseException as exc:
            self.discard_after(exc, driver)
            raise
        finally:
            await release()

    def discard_after(self, exc: BaseException, driver: Any) -> None:
        """Close the ``driver``'s connection where ``exc`` left it in a state unknown, outside ``transaction()`` (whose
        end gives its connection back)."""
        if not self.backend.reusable_after(exc) and not self.in_transaction():
            self.backend.discard(driver)


async def nothing_to_release() -> None:
    """Give back the shared connection: it stays open, for every query."""
