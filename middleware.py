"""What one client may cost, bounded around the app: its body, its headers, and how long it may leave its answer
unread."""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from responses import Spools, default_spools

logger = logging.getLogger("notes_app")


class ClientLimits:
    """Bound what one client may cost, around the app: a request body over ``max_body_size`` bytes is refused with a
    413 (unread if its length says so, else once over), a header over ``max_header_size`` bytes with a 431, and a
    client that takes no bytes of its answer for ``send_timeout`` seconds is cut off. ``spools`` holds the long lists
    being answered."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_size: int,
        max_header_size: int = 8 * 1024,
        send_timeout: float = 60.0,
        spools: Spools = default_spools,
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        self.send_timeout = send_timeout
        self.spools = spools

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if any(len(name) + len(value) > self.max_header_size for name, value in scope["headers"]):
            response = JSONResponse({"detail": "Request Header Fields Too Large"}, status_code=431)
            await response(scope, receive, send)
            return
        scope["spools"] = self.spools
        await self.app(scope, self.limit_body(scope, receive), self.limit_stall(scope, send))

    def limit_body(self, scope: Scope, receive: Receive) -> Receive:
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            if not received and int(Headers(scope=scope).get("content-length") or 0) > self.max_body_size:
                raise HTTPException(status_code=413, detail="Content Too Large")
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_size:
                raise HTTPException(status_code=413, detail="Content Too Large")
            return message

        return receive_limited

    def limit_stall(self, scope: Scope, send: Send) -> Send:
        async def send_within_timeout(message: Message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                logger.info(
                    "%s %s: the client took nothing for %g s: cut off",
                    scope["method"],
                    scope["path"],
                    self.send_timeout,
                )
                cut_off(send)

        return send_within_timeout


def cut_off(send: Send) -> None:
    """Close at once the connection that uvicorn's ``send`` answers on, and drop what it holds to send: uvicorn then
    takes every later message of the answer as sent to a client gone.

    A closed connection would wait for the client to take what it holds, which a stalled client never does; uvicorn
    has no public name for the connection: its ``send`` is a method of the request's cycle, which keeps it as
    ``transport``.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise RuntimeError("cut_off() needs uvicorn's send, with no middleware before ClientLimits")
    transport.abort()
