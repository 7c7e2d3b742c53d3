"""What differs from one database to another, in one class for each, as ``databases`` keeps its ``backends/``.

Each backend says which driver errors mean the database failed and which mean it refused a statement's data, what
``databases`` hands the driver when it connects, which dialect ``databases`` gives its queries (so that the values
the port binds and reads itself are the ones ``databases`` would), how the driver runs SQL the port compiles itself,
how SQLAlchemy's own engines reach the database (``create_all``, the migrations), and, on PostgreSQL, how the writes
waiting together are committed together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import re
import sqlite3
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import databases
import sqlalchemy
from databases.core import Connection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# A type's name in PostgreSQL with its length, precision or scale apart: "VARCHAR(20)", "NUMERIC(10, 2)", "note_kind".
PLAIN_TYPE = re.compile(r"([A-Za-z_][A-Za-z0-9_ ]*?)(\(\d+(, \d+)?\))?")


class DatabaseError(Exception):
    """The database is down, unreachable, locked or failing; the driver's error is the ``__cause__``."""


class RefusedByDatabase(Exception):
    """The database refused a statement's data; the statement changed nothing, and sending it again will not help."""

    def __init__(self, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.column = column


class ConstraintConflict(RefusedByDatabase):
    """The data conflicts with a constraint: a unique, check or foreign key constraint (a 409)."""


class ValueNotStorable(RefusedByDatabase):
    """A value that its column cannot hold: too long, out of range, missing where it is required (a 422)."""


class ParameterNotStorable(ValueNotStorable):
    """A value given to a statement, as a key to look up, a limit or a column's value, that the database cannot take
    (a 422 located where the value came from)."""

    def __init__(self, value: Any, column: str | None = None) -> None:
        super().__init__("The database cannot take this value", column)
        self.value = value


class GroupConflict(Exception):
    """A group of writes conflicted with another transaction: each of its writes is run again alone."""


class Write(NamedTuple):
    """A write that a backend that ``groups_writes`` runs together with others of the same ``sql``: the row of an
    ``insert_many`` statement (``inserts``), or a statement's arguments."""

    sql: str
    values: Any
    inserts: bool = False


def conflict(constraint: str | None = None, column: str | None = None) -> ConstraintConflict:
    what = f" {constraint}" if constraint else f" on {column}" if column else ""
    return ConstraintConflict(f"Conflict with the database's constraint{what}", column)


def not_storable(column: str | None = None) -> ValueNotStorable:
    where = f"column {column}" if column else "columns"
    return ValueNotStorable(f"The value does not fit the database's {where}", column)


class Backend:
    """What differs from one database to another, as ``databases`` keeps it in ``backends/<name>.py``.

    ``dialect`` is the one ``databases`` gives its queries, so that the values the port binds and reads itself are
    the ones ``databases`` would bind and read; ``sql_dialect`` is the driver's, for the types in PostgreSQL's grouped
    INSERT.
    """

    name: str
    driver: str
    sync_driver: str | None = None  # a driver of SQLAlchemy's own without asyncio, installed with this one
    paramstyle, native_decimal = "pyformat", True  # the settings databases gives the sync driver's dialect
    errors: tuple[type[Exception], ...] = (OSError, sqlite3.Error)  # OSError: TimeoutError and socket errors
    shares_connection = False  # one connection for every query, each execute in a group committed in one transaction
    in_memory = False  # the database lives in the shared connection only: no other connection sees it
    groups_writes = False  # the writes waiting together are committed together (``write_together``)

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.inserts: dict[tuple[Any, tuple[str, ...]], tuple[str, list[Any]] | None] = {}
        dialect_class: Any = sqlalchemy.engine.make_url(f"{self.name}+{self.driver}://").get_dialect()
        self.sql_dialect: sqlalchemy.Dialect = dialect_class()
        self.dialect = self.databases_dialect()

    def databases_dialect(self) -> sqlalchemy.Dialect:
        """Return the dialect ``databases`` gives its queries, set up as its ``backends/<name>.py`` sets it up: the
        sync driver's, with its ``paramstyle`` and ``native_decimal``."""
        dialect_class: Any = sqlalchemy.engine.make_url(f"{self.name}+{self.sync_driver}://").get_dialect()
        dialect: Any = dialect_class(paramstyle=self.paramstyle)
        dialect.supports_native_decimal = self.native_decimal
        return dialect  # type: ignore[no-any-return]

    def databases_url(self) -> str:
        """Return the URL as ``databases`` reads it: with one host and port."""
        return str(self.url)

    def options(self) -> dict[str, Any]:
        """Return what ``databases`` hands the driver's ``connect`` besides the URL."""
        return {}

    def sqlalchemy_query(self) -> dict[str, str]:
        """Return the options of the URL that SQLAlchemy's engine takes, for ``create_all`` and the migrations."""
        return {}

    def refusal(self, exc: Exception) -> RefusedByDatabase | None:
        """Return what ``exc`` tells of a statement's data that the database refused, or ``None``."""
        return None

    async def setup(self, connection: Connection) -> None:
        """Set up what the backend learns of the server at start, on ``connection`` (where the backend
        ``shares_connection``, the one every query shares)."""

    def insert_many(self, query: Any, values: dict[str, Any] | None) -> Write | None:
        """Return the write that inserts the row of ``execute(query, values)`` together with others: the backend's
        ``insert_many_sql``, and the row's values as the statement takes them, bound as ``databases`` binds them;
        ``None`` if ``query`` is not a bare ``insert()`` (one with values, ``RETURNING`` or ``ON CONFLICT`` of
        its own), a value is an SQL expression or one that its column's type refuses, or the backend has no such
        statement for the row: the query then runs alone.
        """
        if not values or not isinstance(query, sqlalchemy.Insert) or list(query.get_children()) != [query.table]:
            return None
        table, names = query.table, tuple(values)
        if not isinstance(table, sqlalchemy.Table):
            return None
        if (table, names) not in self.inserts:
            self.inserts[table, names] = self.insert_many_sql(table, names)
        insert = self.inserts[table, names]
        if insert is None:
            return None
        sql, processors = insert
        if any(isinstance(value, sqlalchemy.ClauseElement) for value in values.values()):
            return None
        try:
            row = [value if process is None else process(value) for process, value in zip(processors, values.values())]
        except (TypeError, ValueError, LookupError):
            return None
        return Write(sql, row, inserts=True)

    def insert_many_sql(self, table: sqlalchemy.Table, names: tuple[str, ...]) -> tuple[str, list[Any]] | None:
        """Return the statement that inserts rows of ``table`` with values for ``names`` together, and the columns'
        bind processors, where the backend ``groups_writes``; ``None`` if there is none."""
        return None

    async def write_together(self, driver: Any, group: list[Write]) -> list[Any]:
        """Run the writes of ``group`` in one transaction on the ``driver``'s connection and return what
        ``databases``' ``execute`` returns for each, where the backend ``groups_writes``."""
        raise NotImplementedError

    def result_processor(self, type_: sqlalchemy.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
        """Return what turns the driver's value of a column of ``type_`` into the value ``databases`` gives, or
        ``None``."""
        processor: Callable[[Any], Any] | None = type_.dialect_impl(self.dialect).result_processor(self.dialect, None)
        return processor

    def driver_sql(self, sql: str, positiontup: Sequence[str] | None, names: Iterable[str]) -> tuple[str, list[str]]:
        """Return SQL compiled for ``dialect`` as ``databases`` hands it to the driver, and the names of its
        parameters in the order the driver takes them (``databases``' ``_compile``)."""
        return sql, list(positiontup or ())

    def arguments(self, names: list[str], values: list[Any]) -> Any:
        """Return the parameters ``values``, in the order of ``names``, as the driver takes them."""
        return values

    async def fetch(self, driver: Any, sql: str, args: Any) -> Sequence[Sequence[Any]]:
        """Return the rows of ``sql`` run with ``args`` on the ``driver``'s connection."""
        raise NotImplementedError

    async def fetch_described(self, driver: Any, sql: str, args: Any, one: bool) -> Described:
        """Return the rows of ``sql`` (only the first if ``one``) and the names of their columns, as the driver
        gives them."""
        raise NotImplementedError

    async def execute(self, driver: Any, sql: str, args: Any, insert: bool) -> Any:
        """Run ``sql`` and return what ``databases``' ``execute`` returns: the new key of an ``insert``, else the
        number of rows changed (PostgreSQL: the first value of the first row, if any)."""
        raise NotImplementedError

    async def execute_many(self, driver: Any, sql: str, args: list[Any]) -> None:
        """Run ``sql`` once with each of ``args`` in one call of the driver's ``executemany``."""
        raise NotImplementedError

    def stream(self, driver: Any, sql: str, args: Any, size: int) -> AsyncGenerator[Described, None]:
        """Yield the rows of ``sql`` ``size`` at a time, with the names of their columns, read from one cursor on the
        ``driver``'s connection: the rows of one snapshot, in the order the database gives them, however many."""
        raise NotImplementedError

    async def acquire(self, backend: databases.interfaces.DatabaseBackend) -> tuple[Any, Release]:
        """Return a connection of ``databases``' ``backend`` for one call, the driver's, and what gives it back."""
        connection = backend.connection()
        await connection.acquire()
        return connection.raw_connection, connection.release

    def reusable_after(self, exc: BaseException) -> bool:
        """Whether a connection whose operation ended with ``exc`` is in a known state: ``exc`` is an error the
        database sent, or one the driver raised before it sent anything."""
        return isinstance(exc, sqlite3.Error)

    def discard(self, driver: Any) -> None:
        """Close the ``driver``'s connection at once, so that its pool does not hand it out again."""

    async def close(self) -> None:
        """Close what the backend opened besides ``databases``' connections."""

    def terminate(self, backend: databases.interfaces.DatabaseBackend) -> None:
        """Close at once the connections of ``databases``' ``backend``, in use or not.

        ``databases`` has no public name for its pool: its backends for asyncpg and aiomysql keep it as ``_pool``, and
        both pools have ``terminate()``.
        """
        pool = getattr(backend, "_pool", None)
        if pool is not None:
            pool.terminate()
            backend._pool = None  # type: ignore[attr-defined]

    def refused_parameter(self, exc: Exception, names: list[str], args: Any) -> str | None:
        """Return the name of the parameter that ``exc`` says the driver or the database could not take, or
        ``None``: an integer over 64 bits, or one over its PostgreSQL type's range."""
        if isinstance(exc, OverflowError):
            return beyond_64_bits(names, args)
        return None

    def async_engine_options(self) -> dict[str, Any]:
        """Return the options of SQLAlchemy's async engine on this database."""
        return {}

    def sqlalchemy_url(self, driver: str) -> sqlalchemy.URL:
        """Return this database's URL for SQLAlchemy's own engine on ``driver``, without ``databases``' options."""
        url = sqlalchemy.make_url(self.databases_url())
        query = self.sqlalchemy_query()
        if "host" in query:  # the hosts of a cluster, as SQLAlchemy takes them
            url = url.set(host=None, port=None)
        return url.set(drivername=f"{self.name}+{driver}", query=query)

    def async_engine(self) -> AsyncEngine:
        """Return SQLAlchemy's async engine on this database, through the app's own driver (for the migrations)."""
        from sqlalchemy.ext.asyncio import create_async_engine  # It loads SQLAlchemy's ORM: only when needed.

        url = self.sqlalchemy_url(self.driver)
        return create_async_engine(url, poolclass=sqlalchemy.NullPool, **self.async_engine_options())

    async def create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Run ``metadata.create_all`` as the FastAPI version does, on a sync engine in a thread, where the backend has
        a sync driver (sqlite3, PyMySQL); else on the async engine."""
        if self.sync_driver is not None:
            engine = sqlalchemy.create_engine(self.sqlalchemy_url(self.sync_driver), poolclass=sqlalchemy.NullPool)
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

    async def open_replica(self, url: str) -> Any:
        """Return a pool of connections to the read replica at ``url`` (one host), each opened when first needed."""
        raise ValueError(f"{self.name} has no read replicas here: DATABASE_REPLICA_URL is for PostgreSQL")

    async def position(self, driver: Any) -> int:
        """Return how far in the primary's log the server of ``driver`` is: on the primary, the end of what it has
        committed; on a replica, the end of what it has replayed."""
        raise NotImplementedError


class FullySynchronous(sqlite3.Connection):
    """A connection whose commits are on disk, power cut or not, before they return (``synchronous = FULL``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA synchronous = FULL")


class SQLiteBackend(Backend):
    name, driver = "sqlite", "aiosqlite"
    sync_driver = "pysqlite"

    paramstyle, native_decimal = "qmark", False  # as databases' backends/sqlite.py
    errors = Backend.errors + (OverflowError,)  # OverflowError: an integer over 64 bits
    shares_connection = True
    readers = 4  # connections that read long lists, each with a thread of aiosqlite's: no more, however many lists

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        self.idle: list[Any] = []
        self.reading = asyncio.Semaphore(self.readers)  # made anew at each connect(), for its event loop
        self.in_memory = url.database in ("", ":memory:")

    def options(self) -> dict[str, Any]:
        # Every connection (the shared one, a transaction's, a list's) waits for other writers up to the deadline.
        return {"timeout": self.timeout, "factory": FullySynchronous}

    async def setup(self, connection: Connection) -> None:
        # Readers and the writer do not block each other, with one fsync per commit.
        await connection.execute("PRAGMA journal_mode = WAL")
        self.reading = asyncio.Semaphore(self.readers)

    def refusal(self, exc: Exception) -> RefusedByDatabase | None:
        if isinstance(exc, sqlite3.IntegrityError):  # "UNIQUE constraint failed: notes.text"
            kind, _, where = str(exc).partition(" constraint failed: ")
            column = where.rpartition(".")[2] if re.fullmatch(r"[\w.]+(, [\w.]+)*", where) else None
            if kind == "NOT NULL":
                return not_storable(column)
            constraint = where if kind == "CHECK" and re.fullmatch(r"\w+", where) else None
            return conflict(constraint, column)
        if isinstance(exc, (sqlite3.DataError, sqlite3.InterfaceError, OverflowError)):
            return not_storable()
        return None

    async def fetch(self, driver: Any, sql: str, args: Any) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await driver.execute_fetchall(sql, args)  # aiosqlite
        return rows

    async def fetch_described(self, driver: Any, sql: str, args: Any, one: bool) -> Described:
        async with driver.execute(sql, args) as cursor:
            rows = await (cursor.fetchmany(1) if one else cursor.fetchall())
            return rows, described(cursor)

    async def execute(self, driver: Any, sql: str, args: Any, insert: bool) -> Any:
        # databases reads lastrowid on a connection of the query's own; on the shared one it may be an earlier
        # statement's, so only an INSERT's counts.
        async with driver.execute(sql, args) as cursor:
            return cursor.lastrowid if insert and cursor.lastrowid else cursor.rowcount

    async def execute_many(self, driver: Any, sql: str, args: list[Any]) -> None:
        await driver.executemany(sql, args)  # aiosqlite: sqlite3's loop, in one call to its thread

    async def stream(self, driver: Any, sql: str, args: Any, size: int) -> AsyncGenerator[Described, None]:
        # A cursor left open on the shared connection would hold its snapshot, and its next write would fail once
        # another process has written: a long list is read on a connection of its own.
        if self.in_memory:
            async for page in read_cursor(driver, sql, args, size):
                yield page
            return
        async with self.reading:
            reader = await self.reader()
            try:
                async for page in read_cursor(reader, sql, args, size):
                    yield page
            except BaseException:
                # In an unknown state (a cursor still open, say): closed, in a task of its own that a deadline passed
                # meanwhile does not stop halfway, which would leave its thread running.
                await asyncio.shield(reader.close())
                raise
            self.idle.append(reader)

    async def reader(self) -> Any:
        """Return an idle connection for reading lists, opened if there is none."""
        if self.idle:
            return self.idle.pop()
        import aiosqlite

        reader = await aiosqlite.connect(self.url.database, isolation_level=None, **self.options())
        await reader.execute("PRAGMA query_only = ON")
        return reader

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().close()


async def read_cursor(driver: Any, sql: str, args: Any, size: int) -> AsyncGenerator[Described, None]:
    """Yield the rows of ``sql`` ``size`` at a time from one cursor of aiosqlite's ``driver``."""
    async with driver.execute(sql, args) as cursor:
        while rows := await cursor.fetchmany(size):
            yield rows, described(cursor)
            if len(rows) < size:
                break


class PostgresBackend(Backend):
    name, driver = "postgresql", "asyncpg"
    groups_writes = True

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        import asyncpg

        self.asyncpg = asyncpg
        self.hosts = listed_hosts(str(url))
        # asyncpg's InterfaceError includes its DataError for a value it cannot send, which is a ValueError too; its
        # InternalClientError is a connection in a state it did not expect, as in the middle of a failover.
        self.errors = Backend.errors + (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

    def databases_dialect(self) -> sqlalchemy.Dialect:
        from databases.backends.dialects.psycopg import dialect as postgres_dialect

        dialect: Any = postgres_dialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
        dialect.implicit_returning = True
        dialect.supports_native_enum = True
        dialect.supports_smallserial = True
        dialect._backslash_escapes = False
        dialect.supports_sane_multi_rowcount = True
        dialect._has_native_hstore = True
        dialect.supports_native_decimal = True
        return dialect  # type: ignore[no-any-return]

    def databases_url(self) -> str:
        # databases reads one host and port; a cluster's hosts go to asyncpg in options().
        return str(self.url) if len(self.hosts) < 2 else with_host(str(self.url), *self.hosts[0])

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"reset": keep_session}
        if "statement_cache_size" in self.url.options:
            # PgBouncer in transaction mode hands each transaction any server connection: no prepared statements.
            options["statement_cache_size"] = int(self.url.options["statement_cache_size"])
        return {**options, **self.cluster()}  # asyncpg tries the hosts in turn, for one with the target_session_attrs

    async def acquire(self, backend: databases.interfaces.DatabaseBackend) -> tuple[Any, Release]:
        driver, _ = await super().acquire(backend)
        return driver, functools.partial(release_to_pool, driver)

    def reusable_after(self, exc: BaseException) -> bool:
        # The server's errors; asyncpg's DataError for a value it cannot send, an InterfaceError and a ValueError; and
        # a cancellation, which asyncpg sends on to the server, and waits for before the connection is given back.
        asyncpg = self.asyncpg
        if isinstance(exc, asyncpg.InterfaceError):
            return isinstance(exc, ValueError)
        return isinstance(exc, asyncpg.PostgresError | asyncio.CancelledError)

    def discard(self, driver: Any) -> None:
        driver.terminate()  # asyncpg's pool then opens another in its place

    def sqlalchemy_query(self) -> dict[str, str]:
        # SQLAlchemy's asyncpg dialect takes a cluster's hosts as host=h1,h2&port=p1,p2.
        return {
            name: ",".join(map(str, value)) if isinstance(value, list) else value
            for name, value in self.cluster().items()
        }

    def cluster(self) -> dict[str, Any]:
        """Return a cluster's hosts and ports, as lists, and its ``target_session_attrs``, where the URL has them."""
        cluster: dict[str, Any] = {}
        if len(self.hosts) > 1:
            cluster["host"] = [host for host, _ in self.hosts]
            cluster["port"] = [port or 5432 for _, port in self.hosts]
        if "target_session_attrs" in self.url.options:
            cluster["target_session_attrs"] = self.url.options["target_session_attrs"]
        return cluster

    def refusal(self, exc: Exception) -> RefusedByDatabase | None:
        asyncpg = self.asyncpg
        if isinstance(exc, asyncpg.NotNullViolationError):
            return not_storable(exc.column_name)
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return conflict(exc.constraint_name, exc.column_name)
        if isinstance(exc, asyncpg.DataError):
            return not_storable(getattr(exc, "column_name", None))
        if isinstance(exc, ValueError):  # asyncpg's, for a value it cannot send as its parameter's type
            return not_storable()
        return None

    def result_processor(self, type_: sqlalchemy.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
        processor = super().result_processor(type_)
        if processor is None:
            return None

        def process(value: Any) -> Any:
            # databases' Record processes only what asyncpg gives as an int, str or float (JSON's text, say):
            # asyncpg decodes dates, decimals and UUIDs itself.
            return processor(value) if isinstance(value, (int, str, float)) else value

        return process

    async def write_together(self, driver: Any, group: list[Write]) -> list[Any]:
        """Run the writes of ``group`` in one transaction and return what ``databases``' ``execute`` returns for each:
        an INSERT's new key, ``None`` for an UPDATE or a DELETE.

        One statement inserts the rows of a table (``insert_many_sql``), and one ``executemany``, pipelined, runs the
        writes of one SQL: a round trip for each and one commit for the group, instead of one each. The writes of one
        SQL run in the order of their arguments read from the last (the WHERE clause's), the same in every process, so
        that two groups' UPDATEs by key take their rows' locks in the same order; a group that still deadlocks with
        another transaction is run again one write at a time (``GroupConflict``).
        """
        results: list[Any] = [None] * len(group)
        statements: dict[tuple[str, bool], list[int]] = {}
        for index, write in enumerate(group):
            statements.setdefault((write.sql, write.inserts), []).append(index)
        try:
            async with driver.transaction() if len(statements) > 1 else contextlib.nullcontext():
                for (sql, inserts), indexes in statements.items():
                    if inserts:
                        columns = [list(column) for column in zip(*(group[index].values for index in indexes))]
                        for index, (key,) in zip(indexes, await driver.fetch(sql, *columns)):
                            results[index] = key
                    elif len(indexes) == 1:
                        results[indexes[0]] = await driver.fetchval(sql, *group[indexes[0]].values)
                    else:
                        arguments = sorted(
                            (group[index].values for index in indexes), key=lambda values: repr(values[::-1])
                        )
                        await driver.executemany(sql, arguments)
        except self.asyncpg.TransactionRollbackError as exc:  # a deadlock, or a serialization failure
            if len(group) > 1:
                raise GroupConflict(str(exc)) from exc
            raise
        return results

    def insert_many_sql(self, table: sqlalchemy.Table, names: tuple[str, ...]) -> tuple[str, list[Any]] | None:
        """Return one statement that inserts rows of ``table`` with values for ``names``, taking them as one array
        per column and answering their new keys in the arrays' order, and the columns' bind processors.

        Each key is drawn from the key's sequence beside its row's position, so that nothing depends on the order of
        ``RETURNING``, which PostgreSQL does not promise. Each array is cast to its column's type without a length,
        precision or scale: an explicit cast to ``VARCHAR(20)`` would cut a longer text, where the ``INSERT`` refuses
        it. A key given by the caller, a column left to a Python-side default, and a type without such a plain name
        (an array, one with a collation or a schema) make it ``None``.
        """
        key = table.autoincrement_column
        if key is None or key.key in names or any(name not in table.c for name in names):
            return None
        columns = [table.c[name] for name in names]
        if any(column.default is not None for column in table.columns if column.key not in names):
            return None
        types = [re.fullmatch(PLAIN_TYPE, column.type.compile(self.sql_dialect)) for column in columns]
        if not all(types):
            return None
        dialect, preparer = self.dialect, self.sql_dialect.identifier_preparer
        name = preparer.format_table(table)
        arrays = ", ".join(f"${i}::{match[1]}[]" for i, match in enumerate(types, 1) if match)
        listed = ", ".join(preparer.quote(column.name) for column in columns)
        sql = (
            f"WITH rows AS (SELECT nextval(pg_get_serial_sequence('{name}', '{key.name}')) AS key, {listed}, n "
            f"FROM unnest({arrays}) WITH ORDINALITY AS rows ({listed}, n)), "
            f"inserted AS (INSERT INTO {name} ({preparer.quote(key.name)}, {listed}) SELECT key, {listed} FROM rows) "
            "SELECT key FROM rows ORDER BY n"
        )
        return sql, [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]

    def driver_sql(self, sql: str, positiontup: Sequence[str] | None, names: Iterable[str]) -> tuple[str, list[str]]:
        # databases compiles with the pyformat paramstyle, then numbers the parameters in the order of their names.
        ordered = sorted(names)
        return sql % {name: f"${index}" for index, name in enumerate(ordered, 1)}, ordered

    async def fetch(self, driver: Any, sql: str, args: Any) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await driver.fetch(sql, *args)  # asyncpg
        return rows

    async def fetch_described(self, driver: Any, sql: str, args: Any, one: bool) -> Described:
        if one:
            row = await driver.fetchrow(sql, *args)
            return ([], []) if row is None else ([row], list(row.keys()))
        rows = await driver.fetch(sql, *args)
        return rows, list(rows[0].keys()) if rows else []

    async def execute(self, driver: Any, sql: str, args: Any, insert: bool) -> Any:
        return await driver.fetchval(sql, *args)

    async def execute_many(self, driver: Any, sql: str, args: list[Any]) -> None:
        await driver.executemany(sql, args)  # asyncpg: pipelined, all or none

    async def stream(self, driver: Any, sql: str, args: Any, size: int) -> AsyncGenerator[Described, None]:
        # A cursor of SQL's own, not asyncpg's: asyncpg prepares a cursor's statement under a name of its connection's
        # (__asyncpg_stmt_5__), which PgBouncer in transaction mode leaves on a server connection that another client
        # is handed next. The cursor is named for its SQL, so that the FETCH that asyncpg caches reads its columns.
        cursor = f"port_{hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()}"
        async with driver.transaction():
            await driver.execute(f"DECLARE {cursor} NO SCROLL CURSOR FOR {sql}", *args)
            while rows := await driver.fetch(f"FETCH {size} FROM {cursor}"):
                yield rows, list(rows[0].keys())
                if len(rows) < size:
                    break

    def refused_parameter(self, exc: Exception, names: list[str], args: Any) -> str | None:
        # asyncpg refuses a value its parameter's type cannot hold before it sends anything:
        # "invalid input for query argument $1: 2147483648 (value out of int32 range)"
        found = re.match(r"invalid input for query argument \$(\d+):", str(exc))
        if found and isinstance(exc, (self.asyncpg.DataError, self.asyncpg.InterfaceError)):
            return names[int(found[1]) - 1]
        return super().refused_parameter(exc, names, args)

    async def open_replica(self, url: str) -> Any:
        from databases.backends.postgres import PostgresBackend as DatabasesBackend

        replica = PostgresBackend(databases.DatabaseURL(url), self.timeout)
        # The URL's pool options (max_size, ssl) read as databases reads the primary's; no connection opened at
        # start, so that a replica down does not keep the app from starting.
        pool_options = DatabasesBackend(replica.url, **replica.options())._get_connection_kwargs()
        return await self.asyncpg.create_pool(
            host=replica.url.hostname,
            port=replica.url.port,
            user=replica.url.username,
            password=replica.url.password,
            database=replica.url.database,
            **{**pool_options, "min_size": 0},
        )

    async def position(self, driver: Any) -> int:
        # The end of the WAL flushed on the primary, past every commit it acknowledged; a standby promoted since is a
        # primary.
        position: int = await driver.fetchval(
            "SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_flush_lsn() END, '0/0')::bigint"
        )
        return position

    def async_engine_options(self) -> dict[str, Any]:
        # Statements named anew, so that PgBouncer's transaction mode never finds a name another client prepared.
        name = f"__port_{uuid.uuid4().hex}_{{}}__"
        counter = itertools.count()
        return {"connect_args": {"prepared_statement_name_func": lambda: name.format(next(counter))}}


class MySQLBackend(Backend):
    name, driver = "mysql", "aiomysql"
    sync_driver = "pymysql"
    paramstyle, native_decimal = "pyformat", True  # as databases' backends/mysql.py

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        import pymysql

        self.pymysql = pymysql
        self.errors = Backend.errors + (pymysql.Error,)

    def reusable_after(self, exc: BaseException) -> bool:
        # MySQL's own errors are numbered below 2000, the client's (2013, a connection lost) from 2000 on.
        code = exc.args[0] if isinstance(exc, self.pymysql.Error) and exc.args else None
        return isinstance(code, int) and code < 2000

    def discard(self, driver: Any) -> None:
        driver.close()  # aiomysql's pool does not hand out a closed connection

    def options(self) -> dict[str, Any]:
        seconds = max(1, int(self.timeout))
        return {"init_command": f"SET SESSION lock_wait_timeout = {seconds}, innodb_lock_wait_timeout = {seconds}"}

    # MySQL's and MariaDB's error numbers for data they refuse, whatever class PyMySQL gives them.
    conflict_codes = {1062, 1451, 1452, 3819, 4025}  # duplicate entry, foreign keys, check constraints
    not_storable_codes = {1048, 1264, 1265, 1292, 1366, 1406, 1690, 3140}  # null, out of range, too long, invalid value

    def refusal(self, exc: Exception) -> RefusedByDatabase | None:
        if not isinstance(exc, self.pymysql.Error) or len(exc.args) < 2:
            return None
        code, message = exc.args[0], str(exc.args[1])
        # "Column 'text' cannot be null", "Incorrect uuid value: '...' for column `db`.`notes`.`id` at row 1"
        column = re.search(r"[Cc]olumn (?:'(\w+)'|(?:`\w+`\.)*`(\w+)`)", message)
        if code in self.not_storable_codes:
            return not_storable(column and (column.group(1) or column.group(2)))
        if code in self.conflict_codes:
            # "Duplicate entry '...' for key 'text'", "CONSTRAINT `positive` failed for `test`.`notes`"
            key = re.search(r"for key '([\w.]+)'$|CONSTRAINT `(\w+)` failed", message)
            return conflict(key and (key.group(1) or key.group(2)))
        return None

    def driver_sql(self, sql: str, positiontup: Sequence[str] | None, names: Iterable[str]) -> tuple[str, list[str]]:
        return sql, list(names)  # pyformat: PyMySQL puts each value in the SQL by its name

    def arguments(self, names: list[str], values: list[Any]) -> Any:
        return dict(zip(names, values))

    async def fetch(self, driver: Any, sql: str, args: Any) -> Sequence[Sequence[Any]]:
        return (await self.fetch_described(driver, sql, args, one=False))[0]

    async def fetch_described(self, driver: Any, sql: str, args: Any, one: bool) -> Described:
        async with driver.cursor() as cursor:  # aiomysql
            await cursor.execute(sql, args)
            rows = await (cursor.fetchmany(1) if one else cursor.fetchall())
            return rows, described(cursor)

    async def execute(self, driver: Any, sql: str, args: Any, insert: bool) -> Any:
        async with driver.cursor() as cursor:
            await cursor.execute(sql, args)
            return cursor.rowcount if cursor.lastrowid == 0 else cursor.lastrowid

    async def execute_many(self, driver: Any, sql: str, args: list[Any]) -> None:
        async with driver.cursor() as cursor:  # aiomysql: an INSERT's rows folded into multi-row statements
            await cursor.executemany(sql, args)

    async def stream(self, driver: Any, sql: str, args: Any, size: int) -> AsyncGenerator[Described, None]:
        import aiomysql

        async with driver.cursor(aiomysql.SSCursor) as cursor:  # rows read as they are taken
            await cursor.execute(sql, args)
            while rows := await cursor.fetchmany(size):
                yield rows, described(cursor)
                if len(rows) < size:
                    break

    def refused_parameter(self, exc: Exception, names: list[str], args: Any) -> str | None:
        if isinstance(exc, self.pymysql.Error) and exc.args[:1] == (1064,):  # PyMySQL writes any integer in the SQL
            return beyond_64_bits(names, args)
        return super().refused_parameter(exc, names, args)


BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (SQLiteBackend, PostgresBackend, MySQLBackend)
}


Described = tuple[Sequence[Sequence[Any]], list[str]]  # rows as the driver gives them, and their columns' names
Release = Callable[[], Coroutine[Any, Any, None]]  # gives a connection back


def described(cursor: Any) -> list[str]:
    """Return the names of the columns of a DB-API ``cursor``'s rows."""
    return [column[0] for column in cursor.description or ()]


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


def beyond_64_bits(names: list[str], args: Any) -> str | None:
    """Return the name of the first integer in ``args`` that 64 bits cannot hold, or ``None``."""
    for name, value in zip(names, args.values() if isinstance(args, dict) else args):
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return name
    return None


async def release_to_pool(connection: Any) -> None:
    """Give a connection of an asyncpg pool back to it, as ``Pool.release`` does, without a task for each release.

    ``Pool.release`` runs the release in a task of its own (``asyncio.shield``), so that a cancellation cannot stop it
    halfway: a task and two more turns of the event loop for every query. A release seldom waits (on a transaction
    left open, a connection past ``max_queries``, a query being cancelled), and one cancelled while it waits
    terminates the connection, which goes back to the pool all the same, as a connection that failed does.

    asyncpg has no public name for the release itself: ``Pool.release`` makes these calls.
    """
    if connection._con is None:  # released already
        return
    connection._con._on_release()
    holder = connection._holder
    await holder.release(holder._timeout)


async def keep_session(connection: Any) -> None:
    """Give an asyncpg connection back to the pool as it is, without a round trip to reset its session.

    asyncpg rolls back an open transaction before it calls this; the app leaves nothing else in a session (no
    ``SET``, ``LISTEN``, cursor or advisory lock) for its default reset query to clear.
    """
