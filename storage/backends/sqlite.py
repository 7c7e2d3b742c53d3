"""SQLite through aiosqlite: one connection shared by every query, in WAL mode, each commit on disk before it
returns; long lists read on connections of their own (``databases``' ``backends/sqlite.py``)."""

from __future__ import annotations

import asyncio
import fcntl
import re
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, BinaryIO, TypeVar

import databases
from databases.core import Connection

from storage.backends.base import Backend, Described, Runnable, described, lock_number
from storage.exceptions import RefusedByDatabase, conflict, not_storable

Result = TypeVar("Result")
LOCK_OFFSETS = 2**62 - 1  # the bytes of the locks' file that lock_number() picks from


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
    reading: asyncio.Semaphore  # the readers' turns

    def __init__(self, url: databases.DatabaseURL, timeout: float) -> None:
        super().__init__(url, timeout)
        self.idle: list[Any] = []
        self.locks: BinaryIO | None = None  # the file whose bytes are try_lock()'s locks
        self.in_memory = url.database in ("", ":memory:")

    def options(self) -> dict[str, Any]:
        # Every connection (the shared one, a transaction's, a list's) waits for other writers up to the deadline.
        return {"timeout": self.timeout, "factory": FullySynchronous}

    async def setup(self, connection: Connection) -> None:
        # Readers and the writer do not block each other, with one fsync per commit.
        await connection.execute("PRAGMA journal_mode = WAL")
        self.reading = asyncio.Semaphore(self.readers)  # at each connect(), for its event loop

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

    # fetch, execute and run_and_commit are plain functions: what in_thread gives is awaited once, by the caller.
    def fetch(self, driver: Any, sql: str, args: Any) -> Awaitable[Sequence[Sequence[Any]]]:
        return in_thread(driver, fetch_rows, sql, args)

    async def fetch_described(self, driver: Any, sql: str, args: Any, one: bool) -> Described:
        async with driver.execute(sql, args) as cursor:
            rows = await (cursor.fetchmany(1) if one else cursor.fetchall())
            return rows, described(cursor)

    def execute(self, driver: Any, sql: str, args: Any, insert: bool) -> Awaitable[Any]:
        return in_thread(driver, run_one, sql, args, insert)

    def run_and_commit(
        self, driver: Any, groups: Callable[[], Sequence[Sequence[Runnable]]]
    ) -> Awaitable[list[list[Any]]]:
        return in_thread(driver, run_and_commit, groups)  # one call to aiosqlite's thread for all

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

    async def try_lock(self, driver: Any, name: str) -> bool:
        # A byte of a file beside the database, locked with fcntl: the kernel gives it up when the process ends. A
        # lock on the database file itself would go whenever SQLite closes a connection to it (POSIX locks are the
        # process's, per file).
        if self.in_memory:
            return True  # no other process sees the database
        if self.locks is None:
            self.locks = open(f"{self.url.database}-locks", "ab")  # open until close()
        try:
            fcntl.lockf(self.locks, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, lock_number(name) & LOCK_OFFSETS)
        except (BlockingIOError, PermissionError):  # held by another process
            return False
        return True

    async def unlock(self, driver: Any, name: str) -> None:
        if self.locks is not None:
            fcntl.lockf(self.locks, fcntl.LOCK_UN, 1, lock_number(name) & LOCK_OFFSETS)

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().close()
        if self.locks is not None:
            self.locks.close()
            self.locks = None


def in_thread(driver: Any, work: Callable[..., Result], *args: Any) -> Awaitable[Result]:
    """Return what to await for ``work(connection, *args)``, run on the sqlite3 connection of aiosqlite's ``driver``, in
    its thread: one call, where aiosqlite's cursor takes one for its statement and one more to close.

    aiosqlite has no public name for it: each of its methods queues a function of its own on its thread this way
    (``_execute``), on the connection it keeps as ``_conn``.
    """
    result: Awaitable[Result] = driver._execute(work, driver._conn, *args)
    return result


def fetch_rows(connection: sqlite3.Connection, sql: str, args: Any) -> list[Any]:
    """Return the rows of ``sql``, as aiosqlite's ``execute_fetchall`` does, without its wrappers."""
    return connection.execute(sql, args).fetchall()


def run_one(connection: sqlite3.Connection, sql: str, args: Any, insert: bool) -> Any:
    """Run ``sql`` and return what ``databases``' ``execute`` returns: the new key of an ``insert``, else the number of
    rows changed."""
    cursor = connection.execute(sql, args)
    try:
        # databases reads lastrowid on a connection of the query's own; on the shared one it may be an earlier
        # statement's, so only an INSERT's counts.
        return cursor.lastrowid if insert and cursor.lastrowid else cursor.rowcount
    finally:
        cursor.close()


def run_and_commit(
    connection: sqlite3.Connection, groups: Callable[[], Sequence[Sequence[Runnable]]]
) -> list[list[Any]]:
    """Begin a transaction on ``connection`` once it holds the write lock, run the statements that ``groups()`` then
    gives, and commit it; roll it back if a statement or the commit fails, so that the shared connection is never left
    inside a transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        results = []
        for statements in groups():
            if len(statements) > 1 and all(each.sql == statements[0].sql for each in statements):  # execute_many's
                connection.executemany(statements[0].sql, [each.args for each in statements])
                results.append([None] * len(statements))
            else:
                results.append([run_one(connection, each.sql, each.args, each.is_insert) for each in statements])
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return results


async def read_cursor(driver: Any, sql: str, args: Any, size: int) -> AsyncGenerator[Described, None]:
    """Yield the rows of ``sql`` ``size`` at a time from one cursor of aiosqlite's ``driver``."""
    async with driver.execute(sql, args) as cursor:
        while rows := await cursor.fetchmany(size):
            yield rows, described(cursor)
            if len(rows) < size:
                break
