"""What the port adds to ``databases``: clean failures, SQLite without lost speed or notes, and long lists in pages.

``Database`` is ``databases.Database`` with these changes, all through its public methods:

- every driver error becomes a ``DatabaseError``, which the app answers with a 503, and every call has a deadline;
  data the database refuses (a constraint, a value its column cannot hold) becomes a ``RefusedByDatabase``, which the
  app answers with a 409 or a 422;
- the ``execute`` calls waiting at the same moment are committed together, each answered only once its group is
  committed. On SQLite all queries share one connection in WAL mode (``databases`` opens a connection, and a thread,
  for each query) and a group is one transaction: one fsync for many notes. On PostgreSQL the INSERTs of a group
  given as ``execute(table.insert(), values)`` are one statement: one round trip and one commit, and no SQL compiled
  for each note. A list read while a group commits may show the group's notes a moment before their creators hear
  back;
- on PostgreSQL, a connection goes back to the pool without the round trip of asyncpg's session reset;
- ``iterate_pages`` reads a whole table a page at a time, so that a long list never sits in memory at once, with SQL
  compiled once and run by the driver itself, each value processed by its column's type as ``databases`` does;
- ``create_all`` is SQLAlchemy's ``metadata.create_all``, run on the app's own driver.

What differs from one database to another is in ``backends.py``, one class for each, as in ``databases``' ``backends/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import databases
import sqlalchemy
from databases.core import Connection
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from backends import BACKENDS, Backend, DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("notes_app")


class Database(databases.Database):
    """``databases.Database``, failing with ``DatabaseError``, tuned on SQLite, and able to read a table in pages.

    Every call is bounded by ``timeout`` seconds: past it the call fails with a ``DatabaseError``, the statement is
    cancelled on the server (PostgreSQL gets a cancel request; MySQL's lock waits end at the same time) and the
    connection is released, or closed if it is no longer in a known state. Data the database refuses fails with a
    ``RefusedByDatabase``.
    """

    page_size = 1000  # rows per query and per chunk of a streamed list

    def __init__(self, url: str, *, timeout: float = 10.0, **options: Any) -> None:
        database_url = databases.DatabaseURL(url)
        backend = BACKENDS.get(database_url.dialect)
        if backend is None or database_url.driver not in ("", backend.driver):
            raise ValueError(f"{database_url.scheme}:// is not supported: use sqlite://, postgresql:// or mysql://")
        self.backend = backend(database_url, timeout)
        super().__init__(url, **{**self.backend.options(), **options})
        self.timeout = timeout
        self.shared: Connection | None = None
        self.group_commit: GroupCommit[Any] | None = None
        self.compiled: dict[tuple[sqlalchemy.Table, int], tuple[DriverQuery, DriverQuery]] = {}
        self.inserts: dict[tuple[Any, tuple[str, ...]], tuple[str, list[Any]] | None] = {}
        self.readers: dict[sqlalchemy.Table, RowReader] = {}

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
                    await self.backend.setup(self.shared)
                    self.group_commit = GroupCommit(self.commit_in_one_transaction)
                elif self.backend.groups_inserts:
                    self.group_commit = GroupCommit(self.insert_rows)
        except DatabaseError as exc:
            logger.critical("Cannot use the database at %s: %s", self.url.obscure_password, exc)
            raise

    async def disconnect(self) -> None:
        if self.group_commit is not None:
            await self.group_commit.stop()
            self.group_commit = None
        if self.shared is not None:
            await self.shared.__aexit__()
            self.shared = None
        await super().disconnect()

    def connection(self) -> Connection:
        return self.shared or super().connection()

    async def execute(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Any:
        async with self.bounded():
            if self.group_commit is not None:
                if self.backend.shares_connection:
                    return await self.group_commit.execute((query, values))
                if insert := self.insert_many(query, values):
                    return await self.group_commit.execute(insert)
            return await super().execute(query, values)

    async def commit_in_one_transaction(
        self, group: list[tuple[ClauseElement | str, dict[str, Any] | None]]
    ) -> list[Any]:
        """Execute the queries of ``group`` in one transaction: on SQLite, one fsync for all of them."""
        connection = self.connection()
        async with connection.transaction():
            return [await connection.execute(query, values) for query, values in group]

    async def insert_rows(self, group: list[tuple[str, list[Any]]]) -> list[Any]:
        """Insert the rows of ``group``, each given with its ``insert_many`` statement, and return their keys.

        On PostgreSQL one statement inserts the rows of a table: a round trip and a commit for the group instead of one
        each. The rows of several tables are inserted in one transaction.
        """
        keys: list[Any] = [None] * len(group)
        statements: dict[str, list[int]] = {}
        for index, (sql, _) in enumerate(group):
            statements.setdefault(sql, []).append(index)
        async with self.bounded(), self.connection() as connection:
            async with connection.transaction() if len(statements) > 1 else contextlib.nullcontext():
                for sql, indexes in statements.items():
                    columns = [list(column) for column in zip(*(group[index][1] for index in indexes))]
                    records = await connection.raw_connection.fetch(sql, *columns)
                    for index, (key,) in zip(indexes, records):
                        keys[index] = key
        return keys

    def insert_many(self, query: ClauseElement | str, values: dict[str, Any] | None) -> tuple[str, list[Any]] | None:
        """Return the statement that inserts the row of ``execute(query, values)`` together with others (the
        backend's ``insert_many_sql``), and the row's values as the statement takes them, bound as ``databases`` binds
        them; ``None`` if ``query`` is not a bare ``insert()`` (one with values, ``RETURNING`` or ``ON CONFLICT`` of
        its own), a value is an SQL expression or one that its column's type refuses, or the backend has no such
        statement for the row: the query then runs alone.
        """
        if not values or not isinstance(query, sqlalchemy.Insert) or list(query.get_children()) != [query.table]:
            return None
        table, names = query.table, tuple(values)
        if not isinstance(table, sqlalchemy.Table):
            return None
        if (table, names) not in self.inserts:
            self.inserts[table, names] = self.backend.insert_many_sql(table, names)
        insert = self.inserts[table, names]
        if insert is None:
            return None
        sql, processors = insert
        if any(isinstance(value, ClauseElement) for value in values.values()):
            return None
        try:
            row = [value if process is None else process(value) for process, value in zip(processors, values.values())]
        except (TypeError, ValueError, LookupError):
            return None
        return sql, row

    async def fetch_all(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> list[Any]:
        async with self.bounded():
            return await super().fetch_all(query, values)

    async def fetch_one(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Any:
        async with self.bounded():
            return await super().fetch_one(query, values)

    def sqlalchemy_url(self, driver: str) -> sqlalchemy.URL:
        """Return this database's URL for SQLAlchemy's own engine on ``driver``, without ``databases``' options."""
        return sqlalchemy.make_url(str(self.url)).set(drivername=f"{self.backend.name}+{driver}", query={})

    def async_engine(self) -> AsyncEngine:
        """Return SQLAlchemy's async engine on this database, through the app's own driver (for the migrations)."""
        from sqlalchemy.ext.asyncio import create_async_engine  # It loads SQLAlchemy's ORM: only when needed.

        url = self.sqlalchemy_url(self.backend.driver)
        return create_async_engine(url, poolclass=sqlalchemy.NullPool, **self.backend.async_engine_options())

    async def create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Create what ``metadata`` holds and the database lacks, with SQLAlchemy's ``metadata.create_all``: tables,
        their indexes, constraints and defaults, and PostgreSQL's enum types (production databases use the Alembic
        migrations). Workers starting together race to create the same things; the losers try again."""
        for attempt in range(3):
            try:
                async with self.bounded():
                    await self.run_create_all(metadata)
                return
            except DatabaseError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    async def run_create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Run ``metadata.create_all`` as the FastAPI version does, on a sync engine in a thread, where the backend has
        a sync driver (sqlite3, PyMySQL); else on the async engine."""
        if self.backend.sync_driver is not None:
            engine = sqlalchemy.create_engine(
                self.sqlalchemy_url(self.backend.sync_driver), poolclass=sqlalchemy.NullPool
            )
            try:
                await asyncio.to_thread(metadata.create_all, engine)
            finally:
                engine.dispose()
        else:
            async_engine = self.async_engine()
            try:
                async with async_engine.begin() as connection:
                    await connection.run_sync(metadata.create_all)
            finally:
                await async_engine.dispose()

    async def iterate_pages(self, table: sqlalchemy.Table) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield every row of ``table`` as a dict, in primary key order, ``page_size`` rows at a time.

        Each value is the one ``databases`` gives: the driver's, turned into its column type's value by that type's
        result processing (prepared once per table).
        """
        names = [column.name for column in table.columns]
        (key,) = [names.index(column.name) for column in table.primary_key.columns]
        first, following, read_row = self.page_queries(table, self.page_size)
        query, after = first, dict[str, Any]()
        while rows := await self.fetch_raw(query, after):
            query, after = following, {"after": rows[-1][key]}
            more = len(rows) == self.page_size
            # Held in a list and popped, so that nothing here keeps the page while the caller holds it.
            page = [list(map(read_row, rows))]
            del rows
            yield page.pop()
            if not more:
                return

    def page_queries(self, table: sqlalchemy.Table, size: int) -> tuple[DriverQuery, DriverQuery, RowReader]:
        """Return the queries of the first ``size`` rows of ``table`` and of the ``size`` after the key ``after``, and
        the ``row_reader`` of its rows."""
        if (table, size) not in self.compiled:
            (key,) = table.primary_key.columns
            first = sqlalchemy.select(table).order_by(key).limit(size)
            following = first.where(key > sqlalchemy.bindparam("after", type_=key.type))
            self.compiled[table, size] = self.for_driver(first), self.for_driver(following)
            processors = {i: self.backend.result_processor(column) for i, column in enumerate(table.columns)}
            self.readers[table] = row_reader([column.name for column in table.columns], processors)
        return (*self.compiled[table, size], self.readers[table])

    def for_driver(self, query: ClauseElement) -> DriverQuery:
        """Compile ``query`` once, for ``fetch_raw``."""
        compiled = query.compile(dialect=self.backend.sql_dialect)
        assert isinstance(compiled, SQLCompiler)
        return compiled.string, compiled.positiontup or [], compiled.params

    async def fetch_raw(self, query: DriverQuery, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """Return the rows of ``query``, run with ``values`` by the driver itself, as the driver gives them.

        ``databases`` compiles a SQLAlchemy query on every call, and wraps each row: together, several times what
        asyncpg takes for a short page.
        """
        sql, names, defaults = query
        args = [values[name] if name in values else defaults[name] for name in names]
        async with self.bounded(), self.connection() as connection:
            return await self.backend.fetch(connection.raw_connection, sql, args)


def row_reader(names: list[str], processors: dict[int, Callable[[Any], Any] | None]) -> RowReader:
    """Return the function that turns a row, as the driver gives it, into a dict of ``names``, each value through
    its column's result processor where ``processors`` has one.

    It is written out as a dict display, as ``dataclasses`` writes the ``__init__`` of a class: for a long list, a
    dict display takes much less time per row than ``dict(zip(names, row))``.
    """
    values = [f"process_{i}(row[{i}])" if processors.get(i) else f"row[{i}]" for i in range(len(names))]
    display = ", ".join(f"{name!r}: {value}" for name, value in zip(names, values))
    namespace = {f"process_{i}": process for i, process in processors.items() if process}
    reader: RowReader = eval(f"lambda row: {{{display}}}", namespace)
    return reader


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


DriverQuery = tuple[str, Sequence[str], dict[str, Any]]  # SQL for the driver, its parameters in order, their defaults
RowReader = Callable[[Sequence[Any]], dict[str, Any]]  # a row as the driver gives it, to the dict of its values


Item = TypeVar("Item")


class GroupCommit(Generic[Item]):
    """Commit items in groups, with ``commit``, and give each its result once its group is committed.

    A group that fails for some of its items (anything but a ``DatabaseError``: a refusal of some item's data) is
    committed again one item at a time: only the items at fault fail.
    """

    def __init__(self, commit: Callable[[list[Item]], Awaitable[list[Any]]]) -> None:
        self.commit = commit
        self.queue: asyncio.Queue[tuple[Item, asyncio.Future[Any]]] = asyncio.Queue()
        self.task = asyncio.create_task(self.run())

    async def execute(self, item: Item) -> Any:
        """Return the result of ``item`` once it is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def run(self) -> None:
        """Commit, over and over, all the items waiting: those that arrive meanwhile make the next group."""
        while True:
            group = [await self.queue.get()]
            while not self.queue.empty():
                group.append(self.queue.get_nowait())
            await self.commit_group(group)

    async def commit_group(self, group: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        try:
            results = await self.commit([item for item, _ in group])
        except Exception as exc:
            if len(group) > 1 and not isinstance(exc, DatabaseError):
                for waiting in group:
                    await self.commit_group([waiting])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(group, results):
                # A cancelled request's future is done already; its note is stored all the same.
                if not future.done():
                    future.set_result(result)

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
