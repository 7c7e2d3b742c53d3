"""What the port adds to ``databases``: clean failures, SQLite without lost speed or notes, and long lists in pages.

``Database`` is ``databases.Database`` with these changes, all through its public methods:

- every driver error becomes a ``DatabaseError``, which the app answers with a 503, and every call has a deadline;
- the ``execute`` calls waiting at the same moment are committed together, each answered only once its group is
  committed. On SQLite all queries share one connection in WAL mode (``databases`` opens a connection, and a thread,
  for each query) and a group is one transaction: one fsync for many notes. On PostgreSQL the INSERTs of a group
  given as ``execute(table.insert(), values)`` are one statement: one round trip and one commit, and no SQL compiled
  for each note. A list read while a group commits may show the group's notes a moment before their creators hear
  back;
- on PostgreSQL, a connection goes back to the pool without the round trip of asyncpg's session reset;
- ``iterate_pages`` reads a whole table a page at a time, so that a long list never sits in memory at once, with SQL
  compiled once and run by the driver itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import databases
import sqlalchemy
from databases.core import Connection
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

logger = logging.getLogger("notes_app")
SQLITE_PRAGMAS = [  # after "PRAGMA busy_timeout", which makes a write wait for other processes' writes
    "PRAGMA journal_mode = WAL",  # Readers and the writer do not block each other; one fsync per commit.
    "PRAGMA synchronous = FULL",  # A commit is on disk, power cut or not, before it returns.
]


DRIVERS = {"postgresql": "asyncpg", "mysql": "aiomysql", "sqlite": "aiosqlite"}  # databases' own for each scheme


class DatabaseError(Exception):
    """The database is down, unreachable, locked or failing; the driver's error is the ``__cause__``."""


def driver_errors(dialect: str) -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """Return what the driver of ``dialect`` raises when the database fails, and the part of it that refuses a query's
    data (a constraint, a value out of range) rather than failing for all queries (only that driver is imported)."""
    errors: tuple[type[Exception], ...] = (OSError, sqlite3.Error)  # OSError: TimeoutError and socket errors
    refusals: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)
    if dialect == "postgresql":
        import asyncpg

        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
        refusals = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError)  # ValueError: asyncpg's
    elif dialect == "mysql":
        import pymysql

        errors += (pymysql.Error,)
    return errors, refusals


async def keep_session(connection: Any) -> None:
    """Give an asyncpg connection back to the pool as it is, without a round trip to reset its session.

    asyncpg rolls back an open transaction before it calls this; the app leaves nothing else in a session (no
    ``SET``, ``LISTEN``, cursor or advisory lock) for its default reset query to clear.
    """


