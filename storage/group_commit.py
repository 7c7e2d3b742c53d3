"""The writes waiting at the same moment committed together, each answered once its group is committed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from storage.exceptions import DatabaseError

logger = logging.getLogger("notes_app")

OUTCOME_UNKNOWN = "A write given up at its deadline had been sent: outcome unknown"


Item = TypeVar("Item")
Send = Callable[[], list[Item]]  # the items of a group whose requests still wait, marked as sent


class Waiting(Generic[Item]):
    """An item to commit, the future its request waits on, and whether it was sent to the database."""

    __slots__ = ("item", "future", "sent")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent = False


class GroupCommit(Generic[Item]):
    """Commit items in groups, with ``commit``, and give each its result once its group is committed.

    An item that comes while nothing is being committed is committed alone, at once, in its request's own task; the
    items that come meanwhile wait and make the next group. ``commit`` takes a group's items by calling ``send`` once
    the database is ready to take them (a connection had, a write lock held): an item whose request gave up before
    then is left out, never sent. A group that fails for some of its items (anything but a ``DatabaseError``: a
    refusal of some item's data) is committed again one item at a time: only the items at fault fail.
    """

    def __init__(
        self,
        commit: Callable[[Send[Item]], Coroutine[Any, Any, list[Any]]],
        bounded: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.commit = commit
        self.bounded = bounded  # the deadline of a group's commit: a lone item's is its request's
        self.queue: asyncio.Queue[Waiting[Item]] = asyncio.Queue()
        self.committing = asyncio.Lock()  # one group at a time, a lone item's included: commits keep their order
        # Whether an item is sent is decided under this lock: ``send`` may run in a driver's thread (SQLite's).
        self.sending = threading.Lock()
        self.task = asyncio.create_task(self.run())

    async def execute(self, item: Item) -> Any:
        """Return the result of ``item`` once it is committed: at once, alone, while nothing is being committed; else
        with the next group."""
        waiting = Waiting(item)
        try:
            if self.committing.locked() or not self.queue.empty():
                self.queue.put_nowait(waiting)
                return await waiting.future
            await self.committing.acquire()  # free: taken at once
            try:
                return (await self.commit(self.sender([waiting], [])))[0]
            finally:
                self.committing.release()
        except asyncio.CancelledError:
            with self.sending:
                waiting.future.cancel()
                sent = waiting.sent
            if sent:
                logger.warning(OUTCOME_UNKNOWN)
            raise

    async def run(self) -> None:
        """Commit, over and over, all the items waiting: those that arrive meanwhile make the next group."""
        while True:
            group = [await self.queue.get()]
            async with self.committing:
                while not self.queue.empty():
                    group.append(self.queue.get_nowait())
                await self.commit_group(group)

    async def commit_group(self, group: list[Waiting[Item]]) -> None:
        sent: list[Waiting[Item]] = []
        try:
            # A task for each group: a deadline passed in ``commit`` cancels that task, never the loop that collects
            # the groups.
            results: list[Any] = await asyncio.create_task(self.commit_within_deadline(self.sender(group, sent)))
        except Exception as exc:
            if len(sent) > 1 and not isinstance(exc, DatabaseError):
                for waiting in sent:
                    await self.commit_group([waiting])
                return
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
        else:
            for waiting, result in zip(sent, results):
                if not waiting.future.done():
                    waiting.future.set_result(result)

    async def commit_within_deadline(self, send: Send[Item]) -> list[Any]:
        if self.bounded is None:
            return await self.commit(send)
        with self.bounded():
            return await self.commit(send)

    def sender(self, group: list[Waiting[Item]], sent: list[Waiting[Item]]) -> Send[Item]:
        """Return the ``send`` of ``group``: it gives the items whose requests still wait, marked as sent, and keeps
        them in ``sent``."""

        def send() -> list[Item]:
            items = []
            with self.sending:
                # Called in a driver's thread, it reads the futures' state only: the event loop's thread changes it.
                for waiting in group:
                    if not waiting.future.done():
                        waiting.sent = True
                        sent.append(waiting)
                        items.append(waiting.item)
            return items

        return send

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
