"""What the port adds to ``databases``: every statement compiled once, clean failures, SQLite without lost speed or
notes, and long lists read a page at a time.

``Database`` is ``databases.Database`` with these changes, all through its public methods:

- ``fetch_all``, ``fetch_one``, ``fetch_val``, ``execute``, ``execute_many`` and ``iterate`` compile a statement
  once per shape, bind its values and read its rows as ``databases`` does (``statements.py``), and run it on the
  driver itself; their records answer as ``databases``' do; ``execute_many`` sends its rows in one call of the
  driver's ``executemany``;
- every driver error becomes a ``DatabaseError``, which the app answers with a 503, and every call has a deadline;
  data the database refuses (a constraint, a value its column cannot hold) becomes a ``RefusedByDatabase``, which the
  app answers with a 409 or a 422;
- the ``execute`` calls waiting at the same moment are committed together, each answered only once its group is
  committed. On SQLite all queries share one connection in WAL mode (``databases`` opens a connection, and a thread,
  for each query) and a group is one transaction: one fsync for many notes. On PostgreSQL the INSERTs of a group
  given as ``execute(table.insert(), values)`` are one statement, with no SQL compiled for each note, and the UPDATEs
  and DELETEs of one SQL one pipelined ``executemany``: one commit for the group. A list read while a group commits
  may show the group's notes a moment before their creators hear back. The writes inside ``transaction()`` are its
  own: it has a connection of its own, on SQLite too;
- on PostgreSQL, a connection goes back to the pool without the round trip of asyncpg's session reset, and
  without a task for each release;
- a read, a write, or a group of writes, outside ``transaction()`` takes its connection from the backend's pool
  itself: ``databases``' ``Connection`` for the task (its locks, its transactions) serves transactions only,
  ``execute_many``'s among them;
- ``iterate_pages`` reads any select of up to a page at once and a longer one a page at a time from one cursor, in
  the order ``fetch_all`` gives, so that a long list never sits in memory at once, all within one deadline, so that
  a caller that waits on a client between pages never holds the connection past it;
- a lookup by a key that its column cannot hold finds no row, and any other value the database cannot take is a
  ``ParameterNotStorable`` (a 422 at the parameter it came from);
- ``create_all`` is SQLAlchemy's ``metadata.create_all``, run on the app's own driver.

What differs from one database to another is in ``backends.py``, one class for each, as in ``databases``' ``backends/``;
how a statement is compiled, bound and read is in ``statements.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
)
from typing import Any, Generic, TypeVar

import anyio
import databases
import sqlalchemy
from databases.core import Connection, Transaction
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.ddl import DDLElement

from backends import (
    BACKENDS,
    Backend,
    DatabaseError,
    Described,
    ParameterNotStorable,
    RefusedByDatabase,
    Release,
    Write,
    without_password,
)
from replicas import Leased, Replicas, reads_from_replicas
from statements import CompiledCache, Prepared, Record, at_most, execute_all

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
        self.shared: Connection | None = None
        self.group_commit: GroupCommit[Any] | None = None
        self.statements = CompiledCache(self.backend)
        self.replicas = Replicas(self.backend, replica_url, replica_max_lag) if replica_url else None

    def bounded(self) -> Deadline:
        """Return the context of a database call: within ``timeout`` seconds, failing with a ``DatabaseError``, or a
        ``RefusedByDatabase`` for data the database refuses."""
        return Deadline(self.timeout, self.backend)

    async def connect(self) -> None:
        try:
            async with self.bounded():
                await super().connect()
                if self.backend.shares_connection:
                    self.shared = super().connection()
                    await self.shared.__aenter__()
                    self.group_commit = GroupCommit(self.commit_in_one_transaction)
                elif self.backend.groups_writes:
                    self.group_commit = GroupCommit(self.write_together)
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
                if self.group_commit is not None:
                    await self.group_commit.stop()
                    self.group_commit = None
                if self.shared is not None:
                    await self.shared.__aexit__()
                    self.shared = None
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
            async with self.bounded():
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

    async def fetch_all(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> list[Any]:
        prepared = self.statements.prepare(query, values)
        return prepared.records(*await self.read(prepared))

    async def fetch_one(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Record | None:
        prepared = self.statements.prepare(query, values)
        records = prepared.records(*await self.read(prepared, one=True))
        return records[0] if records else None

    async def fetch_val(self, query: ClauseElement | str, values: dict[str, Any] | None = None, column: Any = 0) -> Any:
        record = await self.fetch_one(query, values)
        return None if record is None else record[column]

    async def iterate(
        self, query: ClauseElement | str, values: dict[str, Any] | None = None
    ) -> AsyncGenerator[Any, None]:
        async with contextlib.aclosing(self.pages(query, values)) as pages:
            async for prepared, (rows, names) in pages:
                for record in prepared.records(rows, names):
                    yield record

    async def iterate_pages(self, query: ClauseElement) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield the rows of ``query`` as dicts, ``page_size`` at a time, as ``fetch_all(query)`` would return them:
        in its order, from one snapshot, each value as ``databases`` gives it; however many, memory holds one page."""
        async with contextlib.aclosing(self.pages(query, None)) as pages:
            async for prepared, (rows, names) in pages:
                # Held in a list and popped, so that nothing here keeps the page while the caller holds it.
                page = [prepared.dicts(rows, names)]
                del rows
                yield page.pop()

    async def pages(
        self, query: ClauseElement | str, values: dict[str, Any] | None
    ) -> AsyncGenerator[tuple[Prepared, Described], None]:
        """Yield the rows of ``query`` a page at a time: read at once where a select gives no more than a page (as
        most lists do), else from one cursor.

        The whole read is bounded by one deadline, whatever the caller does between pages: a caller that waits on
        anything but the database (a client, say) gets a ``DatabaseError`` once ``timeout`` has passed, and the
        connection is given back.
        """
        at_once = at_most(query, self.page_size) if values is None else None
        if at_once is not None:
            prepared = self.statements.prepare(at_once, None)
            described = await self.read(prepared)
            if len(described[0]) <= self.page_size:
                yield prepared, described
                return
            del described  # One page more: all of it again, from a cursor, so that the rows come from one snapshot.
        prepared = self.statements.prepare(query, values)
        try:
            async with self.bounded(), contextlib.aclosing(self.stream(prepared)) as pages:
                async for page in pages:
                    yield prepared, page
        except (RefusedByDatabase, DatabaseError) as exc:
            if not self.matches_nothing(exc, prepared):
                raise

    async def read(self, prepared: Prepared, one: bool = False) -> Described:
        """Return the rows of ``prepared`` (only the first if ``one``) and, for a statement that does not type its
        columns (``text()``), their names; no rows where it compares a column for equality with a value the column
        cannot hold."""
        try:
            async with self.bounded():
                if (leased := await self.replica()) is not None:
                    try:
                        return await self.run_on(
                            leased.driver, leased.release, lambda driver: self.fetch(driver, prepared, one)
                        )
                    except self.backend.errors as exc:
                        if self.backend.refusal(exc) is not None:
                            raise
                        leased.replica.skip(f"failed: {exc}")  # and the primary reads it
                return await self.with_connection(lambda driver: self.fetch(driver, prepared, one))
        except (RefusedByDatabase, DatabaseError) as exc:
            if self.matches_nothing(exc, prepared):
                return [], []
            raise

    async def fetch(self, driver: Any, prepared: Prepared, one: bool) -> Described:
        if prepared.statement.columns and not one:
            return await self.backend.fetch(driver, prepared.sql, prepared.args), []
        return await self.backend.fetch_described(driver, prepared.sql, prepared.args, one)

    async def replica(self) -> Leased | None:
        """Return, for a read of a ``GET`` request (``DatabaseSelector``), a replica that has replayed every commit
        the primary has acknowledged, and a connection to it; ``None`` to read from the primary."""
        if self.replicas is None or not reads_from_replicas.get():
            return None
        position = await self.with_connection(self.backend.position)
        return await self.replicas.acquire(position)

    async def with_connection(self, call: Callable[[Any], Awaitable[Result]]) -> Result:
        """Return what ``call`` returns for the driver's connection that ``acquire`` gives, given back after."""
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
            return self.shared.raw_connection, nothing_to_release
        return await self.backend.acquire(self._backend)

    async def stream(self, prepared: Prepared) -> AsyncGenerator[Described, None]:
        """Yield the rows of ``prepared`` a page at a time from one cursor on one connection, given back however the
        read ends."""
        if (leased := await self.replica()) is not None:
            driver, release = leased.driver, leased.release
        else:
            driver, release = await self.acquire()
        pages = self.backend.stream(driver, prepared.sql, prepared.args, self.page_size)
        try:
            while (page := await anext(pages, None)) is not None:
                yield page
        except BaseException as exc:
            self.discard_after(exc, driver)
            raise
        finally:
            await close_stream(pages, release)

    def matches_nothing(self, exc: RefusedByDatabase | DatabaseError, prepared: Prepared, reading: bool = True) -> bool:
        """Whether ``exc`` is a value that a column cannot hold, given for ``reading`` rows where the column equals it,
        so that no row can match; raise a ``ParameterNotStorable`` for any other parameter the database cannot take.
        """
        cause = exc.__cause__
        if not isinstance(cause, Exception):
            return False
        name = self.backend.refused_parameter(cause, prepared.names, prepared.args)
        if name is None:
            return False
        if reading and prepared.statement.compares_for_equality(name):
            return True
        raise ParameterNotStorable(prepared.params[name], prepared.statement.column_of(name)) from cause

    async def execute(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Any:
        if isinstance(query, DDLElement):
            async with self.bounded():
                return await super().execute(query, values)
        if (
            self.backend.groups_writes
            and (group := self.write_group())
            and (insert := self.backend.insert_many(query, values))
        ):
            async with self.bounded():
                return await group.execute(insert)
        prepared = self.statements.prepare(query, values)
        return (await self.write([prepared]))[-1]

    async def execute_many(self, query: ClauseElement | str, values: list[dict[str, Any]]) -> None:
        """Run ``query`` with each of ``values``, in one transaction: all are stored, or none."""
        if values:
            await self.write([self.statements.prepare(query, each) for each in values])

    async def write(self, statements: list[Prepared]) -> list[Any]:
        """Run ``statements`` in one transaction (on SQLite, with the others committed together) and return what
        ``databases``' ``execute`` returns for each."""
        try:
            async with self.bounded():
                group = self.write_group()
                if group is not None and self.backend.shares_connection:
                    results: list[Any] = await group.execute(statements)
                    return results
                if group is not None and len(statements) == 1 and statements[0].statement.groupable:
                    return [await group.execute(statements[0].write())]
                if len(statements) == 1:
                    return await self.with_connection(lambda driver: self.execute_alone(driver, statements[0]))
                async with self.connection() as connection, connection.transaction():
                    return await execute_all(connection.raw_connection, statements)
        except (RefusedByDatabase, DatabaseError) as exc:
            for prepared in statements:
                self.matches_nothing(exc, prepared, reading=False)  # raises where a parameter is at fault
            raise

    async def execute_alone(self, driver: Any, prepared: Prepared) -> list[Any]:
        """Run ``prepared`` on the ``driver``'s connection; outside ``transaction()`` it is its own transaction, whose
        outcome a deadline passed once it is sent leaves unknown, and the log says so."""
        try:
            return [await prepared.execute(driver)]
        except asyncio.CancelledError:
            if not self.in_transaction():
                logger.warning(OUTCOME_UNKNOWN)
            raise

    async def commit_in_one_transaction(self, send: Send[list[Prepared]]) -> list[Any]:
        """Run the statements of the group that ``send`` gives in one transaction, once it holds the write lock: on
        SQLite, one fsync for all of them, and nothing sent for a request that gave up while another process wrote."""
        connection = self.connection()
        if self.backend.in_memory:  # no other connection can lock it, and a transaction() may be open on it
            async with connection.transaction():
                return [await execute_all(connection.raw_connection, item) for item in send()]
        driver = connection.raw_connection
        await driver.execute("BEGIN IMMEDIATE")
        try:
            results = [await execute_all(driver, item) for item in send()]
        except BaseException:
            await driver.execute("ROLLBACK")
            raise
        await driver.execute("COMMIT")
        return results

    def write_group(self) -> GroupCommit[Any] | None:
        """Return where this task's writes wait to be committed together with others' (on SQLite, and on PostgreSQL
        where the backend ``groups_writes``); ``None`` inside ``transaction()``, whose writes are its own."""
        return None if self.in_transaction() else self.group_commit

    def in_transaction(self) -> bool:
        """Whether this task is inside ``transaction()``, or the database in ``force_rollback``.

        ``databases`` has no public name for it: its ``Connection`` keeps the transactions it is in as
        ``_transaction_stack``, and its ``Database`` a task's connection as ``_connection``.
        """
        connection = self._global_connection or self._connection
        return connection is not None and bool(connection._transaction_stack)

    async def write_together(self, send: Send[Write]) -> list[Any]:
        """Run the writes of the group that ``send`` gives, once a connection is had, together (the backend's
        ``write_together``), and return their results."""
        async with self.bounded():
            return await self.with_connection(lambda driver: self.backend.write_together(driver, send()))

    async def create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Create what ``metadata`` holds and the database lacks, with SQLAlchemy's ``metadata.create_all``: tables,
        their indexes, constraints and defaults, and PostgreSQL's enum types (production databases use the Alembic
        migrations). Workers starting together race to create the same things; the losers try again."""
        for attempt in range(3):
            try:
                async with self.bounded():
                    await self.backend.create_all(metadata)
                return
            except DatabaseError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))


OUTCOME_UNKNOWN = "A write given up at its deadline had been sent: outcome unknown"


async def nothing_to_release() -> None:
    """Give back the shared connection: it stays open, for every query."""


async def close_stream(pages: AsyncGenerator[Any, None], release: Callable[[], Awaitable[Any]]) -> None:
    """Close the cursor behind ``pages``, then ``release`` its connection, even where the read was cancelled: a
    connection given back inside the cursor's transaction would be rolled back by asyncpg's pool, with a warning. The
    read's deadline still bounds it."""
    with anyio.CancelScope(shield=True):
        try:
            await pages.aclose()
        finally:
            await release()


