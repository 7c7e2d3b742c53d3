"""What every backend does the same way, and what each says for itself (``databases``' ``interfaces.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import databases
import sqlalchemy
from databases.core import Connection

from storage.exceptions import RefusedByDatabase

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

Described = tuple[Sequence[Sequence[Any]], list[str]]  # rows as the driver gives them, and their columns' names
Release = Callable[[], Coroutine[Any, Any, None]]  # gives a connection back


class Write(NamedTuple):
    """A write that a backend that ``groups_writes`` runs together with others of the same ``sql``: the row of an
    ``insert_many`` statement (``inserts``), or a statement's arguments."""

    sql: str
    values: Any
    inserts: bool = False


class Runnable(Protocol):
    """A statement as a backend runs it: its SQL as the driver takes it, its arguments, and whether it inserts."""

    @property
    def sql(self) -> str: ...

    @property
    def args(self) -> Any: ...

    @property
    def is_insert(self) -> bool: ...


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
        if not values or (table := inserted_into(query, values)) is None:
            return None
        names = tuple(values)
        if (table, names) not in self.inserts:
            self.inserts[table, names] = self.insert_many_sql(table, names)
        insert = self.inserts[table, names]
        if insert is None:
            return None
        sql, processors = insert
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

    def run_and_commit(
        self, driver: Any, groups: Callable[[], Sequence[Sequence[Runnable]]]
    ) -> Awaitable[list[list[Any]]]:
        """Begin a transaction on the ``driver``'s connection once it holds the write lock, run the statements that
        ``groups()``, called then, gives, and commit it, or roll it back if one fails, where the backend
        ``shares_connection``; return what ``execute`` returns for each."""
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

    def fetch(self, driver: Any, sql: str, args: Any) -> Awaitable[Sequence[Sequence[Any]]]:
        """Return the rows of ``sql`` run with ``args`` on the ``driver``'s connection."""
        raise NotImplementedError

    async def fetch_described(self, driver: Any, sql: str, args: Any, one: bool) -> Described:
        """Return the rows of ``sql`` (only the first if ``one``) and the names of their columns, as the driver
        gives them."""
        raise NotImplementedError

    def execute(self, driver: Any, sql: str, args: Any, insert: bool) -> Awaitable[Any]:
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

    async def try_lock(self, driver: Any, name: str) -> bool:
        """Take a lock on ``name`` that every process using the database sees, inside a transaction on the
        ``driver``'s connection, without waiting: whether it was had. A process or connection that ends gives its
        locks up."""
        raise NotImplementedError

    async def unlock(self, driver: Any, name: str) -> None:
        """Give up the lock on ``name`` that ``try_lock`` took, before its transaction ends."""

    async def position(self, driver: Any) -> int:
        """Return how far in the primary's log the server of ``driver`` is: on the primary, the end of what it has
        committed; on a replica, the end of what it has replayed."""
        raise NotImplementedError


def inserted_into(query: Any, values: dict[str, Any]) -> sqlalchemy.Table | None:
    """Return the table of ``execute(query, values)`` where ``query`` is a bare ``insert()`` (no values, ``RETURNING``
    or ``ON CONFLICT`` of its own) and ``values`` are plain values, no SQL expression; else ``None``."""
    return bare_insert_into(query) if is_plain(values) else None


def bare_insert_into(query: Any) -> sqlalchemy.Table | None:
    """Return the table that ``query`` inserts into where it is a bare ``insert()``, else ``None``."""
    if not isinstance(query, sqlalchemy.Insert):
        return None
    try:
        return bare_inserts[query]
    except KeyError:  # the first time
        pass
    table = query.table if isinstance(query.table, sqlalchemy.Table) else None  # once for a statement built once
    bare_inserts[query] = table = table if table is not None and list(query.get_children()) == [table] else None
    return table


bare_inserts: weakref.WeakKeyDictionary[sqlalchemy.Insert, sqlalchemy.Table | None] = weakref.WeakKeyDictionary()


def is_plain(values: dict[str, Any]) -> bool:
    """Whether ``values`` are plain values, none an SQL expression."""
    for value in values.values():  # a loop, not any() over a generator: this runs for every statement
        if isinstance(value, sqlalchemy.ClauseElement):
            return False
    return True


def lock_number(name: str) -> int:
    """Return the signed 64-bit number of the lock on ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def described(cursor: Any) -> list[str]:
    """Return the names of the columns of a DB-API ``cursor``'s rows."""
    return [column[0] for column in cursor.description or ()]


def beyond_64_bits(names: list[str], args: Any) -> str | None:
    """Return the name of the first integer in ``args`` that 64 bits cannot hold, or ``None``."""
    for name, value in zip(names, args.values() if isinstance(args, dict) else args):
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return name
    return None
