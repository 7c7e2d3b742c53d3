"""MySQL and MariaDB through aiomysql (``databases``' ``backends/mysql.py``)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any

import databases

from storage.backends.base import Backend, Described, beyond_64_bits, described, lock_number
from storage.exceptions import RefusedByDatabase, conflict, not_storable


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

    async def try_lock(self, driver: Any, name: str) -> bool:
        # A named lock of the session, given up by unlock() before the transaction's connection goes back to its pool,
        # and by the server when the connection ends.
        try:
            async with driver.cursor() as cursor:
                await cursor.execute("SELECT GET_LOCK(%s, 0)", (lock_name(name),))
                (held,) = await cursor.fetchone()
                return bool(held == 1)
        except BaseException:
            self.discard(driver)  # a lock had but not known to be: given up with the connection
            raise

    async def unlock(self, driver: Any, name: str) -> None:
        try:
            async with driver.cursor() as cursor:
                await cursor.execute("SELECT RELEASE_LOCK(%s)", (lock_name(name),))
        except BaseException:
            self.discard(driver)  # and its locks with it: none may go back to the pool held
            raise

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


def lock_name(name: str) -> str:
    """Return the name of MySQL's lock on ``name``: at most 64 characters."""
    return f"port_{lock_number(name) & 2**64 - 1:016x}"