class Deadline:
    """Run a block within ``timeout`` seconds, and turn the ``backend``'s driver errors into a ``DatabaseError``, or a
    ``RefusedByDatabase`` where the database refused the statement's data.

    Past the deadline the block is cancelled, and cancelled again every half second: a driver that cleans up after a
    cancellation (asyncpg waits for the server to confirm it, then resets the connection) may be waiting on a network
    that no longer answers, and a second cancellation makes it close the connection.
    """

    def __init__(self, timeout: float, backend: Backend) -> None:
        self.timeout = timeout
        self.backend = backend
        self.cancellations = 0

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.timer = task.get_loop().call_later(self.timeout, self.cancel)

    def cancel(self) -> None:
        self.cancellations += 1
        self.task.cancel()
        self.timer = self.task.get_loop().call_later(0.5, self.cancel)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        self.timer.cancel()
        if isinstance(exc, asyncio.CancelledError):
            for _ in range(self.cancellations):
                self.task.uncancel()
            if self.cancellations and not self.task.cancelling():  # else cancelled by someone else: the request
                raise DatabaseError(f"no answer in {self.timeout:g} s") from None
        elif isinstance(exc, self.backend.errors):
            refused = self.backend.refusal(exc)
            if refused is not None:
                raise refused from exc
            raise DatabaseError(str(exc)) from exc
        elif isinstance(exc, sqlalchemy.exc.DBAPIError):  # from SQLAlchemy's own engine, in create_all
            raise DatabaseError(str(exc.orig)) from exc


