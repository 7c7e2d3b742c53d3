"""Every database call within a deadline, its driver's errors turned into the engine's own."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy

from storage.backends import Backend
from storage.exceptions import DatabaseError


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
        if exc is None:
            return
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
