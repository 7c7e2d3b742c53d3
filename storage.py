"""What the port adds to ``databases``: clean failures, SQLite without lost speed or notes, and long lists in pages.

``Database`` is ``databases.Database`` with these changes, all through its public methods:

- every driver error becomes a ``DatabaseError``, which the app answers with a 503, and every call has a deadline;
- the ``execute`` calls waiting at the same moment are committed together, each answered only once its group is
  committed. On SQLite all queries share one connection in WAL mode (``databases`` opens a connection, and a thread,
  for each query) and a group is one transaction: one fsync for many notes. On PostgreSQL the INSERTs of a group are
  one statement: one round trip and one commit. A list read while a group commits may show the group's notes a
  moment before their creators hear back;
- on PostgreSQL, a connection goes back to the pool without the round trip of asyncpg's session reset;
- ``iterate_pages`` reads a whole table a page at a time, so that a long list never sits in memory at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeGuard

import databases
import sqlalchemy
from databases.core import Connection
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.sql import ClauseElement

logger = logging.getLogger("notes_app")
SQLITE_PRAGMAS = [  # after "PRAGMA busy_timeout", which makes a write wait for other processes' writes
    "PRAGMA journal_mode = WAL",  # Readers and the writer do not block each other; one fsync per commit.
    "PRAGMA synchronous = FULL",  # A commit is on disk, power cut or not, before it returns.
]


class DatabaseError(Exception):
    """The database is down, unreachable, locked or failing; the driver's error is the ``__cause__``."""


