"""What differs from one database to another, in one class for each, as ``databases`` keeps its ``backends/``.

Each backend says which driver errors mean the database failed and which mean it refused a statement's data, what
``databases`` hands the driver when it connects, which dialect ``databases`` gives its queries (so that the values
the port binds and reads itself are the ones ``databases`` would), how the driver runs SQL the port compiles itself,
and, on PostgreSQL, the statement that inserts many rows at once.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import databases
import sqlalchemy
from databases.core import Connection

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
    sync_driver: str | None = None  # a driver of SQLAlchemy's own without asyncio, installed with this one
    paramstyle, native_decimal = "pyformat", True  # the settings databases gives the sync driver's dialect
    errors: tuple[type[Exception], ...] = (OSError, sqlite3.Error)  # OSError: TimeoutError and socket errors
    shares_connection = False  # one connection for every query, each execute in a group committed in one transaction
    groups_inserts = False  # the plain INSERTs waiting together are one statement (``insert_many_sql``)

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
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
    sync_driver = "pysqlite"

    paramstyle, native_decimal = "qmark", False  # as databases' backends/sqlite.py
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


class PostgresBackend(Backend):
    name, driver = "postgresql", "asyncpg"
    groups_inserts = True

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        import asyncpg

        self.asyncpg = asyncpg
        # asyncpg's InterfaceError includes its DataError for a value it cannot send, which is a ValueError too.
        self.errors = Backend.errors + (asyncpg.PostgresError, asyncpg.InterfaceError)

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
    sync_driver = "pymysql"
    paramstyle, native_decimal = "pyformat", True  # as databases' backends/mysql.py

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
