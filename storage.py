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

What differs from one database to another is in one class for each, as in ``databases``' ``backends/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import databases
import sqlalchemy
from databases.backends.dialects.psycopg import dialect as postgres_dialect
from databases.core import Connection
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.dialects.mysql import pymysql as mysql_dialect
from sqlalchemy.dialects.sqlite import pysqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

logger = logging.getLogger("notes_app")


class DatabaseError(Exception):
    """The database is down, unreachable, locked or failing; the driver's error is the ``__cause__``."""


class RefusedByDatabase(Exception):
    """The database refused a statement's data; the statement changed nothing, and sending it again will not help."""

    status_code = 422

    def __init__(self, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.column = column


class ConstraintConflict(RefusedByDatabase):
    """The data conflicts with a constraint: a unique, check or foreign key constraint."""

    status_code = 409


class ValueNotStorable(RefusedByDatabase):
    """A value that its column cannot hold: too long, out of range, missing where it is required."""


def conflict(constraint: str | None = None, column: str | None = None) -> ConstraintConflict:
    what = f" {constraint}" if constraint else f" on {column}" if column else ""
    return ConstraintConflict(f"Conflict with the database's constraint{what}", column)


def not_storable(column: str | None = None) -> ValueNotStorable:
    where = f"column {column}" if column else "columns"
    return ValueNotStorable(f"The value does not fit the database's {where}", column)


class Backend:
    """What differs from one database to another, as ``databases`` keeps it in ``backends/<name>.py``.

    ``dialect`` is the one ``databases`` gives its queries, so that the values the port binds and reads itself are
    the ones ``databases`` would bind and read; ``sql_dialect`` is the driver's, for the SQL the port compiles itself.
    """

    name: str
    driver: str
    dialect: sqlalchemy.Dialect
    errors: tuple[type[Exception], ...] = (OSError, sqlite3.Error)  # OSError: TimeoutError and socket errors
    shares_connection = False  # one connection for every query, each execute in a group committed in one transaction
    groups_inserts = False  # the plain INSERTs waiting together are one statement (``insert_many_sql``)

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        dialect_class: Any = sqlalchemy.engine.make_url(f"{self.name}+{self.driver}://").get_dialect()
        self.sql_dialect: sqlalchemy.Dialect = dialect_class()

    def options(self) -> dict[str, Any]:
        """Return what ``databases`` hands the driver's ``connect`` besides the URL."""
        return {}

    def refusal(self, exc: Exception) -> RefusedByDatabase | None:
        """Return what ``exc`` tells of a statement's data that the database refused, or ``None``."""
        return None

    async def setup(self, connection: Connection) -> None:
        """Set up the connection that every query shares, where the backend ``shares_connection``."""

    def insert_many_sql(self, table: sqlalchemy.Table, names: tuple[str, ...]) -> tuple[str, list[Any]] | None:
        """Return the statement that inserts rows of ``table`` with values for ``names`` together, and the columns'
        bind processors, where the backend ``groups_inserts``; ``None`` if there is none."""
        return None

    def result_processor(self, column: sqlalchemy.Column[Any]) -> Callable[[Any], Any] | None:
        """Return what turns the driver's value of ``column`` into the value ``databases`` gives, or ``None``."""
        processor: Callable[[Any], Any] | None = column.type.dialect_impl(self.dialect).result_processor(
            self.dialect, None
        )
        return processor

    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        """Return the rows of ``sql`` run with ``args`` on the ``driver``'s connection."""
        raise NotImplementedError

    def async_engine_options(self) -> dict[str, Any]:
        """Return the options of SQLAlchemy's async engine on this database."""
        return {}


class SQLiteBackend(Backend):
    name, driver = "sqlite", "aiosqlite"
    dialect = sqlite_dialect.dialect(paramstyle="qmark")
    dialect.supports_native_decimal = False  # as databases' backends/sqlite.py
    errors = Backend.errors + (OverflowError,)  # OverflowError: an integer over 64 bits
    shares_connection = True

    async def setup(self, connection: Connection) -> None:
        # A write waits for other processes' writes; readers and the writer do not block each other, with one fsync
        # per commit; a commit is on disk, power cut or not, before it returns.
        await connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA synchronous = FULL")

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

    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await driver.execute_fetchall(sql, args)  # aiosqlite
        return rows


def databases_postgres_dialect() -> sqlalchemy.Dialect:
    """Return the dialect ``databases`` gives its PostgreSQL queries, set up as its ``backends/postgres.py`` does."""
    dialect: Any = postgres_dialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
    dialect.implicit_returning = True
    dialect.supports_native_enum = True
    dialect.supports_smallserial = True
    dialect._backslash_escapes = False
    dialect.supports_sane_multi_rowcount = True
    dialect._has_native_hstore = True
    dialect.supports_native_decimal = True
    return dialect  # type: ignore[no-any-return]


class PostgresBackend(Backend):
    name, driver = "postgresql", "asyncpg"
    dialect = databases_postgres_dialect()
    groups_inserts = True

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        import asyncpg

        self.asyncpg = asyncpg
        # asyncpg's InterfaceError includes its DataError for a value it cannot send, which is a ValueError too.
        self.errors = Backend.errors + (asyncpg.PostgresError, asyncpg.InterfaceError)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"reset": keep_session}
        if "statement_cache_size" in self.url.options:
            # PgBouncer in transaction mode hands each transaction any server connection: no prepared statements.
            options["statement_cache_size"] = int(self.url.options["statement_cache_size"])
        return options

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

    def result_processor(self, column: sqlalchemy.Column[Any]) -> Callable[[Any], Any] | None:
        processor = super().result_processor(column)
        if processor is None:
            return None

        def process(value: Any) -> Any:
            # databases' Record processes only what asyncpg gives as an int, str or float (JSON's text, say):
            # asyncpg decodes dates, decimals and UUIDs itself.
            return processor(value) if isinstance(value, (int, str, float)) else value

        return process

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

    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await driver.fetch(sql, *args)  # asyncpg
        return rows

    def async_engine_options(self) -> dict[str, Any]:
        # Statements named anew, so that PgBouncer's transaction mode never finds a name another client prepared.
        name = f"__port_{uuid.uuid4().hex}_{{}}__"
        counter = itertools.count()
        return {"connect_args": {"prepared_statement_name_func": lambda: name.format(next(counter))}}


