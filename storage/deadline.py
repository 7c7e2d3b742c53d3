"""Every database call within a deadline, its driver's errors turned into the engine's own."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy

from storage.backends import Backend
from storage.exceptions import DatabaseError


class Deadline:
    """Run a block within the ``deadlines``' timeout, and turn their backend's driver errors into a ``DatabaseError``,
    or a ``RefusedByDatabase`` where the database refused the statement's data.

    Past the deadline the block is cancelled, and cancelled again every half second: a driver that cleans up after a
    cancellation (asyncpg waits for the server to confirm it, then resets the connection) may be waiting on a network
    that no longer answers, and a second cancellation makes it close the connection.
    """

    __slots__ = ("deadlines", "cancellations", "task", "expires", "timer")
    task: asyncio.Task[Any]
    expires: float  # by the event loop's clock

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines
        self.cancellations = 0
        self.timer: asyncio.TimerHandle | None = None  # once past: the next cancellation's

    def __enter__(self) -> None:
        # A plain ``with``: nothing here waits.
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.deadlines.start(self)

    def cancel(self) -> None:
        self.cancellations += 1
        self.task.cancel()
        self.timer = self.task.get_loop().call_later(0.5, self.cancel)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        self.deadlines.running.pop(self, None)
        if self.timer is not None:
            self.timer.cancel()
        if exc is None:
            return
        if isinstance(exc, asyncio.CancelledError):
            for _ in range(self.cancellations):
                self.task.uncancel()
            if self.cancellations and not self.task.cancelling():  # else cancelled by someone else: the request
                raise DatabaseError(f"no answer in {self.deadlines.timeout:g} s") from None
        elif isinstance(exc, self.deadlines.backend.errors):
            refused = self.deadlines.backend.refusal(exc)
            if refused is not None:
                raise refused from exc
            raise DatabaseError(str(exc)) from exc
        elif isinstance(exc, sqlalchemy.exc.DBAPIError):  # from SQLAlchemy's own engine, in create_all
            raise DatabaseError(str(exc.orig)) from exc


class Deadlines:
    """The deadlines of one database's calls, ``timeout`` seconds each, watched by one timer of the event loop's.

    They all have one timeout, so they pass in the order they began: the timer waits for the oldest running. A timer
    for each call, set and cancelled, would cost several times what this keeping costs.
    """

    def __init__(self, timeout: float, backend: Backend) -> None:
        self.timeout = timeout
        self.backend = backend
        self.running: dict[Deadline, None] = {}  # in the order they began, which is the order they pass
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, deadline: Deadline) -> None:
        loop = deadline.task.get_loop()
        if loop is not self.loop:  # the database runs on another: the last one's timer, and its deadlines, are gone
            self.loop, self.timer = loop, None
            self.running.clear()
        deadline.expires = loop.time() + self.timeout
        self.running[deadline] = None
        if self.timer is None:
            self.timer = loop.call_at(deadline.expires, self.cancel_passed)

    def cancel_passed(self) -> None:
        """Cancel the calls past their deadline, and wait for the next one's."""
        assert self.loop is not None
        self.timer = None
        now = self.loop.time()
        while self.running:
            deadline = next(iter(self.running))
            if deadline.expires > now:
                self.timer = self.loop.call_at(deadline.expires, self.cancel_passed)
                return
            del self.running[deadline]
            deadline.cancel()
