"""PostgreSQL through asyncpg: clusters, PgBouncer, grouped writes and the pool's releases (``databases``'
``backends/postgres.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

import databases
import sqlalchemy

from storage.backends.base import Backend, Described, Release, Write, lock_number
from storage.exceptions import GroupConflict, RefusedByDatabase, conflict, not_storable
from storage.urls import listed_hosts, with_host

# A type's name in PostgreSQL with its length, precision or scale apart: "VARCHAR(20)", "NUMERIC(10, 2)", "note_kind".
PLAIN_TYPE = re.compile(r"([A-Za-z_][A-Za-z0-9_ ]*?)(\(\d+(, \d+)?\))?")


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
        return unnest_insert(table, names, self.dialect, self.sql_dialect)

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

    async def try_lock(self, driver: Any, name: str) -> bool:
        # An advisory lock of the transaction: given up when it ends, and with its connection.
        held: bool = await driver.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_number(name))
        return held

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


def unnest_insert(
    table: sqlalchemy.Table, names: tuple[str, ...], dialect: sqlalchemy.Dialect, sql_dialect: sqlalchemy.Dialect
) -> tuple[str, list[Any]] | None:
    """Return one statement that inserts rows of ``table`` with values for ``names``, taking them as one array per
    column and answering their new keys in the arrays' order, and the columns' bind processors for ``dialect``
    (``databases``'); the types are named as the driver's ``sql_dialect`` names them.

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
    types = [re.fullmatch(PLAIN_TYPE, column.type.compile(sql_dialect)) for column in columns]
    if not all(types):
        return None
    preparer = sql_dialect.identifier_preparer
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