class MySQLBackend(Backend):
    name, driver = "mysql", "aiomysql"
    dialect = mysql_dialect.dialect(paramstyle="pyformat")
    dialect.supports_native_decimal = True  # as databases' backends/mysql.py

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        import pymysql

        self.pymysql = pymysql
        self.errors = Backend.errors + (pymysql.Error,)

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

    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        async with driver.cursor() as cursor:  # aiomysql
            await cursor.execute(sql, args)
            rows: Sequence[Sequence[Any]] = await cursor.fetchall()
            return rows


BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (SQLiteBackend, PostgresBackend, MySQLBackend)
}


async def keep_session(connection: Any) -> None:
    """Give an asyncpg connection back to the pool as it is, without a round trip to reset its session.

    asyncpg rolls back an open transaction before it calls this; the app leaves nothing else in a session (no
    ``SET``, ``LISTEN``, cursor or advisory lock) for its default reset query to clear.
    """


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
        self.processors: dict[sqlalchemy.Table, Processors] = {}

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

    def async_engine(self) -> AsyncEngine:
        """Return SQLAlchemy's async engine on this database, through the app's own driver."""
        url = sqlalchemy.make_url(str(self.url)).set(drivername=f"{self.backend.name}+{self.backend.driver}", query={})
        return create_async_engine(url, poolclass=sqlalchemy.NullPool, **self.backend.async_engine_options())

    async def create_all(self, metadata: sqlalchemy.MetaData) -> None:
        """Create what ``metadata`` holds and the database lacks, with SQLAlchemy's ``metadata.create_all``: tables,
        their indexes, constraints and defaults, and PostgreSQL's enum types (production databases use the Alembic
        migrations). Workers starting together race to create the same things; the losers try again."""
        engine = self.async_engine()
        try:
            for attempt in range(3):
                try:
                    async with self.bounded(), engine.begin() as connection:
                        await connection.run_sync(metadata.create_all)
                    return
                except (DatabaseError, RefusedByDatabase, sqlalchemy.exc.DBAPIError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.1 * (attempt + 1))
        finally:
            await engine.dispose()

    async def iterate_pages(self, table: sqlalchemy.Table) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield every row of ``table`` as a dict, in primary key order, ``page_size`` rows at a time.

        Each value is the one ``databases`` gives: the driver's, turned into its column type's value by that type's
        result processing (prepared once per table).
        """
        names = [column.name for column in table.columns]
        (key,) = [names.index(column.name) for column in table.primary_key.columns]
        first, following, processors = self.page_queries(table, self.page_size)
        query, after = first, dict[str, Any]()
        while rows := await self.fetch_raw(query, after):
            query, after = following, {"after": rows[-1][key]}
            more = len(rows) == self.page_size
            # Held in a list and popped, so that nothing here keeps the page while the caller holds it.
            if processors:
                page = [[dict(zip(names, processed(row, processors))) for row in rows]]
            else:
                page = [[dict(zip(names, row)) for row in rows]]
            del rows
            yield page.pop()
            if not more:
                return

    def page_queries(self, table: sqlalchemy.Table, size: int) -> tuple[DriverQuery, DriverQuery, Processors]:
        """Return the queries of the first ``size`` rows of ``table`` and of the ``size`` after the key ``after``, and
        the result processors of its columns, by position, where they have one."""
        if (table, size) not in self.compiled:
            (key,) = table.primary_key.columns
            first = sqlalchemy.select(table).order_by(key).limit(size)
            following = first.where(key > sqlalchemy.bindparam("after", type_=key.type))
            self.compiled[table, size] = self.for_driver(first), self.for_driver(following)
            processors = [(i, self.backend.result_processor(column)) for i, column in enumerate(table.columns)]
            self.processors[table] = [(i, process) for i, process in processors if process is not None]
        return (*self.compiled[table, size], self.processors[table])

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


def processed(row: Sequence[Any], processors: Processors) -> list[Any]:
    """Return the values of ``row``, each through its column's result processor, if it has one."""
    values = list(row)
    for index, process in processors:
        values[index] = process(values[index])
    return values


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
Processors = list[tuple[int, Callable[[Any], Any]]]  # the result processors of a row's values, by position
# A type's name in PostgreSQL with its length, precision or scale apart: "VARCHAR(20)", "NUMERIC(10, 2)", "note_kind".
PLAIN_TYPE = re.compile(r"([A-Za-z_][A-Za-z0-9_ ]*?)(\(\d+(, \d+)?\))?")


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