class Database(databases.Database):
    """``databases.Database``, failing with ``DatabaseError``, tuned on SQLite, and able to read a table in pages.

    Every call is bounded by ``timeout`` seconds: past it the call fails with a ``DatabaseError``, the statement is
    cancelled on the server (PostgreSQL gets a cancel request; MySQL's lock waits end at the same time) and the
    connection is released, or closed if it is no longer in a known state.
    """

    page_size = 1000  # rows per query and per chunk of a streamed list

    def __init__(self, url: str, *, timeout: float = 10.0, **options: Any) -> None:
        database_url = databases.DatabaseURL(url)
        if database_url.dialect not in DRIVERS or database_url.driver not in ("", DRIVERS[database_url.dialect]):
            raise ValueError(f"{database_url.scheme}:// is not supported: use sqlite://, postgresql:// or mysql://")
        if database_url.dialect == "postgresql":
            options.setdefault("reset", keep_session)
            if "statement_cache_size" in database_url.options:
                # PgBouncer in transaction mode hands each transaction any server connection: no prepared statements.
                options.setdefault("statement_cache_size", int(database_url.options["statement_cache_size"]))
        elif database_url.dialect == "mysql":
            seconds = max(1, int(timeout))
            options.setdefault(
                "init_command", f"SET SESSION lock_wait_timeout = {seconds}, innodb_lock_wait_timeout = {seconds}"
            )
        super().__init__(url, **options)
        self.timeout = timeout
        self.errors, self.refusals = driver_errors(self.url.dialect)
        self.shared: Connection | None = None
        self.group_commit: GroupCommit[Any] | None = None
        self.compiled: dict[tuple[sqlalchemy.Table, int], tuple[DriverQuery, DriverQuery]] = {}
        self.inserts: dict[tuple[Any, tuple[str, ...]], tuple[str, list[Any]] | None] = {}
        dialect_class: Any = sqlalchemy.engine.make_url(
            f"{self.url.dialect}+{DRIVERS[self.url.dialect]}://"
        ).get_dialect()
        self.dialect: sqlalchemy.Dialect = dialect_class()  # the driver's own, for the SQL the port compiles itself

    def bounded(self) -> Deadline:
        """Return the context of a database call: within ``timeout`` seconds, failing with a ``DatabaseError``."""
        return Deadline(self.timeout, self.errors)

    async def connect(self) -> None:
        try:
            async with self.bounded():
                await super().connect()
                if self.url.dialect == "sqlite":
                    self.shared = super().connection()
                    await self.shared.__aenter__()
                    await self.shared.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                    for pragma in SQLITE_PRAGMAS:
                        await self.shared.execute(pragma)
                    self.group_commit = GroupCommit(self.commit_in_one_transaction, self.failed_by_its_items)
                elif self.url.dialect == "postgresql":
                    self.group_commit = GroupCommit(self.insert_rows, self.failed_by_its_items)
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
                if self.dialect.name == "sqlite":
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

    def failed_by_its_items(self, exc: Exception) -> bool:
        """Whether a group that failed with ``exc`` may have failed for some of its items, not for the database."""
        return not isinstance(exc, DatabaseError) or isinstance(exc.__cause__, self.refusals)

    def insert_many(self, query: ClauseElement | str, values: dict[str, Any] | None) -> tuple[str, list[Any]] | None:
        """Return the PostgreSQL statement that inserts the row of ``execute(query, values)`` together with others,
        and the row's values as the statement takes them; ``None`` if ``query`` is not a bare ``insert()`` (one with
        values, ``RETURNING`` or ``ON CONFLICT`` of its own) or the row cannot be inserted that way.

        The statement takes the rows as one array per column, and its result is their new keys in the order of the
        arrays: each drawn from the key's sequence beside its row's position, so that nothing depends on the order of
        ``RETURNING``, which PostgreSQL does not promise. A value that is an SQL expression, or that the column's type
        refuses, a key given by the caller and a column left to a Python-side default make the query run alone.
        """
        if not values or not isinstance(query, sqlalchemy.Insert) or list(query.get_children()) != [query.table]:
            return None
        table, names = query.table, tuple(values)
        if (table, names) not in self.inserts:
            self.inserts[table, names] = self.insert_many_sql(table, names)
        insert = self.inserts[table, names]
        if insert is None:
            return None
        sql, processors = insert
        if any(isinstance(value, ClauseElement) for value in values.values()):
            return None
        try:
            row = [value if process is None else process(value) for process, value in zip(processors, values.values())]
        except (TypeError, ValueError):
            return None
        return sql, row

    def insert_many_sql(self, table: Any, names: tuple[str, ...]) -> tuple[str, list[Any]] | None:
        """Return the statement of ``insert_many`` for rows of ``table`` with values for ``names``, and the columns'
        bind processors; ``None`` if there is none."""
        key = table.autoincrement_column if isinstance(table, sqlalchemy.Table) else None
        columns = [table.c.get(name) for name in names]
        if key is None or key.key in names or any(column is None for column in columns):
            return None
        if any(column.default is not None for column in table.columns if column.key not in names):
            return None
        quote = self.dialect.identifier_preparer.quote
        name = self.dialect.identifier_preparer.format_table(table)
        arrays = ", ".join(f"${i}::{column.type.compile(self.dialect)}[]" for i, column in enumerate(columns, 1))
        listed = ", ".join(quote(column.name) for column in columns)
        sql = (
            f"WITH rows AS (SELECT nextval(pg_get_serial_sequence('{name}', '{key.name}')) AS key, {listed}, n "
            f"FROM unnest({arrays}) WITH ORDINALITY AS rows ({listed}, n)), "
            f"inserted AS (INSERT INTO {name} ({quote(key.name)}, {listed}) SELECT key, {listed} FROM rows) "
            "SELECT key FROM rows ORDER BY n"
        )
        return sql, [column.type.dialect_impl(self.dialect).bind_processor(self.dialect) for column in columns]

    async def fetch_all(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> list[Any]:
        async with self.bounded():
            return await super().fetch_all(query, values)

    async def fetch_one(self, query: ClauseElement | str, values: dict[str, Any] | None = None) -> Any:
        async with self.bounded():
            return await super().fetch_one(query, values)

    async def create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Create the tables of ``metadata`` that are missing (production databases use the Alembic migrations)."""
        for table in metadata.sorted_tables:
            create = sqlalchemy.schema.CreateTable(table, if_not_exists=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MySQL warns when IF NOT EXISTS finds the table: that is the point.
                try:
                    await self.execute(create)
                except DatabaseError:
                    # Workers starting together race on PostgreSQL, which fails the losers: the table is there now.
                    await self.execute(create)

    async def iterate_pages(self, table: sqlalchemy.Table) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield every row of ``table`` as a dict, in primary key order, ``page_size`` rows at a time."""
        names = [column.name for column in table.columns]
        (key,) = [names.index(column.name) for column in table.primary_key.columns]
        first, following = self.page_queries(table, self.page_size)
        query, after = first, dict[str, Any]()
        while rows := await self.fetch_raw(query, after):
            query, after = following, {"after": rows[-1][key]}
            more = len(rows) == self.page_size
            # Held in a list and popped, so that nothing here keeps the page while the caller holds it.
            page = [[dict(zip(names, row)) for row in rows]]
            del rows
            yield page.pop()
            if not more:
                return

    def page_queries(self, table: sqlalchemy.Table, size: int) -> tuple[DriverQuery, DriverQuery]:
        """Return the queries of the first ``size`` rows of ``table``, and of the ``size`` after the key ``after``."""
        if (table, size) not in self.compiled:
            (key,) = table.primary_key.columns
            first = sqlalchemy.select(table).order_by(key).limit(size)
            following = first.where(key > sqlalchemy.bindparam("after", type_=key.type))
            self.compiled[table, size] = self.for_driver(first), self.for_driver(following)
        return self.compiled[table, size]

    def for_driver(self, query: ClauseElement) -> DriverQuery:
        """Compile ``query`` once, for ``fetch_raw``."""
        compiled = query.compile(dialect=self.dialect)
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
            driver = connection.raw_connection
            if self.dialect.name == "postgresql":
                rows: Sequence[Sequence[Any]] = await driver.fetch(sql, *args)  # asyncpg
            elif self.dialect.name == "sqlite":
                rows = await driver.execute_fetchall(sql, args)  # aiosqlite
            else:
                async with driver.cursor() as cursor:  # aiomysql
                    await cursor.execute(sql, args)
                    rows = await cursor.fetchall()
            return rows


class Deadline:
    """Run a block within ``timeout`` seconds, and turn the driver's ``errors`` into a ``DatabaseError``.

    Past the deadline the block is cancelled, and cancelled again every half second: a driver that cleans up after a
    cancellation (asyncpg waits for the server to confirm it, then resets the connection) may be waiting on a network
    that no longer answers, and a second cancellation makes it close the connection.
    """

    def __init__(self, timeout: float, errors: tuple[type[Exception], ...]) -> None:
        self.timeout = timeout
        self.errors = errors
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
        elif isinstance(exc, self.errors):
            raise DatabaseError(str(exc)) from exc


DriverQuery = tuple[str, Sequence[str], dict[str, Any]]  # SQL for the driver, its parameters in order, their defaults


Item = TypeVar("Item")


class GroupCommit(Generic[Item]):
    """Commit items in groups, with ``commit``, and give each its result once its group is committed.

    A group that fails for some of its items (``failed_by_its_items``) is committed again one item at a time: only
    the items at fault fail.
    """

    def __init__(
        self,
        commit: Callable[[list[Item]], Awaitable[list[Any]]],
        failed_by_its_items: Callable[[Exception], bool],
    ) -> None:
        self.commit = commit
        self.failed_by_its_items = failed_by_its_items
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
            if len(group) > 1 and self.failed_by_its_items(exc):
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