Item = TypeVar("Item")
Send = Callable[[], list[Item]]  # the items of a group whose requests still wait, marked as sent


class Waiting(Generic[Item]):
    """An item to commit, the future its request waits on, and whether it was sent to the database."""

    __slots__ = ("item", "future", "sent")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent = False


class GroupCommit(Generic[Item]):
    """Commit items in groups, with ``commit``, and give each its result once its group is committed.

    ``commit`` takes the group's items by calling ``send`` once the database is ready to take them (a connection
    had, a write lock held): an item whose request gave up before then is left out, never sent. A group that fails
    for some of its items (anything but a ``DatabaseError``: a refusal of some item's data) is committed again one
    item at a time: only the items at fault fail.
    """

    def __init__(self, commit: Callable[[Send[Item]], Coroutine[Any, Any, list[Any]]]) -> None:
        self.commit = commit
        self.queue: asyncio.Queue[Waiting[Item]] = asyncio.Queue()
        self.task = asyncio.create_task(self.run())

    async def execute(self, item: Item) -> Any:
        """Return the result of ``item`` once it is committed."""
        waiting = Waiting(item)
        self.queue.put_nowait(waiting)
        try:
            return await waiting.future
        except asyncio.CancelledError:
            if waiting.sent:
                logger.warning(OUTCOME_UNKNOWN)
            raise

    async def run(self) -> None:
        """Commit, over and over, all the items waiting: those that arrive meanwhile make the next group."""
        while True:
            group = [await self.queue.get()]
            while not self.queue.empty():
                group.append(self.queue.get_nowait())
            await self.commit_group(group)

    async def commit_group(self, group: list[Waiting[Item]]) -> None:
        sent: list[Waiting[Item]] = []

        def send() -> list[Item]:
            sent[:] = [waiting for waiting in group if not waiting.future.done()]
            for waiting in sent:
                waiting.sent = True
            return [waiting.item for waiting in sent]

        try:
            # A task for each group: a deadline passed in ``commit`` cancels that task, never the loop that collects
            # the groups.
            results: list[Any] = await asyncio.create_task(self.commit(send))
        except Exception as exc:
            if len(sent) > 1 and not isinstance(exc, DatabaseError):
                for waiting in sent:
                    await self.commit_group([waiting])
                return
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
        else:
            for waiting, result in zip(sent, results):
                if not waiting.future.done():
                    waiting.future.set_result(result)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def storable_in(database: databases.Database) -> AfterValidator:
    """Return the check that a ``str`` is storable in ``database``: ``Annotated[str, storable_in(database)]``.

    Text with a lone surrogate cannot be encoded to UTF-8 for any database, and PostgreSQL cannot store NUL; FastAPI's
    version answers both with a 500.
    """
    refuse_nul = database.url.dialect == "postgresql"

    def check(text: str) -> str:
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise PydanticCustomError("string_unicode", "Input should be a valid string without lone surrogates")
        if refuse_nul and "\x00" in text:
            raise PydanticCustomError("string_nul", "Input should be a string without NUL characters")
        return text

    return AfterValidator(check)