def driver_errors(dialect: str) -> tuple[type[Exception], ...]:
    """Return what the driver of ``dialect`` raises when the database fails (only that driver is imported)."""
    errors: tuple[type[Exception], ...] = (OSError, asyncio.TimeoutError, sqlite3.Error)
    if dialect == "postgresql":
        import asyncpg

        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    elif dialect == "mysql":
        import pymysql

        errors += (pymysql.Error,)
    return errors


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
        self.errors = driver_errors(self.url.dialect)
        self.shared: Connection | None = None
        self.group_commit: GroupCommit | None = None
        self.compiled: dict[tuple[sqlalchemy.Table, int], tuple[sqlalchemy.TextClause, sqlalchemy.TextClause]] = {}
        self.inserts: dict[tuple[sqlalchemy.Table, tuple[str, ...]], sqlalchemy.TextClause] = {}
        self.plain_inserts: dict[tuple[sqlalchemy.Table, tuple[str, ...]], str] = {}
        dialect_class: Any = sqlalchemy.engine.make_url(str(self.url)).get_dialect()
        self.dialect: sqlalchemy.Dialect = dialect_class()

    @contextlib.asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """Run the block within ``timeout`` seconds, and turn what the driver raises into a ``DatabaseError``.

        Past the deadline the block is cancelled, and cancelled again every half second: a driver that cleans up
        after a cancellation (asyncpg waits for the server to confirm it, then resets the connection) may be
        waiting on a network that no longer answers, and a second cancellation makes it close the connection.
        """
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        cancellations = 0

        def cancel() -> None:
            nonlocal cancellations
            cancellations += 1
            task.cancel()
            timers.append(loop.call_later(0.5, cancel))

        timers = [loop.call_later(self.timeout, cancel)]
        try:
            yield
        except asyncio.CancelledError:
            for _ in range(cancellations):
                task.uncancel()
            if not cancellations or task.cancelling():
                raise  # cancelled by someone else: the request itself
            raise DatabaseError(f"no answer in {self.timeout:g} s") from None
        except self.errors as exc:
            raise DatabaseError(str(exc)) from exc
        finally:
            timers[-1].cancel()

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
                    self.group_commit = GroupCommit(self.commit_in_one_transaction)
                elif self.url.dialect == "postgresql":
                    self.group_commit = GroupCommit(self.insert_together)
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
                return await self.group_commit.execute(query, values)
            return await super().execute(query, values)

    async def commit_in_one_transaction(self, group: Group) -> list[Any]:
        """Execute the queries of ``group`` in one transaction: on SQLite, one fsync for all of them."""
        connection = self.connection()
        async with connection.transaction():
            return [await connection.execute(query, values) for query, values in group]

    async def insert_together(self, group: Group) -> list[Any]:
        """Execute the queries of ``group``, each plain INSERT of a table's rows together with the others'.

        On PostgreSQL one statement inserts them all, a round trip and a commit for the group instead of one each.
        """
        results: list[Any] = [None] * len(group)
        inserts: dict[tuple[sqlalchemy.Table, tuple[str, ...]], list[tuple[int, dict[str, Any]]]] = {}
        for index, (query, values) in enumerate(group):
            if isinstance(query, sqlalchemy.Insert) and values is None and has_one_key(query.table):
                compiled = query.compile(dialect=self.dialect)
                names = tuple(compiled.params)
                if compiled.string == self.plain_insert(query.table, names):  # values only, no SQL expressions
                    inserts.setdefault((query.table, names), []).append((index, compiled.params))
                    continue
            results[index] = await self.execute_alone(query, values)
        for (table, names), rows in inserts.items():
            columns = {name: [params[name] for _, params in rows] for name in names}
            query = self.insert_many_query(table, names).bindparams(count=len(rows), **columns)
            for (index, _), record in zip(rows, await self.fetch_all(query)):
                results[index] = record[0]
        return results

    async def execute_alone(self, query: ClauseElement | str, values: dict[str, Any] | None) -> Any:
        async with self.bounded():
            return await super().execute(query, values)

    def plain_insert(self, table: sqlalchemy.Table, names: tuple[str, ...]) -> str:
        """Return the SQL of an INSERT into ``table`` of a value for each column in ``names``."""
        if (table, names) not in self.plain_inserts:
            compiled = table.insert().compile(dialect=self.dialect, column_keys=list(names))
            self.plain_inserts[table, names] = compiled.string
        return self.plain_inserts[table, names]

    def insert_many_query(self, table: sqlalchemy.Table, names: tuple[str, ...]) -> sqlalchemy.TextClause:
        """Return the PostgreSQL statement that inserts rows of ``table`` given as one array per column in ``names``.

        Its result is the rows' new keys in the order of the arrays: they are drawn from the key's sequence first, so
        that nothing depends on the order of ``RETURNING``, which PostgreSQL does not promise.
        """
        if (table, names) not in self.inserts:
            quote = self.dialect.identifier_preparer.quote
            (key,) = table.primary_key.columns
            arrays = ", ".join(f"CAST(:{name} AS {table.c[name].type.compile(self.dialect)}[])" for name in names)
            columns = ", ".join(quote(name) for name in names)
            sequence = f"pg_get_serial_sequence('{self.dialect.identifier_preparer.format_table(table)}', '{key.name}')"
            self.inserts[table, names] = sqlalchemy.text(
                f"WITH keys AS (SELECT nextval({sequence}) AS key, n FROM generate_series(1, :count) AS n), "
                f"inserted AS (INSERT INTO {self.dialect.identifier_preparer.format_table(table)} "
                f"({quote(key.name)}, {columns}) SELECT keys.key, {columns} "
                f"FROM keys JOIN unnest({arrays}) WITH ORDINALITY AS rows ({columns}, n) USING (n)) "
                "SELECT key FROM keys ORDER BY n"
            )
        return self.inserts[table, names]

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
        first, following = self.page_queries(table, self.page_size)
        (key,) = table.primary_key.columns.keys()
        query = first
        while records := await self.fetch_all(query):
            query = following.bindparams(after=records[-1][key])
            more = len(records) == self.page_size
            names = list(records[0]._mapping.keys())
            # Held in a list and popped, so that nothing here keeps the page while the caller holds it.
            page = [[dict(zip(names, record._mapping)) for record in records]]
            del records
            yield page.pop()
            if not more:
                return

    def page_queries(self, table: sqlalchemy.Table, size: int) -> tuple[sqlalchemy.TextClause, sqlalchemy.TextClause]:
        """Return the SQL texts that select the first ``size`` rows of ``table``, and the ``size`` after ``:after``.

        Compiled once: ``databases`` compiles a ``select()`` on every call, four times slower than SQL text.
        """
        if (table, size) not in self.compiled:
            (key,) = table.primary_key.columns
            first = sqlalchemy.select(table).order_by(key).limit(size)
            following = first.where(key > sqlalchemy.literal_column(":after"))

            def as_text(select: sqlalchemy.Select[Any]) -> sqlalchemy.TextClause:
                compiled = select.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True})
                return sqlalchemy.text(str(compiled))

            self.compiled[table, size] = as_text(first), as_text(following)
        return self.compiled[table, size]


def has_one_key(table: Any) -> TypeGuard[sqlalchemy.Table]:
    return isinstance(table, sqlalchemy.Table) and len(table.primary_key.columns) == 1


Group = list[tuple[ClauseElement | str, dict[str, Any] | None]]


class GroupCommit:
    """Run ``execute`` calls in groups, with ``commit``, and give each its result once its group is committed."""

    def __init__(self, commit: Callable[[Group], Awaitable[list[Any]]]) -> None:
        self.commit = commit
        self.queue: asyncio.Queue[tuple[ClauseElement | str, dict[str, Any] | None, asyncio.Future[Any]]]
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self.run())

    async def execute(self, query: ClauseElement | str, values: dict[str, Any] | None) -> Any:
        """Return what ``database.execute(query, values)`` returns, once ``query`` is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((query, values, future))
        return await future

    async def run(self) -> None:
        """Commit, over and over, all the queries waiting: those that arrive meanwhile make the next group."""
        while True:
            group = [await self.queue.get()]
            while not self.queue.empty():
                group.append(self.queue.get_nowait())
            try:
                results = await self.commit([(query, values) for query, values, _ in group])
            except Exception as exc:
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, _, future), result in zip(group, results):
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
