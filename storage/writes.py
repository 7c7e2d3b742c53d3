"""How a ``Database`` writes: the writes waiting at the same moment committed together, a write that cannot wait with
others alone, and the writes of a transaction on its own connection."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql import ClauseElement

from storage.backends import Write
from storage.exceptions import DatabaseError, RefusedByDatabase
from storage.group_commit import OUTCOME_UNKNOWN, GroupCommit, Send
from storage.statements import Prepared, execute_all

if TYPE_CHECKING:
    from storage.core import Database

logger = logging.getLogger("notes_app")


class Writes:
    """The writes of ``database``: outside ``transaction()``, committed in groups where its backend can (on SQLite
    every write, in one transaction; on PostgreSQL the INSERTs, UPDATEs and DELETEs that answer no rows)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.backend = database.backend
        self.group_commit: GroupCommit[Any] | None = None

    def start(self) -> None:
        if self.backend.shares_connection:
            self.group_commit = GroupCommit(self.commit_in_one_transaction)
        elif self.backend.groups_writes:
            self.group_commit = GroupCommit(self.write_together, self.database.bounded)

    async def stop(self) -> None:
        if self.group_commit is not None:
            await self.group_commit.stop()
            self.group_commit = None

    async def execute(self, query: ClauseElement | str, values: dict[str, Any] | None) -> Any:
        """Run ``query`` with ``values``; return what ``databases``' ``execute`` returns. An ``insert()`` of a row
        given as ``values`` joins the group's one statement on PostgreSQL, with no SQL compiled for it."""
        if (
            self.backend.groups_writes
            and (group := self.group())
            and (insert := self.backend.insert_many(query, values))
        ):
            with self.database.bounded():
                return await group.execute(insert)
        return (await self.write([self.database.statements.prepare(query, values)]))[-1]

    async def write(self, statements: list[Prepared]) -> list[Any]:
        """Run ``statements`` in one transaction (on SQLite, with the others committed together) and return what
        ``databases``' ``execute`` returns for each."""
        database = self.database
        try:
            with database.bounded():
                group = self.group()
                if group is not None and self.backend.shares_connection:
                    results: list[Any] = await group.execute(statements)
                    return results
                if group is not None and len(statements) == 1 and statements[0].statement.groupable:
                    return [await group.execute(statements[0].write())]
                if len(statements) == 1:
                    return await database.with_connection(lambda driver: self.execute_alone(driver, statements[0]))
                async with database.connection() as connection, connection.transaction():
                    return await execute_all(connection.raw_connection, statements)
        except (RefusedByDatabase, DatabaseError) as exc:
            for prepared in statements:
                prepared.matches_nothing(exc, reading=False)  # raises where a parameter is at fault
            raise

    async def execute_alone(self, driver: Any, prepared: Prepared) -> list[Any]:
        """Run ``prepared`` on the ``driver``'s connection; outside ``transaction()`` it is its own transaction, whose
        outcome a deadline passed once it is sent leaves unknown, and the log says so."""
        try:
            return [await prepared.execute(driver)]
        except asyncio.CancelledError:
            if not self.database.in_transaction():
                logger.warning(OUTCOME_UNKNOWN)
            raise

    async def commit_in_one_transaction(self, send: Send[list[Prepared]]) -> list[Any]:
        """Run the statements of the group that ``send`` gives in one transaction, once it holds the write lock: on
        SQLite, one fsync for all of them, and nothing sent for a request that gave up while another process wrote."""
        if self.backend.in_memory:  # no other connection can lock it, and a transaction() may be open on it
            connection = self.database.connection()
            async with connection.transaction():
                return [await execute_all(connection.raw_connection, item) for item in send()]
        return await self.backend.run_and_commit(self.database.shared_driver, send)

    async def write_together(self, send: Send[Write]) -> list[Any]:
        """Run the writes of the group that ``send`` gives, once a connection is had, together (the backend's
        ``write_together``), and return their results."""
        return await self.database.with_connection(lambda driver: self.backend.write_together(driver, send()))

    def group(self) -> GroupCommit[Any] | None:
        """Return where this task's writes wait to be committed together with others'; ``None`` inside
        ``transaction()``, whose writes are its own."""
        return None if self.database.in_transaction() else self.group_commit
