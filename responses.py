"""The answer of a long list, sent from a spool that keeps memory bounded: in memory while the lists in flight are
small, in a temporary file past that, refused past a cap on disk (Starlette's and FastAPI's ``responses.py``)."""

from __future__ import annotations

import tempfile

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class SpoolsFull(Exception):
    """The long lists being answered hold all the memory and disk that ``Spools`` allows: a 503."""


class Spools:
    """The bytes of the long lists being answered: each list's in memory while the lists in flight hold less than
    ``memory`` bytes there, else in a temporary file; past ``disk`` bytes on disk a list is refused (``SpoolsFull``)."""

    def __init__(self, memory: int = 8 * 1024 * 1024, disk: int = 1024 * 1024 * 1024) -> None:
        self.memory = memory
        self.disk = disk
        self.in_memory = 0  # bytes the lists hold in memory now
        self.on_disk = 0  # and on disk

    def open(self) -> Spool:
        return Spool(self)


class Spool:
    """One list's bytes, in memory until its ``Spools`` says to move them to disk (``SpooledTemporaryFile``)."""

    def __init__(self, spools: Spools) -> None:
        self.spools = spools
        self.file = tempfile.SpooledTemporaryFile()  # no max_size: it rolls over when write() says
        self.size = 0
        self.rolled_over = False

    def write(self, data: bytes) -> None:
        spools = self.spools
        if not self.rolled_over and spools.in_memory + len(data) > spools.memory:
            self.file.rollover()
            self.rolled_over = True
            spools.in_memory -= self.size
            spools.on_disk += self.size
        if self.rolled_over and spools.on_disk + len(data) > spools.disk:
            raise SpoolsFull(f"the lists being answered hold {spools.on_disk} bytes on disk")
        try:
            self.file.write(data)
        except OSError as exc:  # the disk is full
            raise SpoolsFull(str(exc)) from exc
        self.size += len(data)
        if self.rolled_over:
            spools.on_disk += len(data)
        else:
            spools.in_memory += len(data)

    def close(self) -> None:
        if not self.file.closed:
            if self.rolled_over:
                self.spools.on_disk -= self.size
            else:
                self.spools.in_memory -= self.size
            self.file.close()


default_spools = Spools()  # for an app without ``ClientLimits``


class SpooledResponse(Response):
    """An answer whose body is a ``Spool``'s bytes, sent a chunk at a time; the spool is closed once they are sent, or
    once the client is gone."""

    chunk_size = 16 * 1024  # what a stalled client holds in hand, beside what its connection holds to send

    def __init__(self, spool: Spool, status_code: int, media_type: str) -> None:
        super().__init__(status_code=status_code, headers={"content-length": str(spool.size)}, media_type=media_type)
        self.spool = spool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            self.spool.file.seek(0)
            while chunk := self.spool.file.read(self.chunk_size):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.spool.close()
