"""``Idempotency-Key`` on the routes that write, as the IETF's draft describes it: a retry gets the first answer.

A request to a route declared with ``APIRoute(..., idempotency=keys)`` that carries an ``Idempotency-Key`` header
runs in a transaction of its own; if it answers 2xx, its answer (status, headers and body) is recorded under its key
in the same transaction as its writes, so that a key is recorded if and only if its writes are stored. A later
request with the key and the same method, path and body gets the recorded answer without running again, until
``ttl`` seconds have passed; with another method, path or body, a 422; while the first still runs, in this worker or
any other process on the database, a 409 (the key's lock, ``Database.lock``, goes with a process that dies). Any other
answer rolls the request's writes back and records nothing, so that a retry runs again. A request without the header
runs as it would without this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import sqlalchemy
from sqlalchemy.dialects import mysql
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routing import RequestValidationError
from storage import ConstraintConflict, Database

MAX_KEY_LENGTH = 255
STILL_RUNNING = "A request with this Idempotency-Key is still running"
SWEEP_EVERY = 60.0  # seconds between two removals of the expired records


class IdempotencyKeys:
    """The answers recorded under their ``Idempotency-Key`` in ``database``, in a table ``idempotency_keys`` added to
    ``metadata``, kept ``ttl`` seconds."""

    def __init__(self, database: Database, metadata: sqlalchemy.MetaData, ttl: float = 24 * 60 * 60) -> None:
        self.database = database
        self.ttl = ttl
        self.table = sqlalchemy.Table(
            "idempotency_keys",
            metadata,
            sqlalchemy.Column("key", sqlalchemy.String(MAX_KEY_LENGTH), primary_key=True),
            sqlalchemy.Column("fingerprint", sqlalchemy.String(64), nullable=False),  # of the method, path and body
            sqlalchemy.Column("status", sqlalchemy.Integer, nullable=False),
            sqlalchemy.Column("headers", sqlalchemy.Text, nullable=False),  # JSON: [[name, value], ...]
            # In base64: aiomysql cannot bind bytes. An answer may be as long as a note: MySQL's TEXT stops at 64 KiB.
            sqlalchemy.Column(
                "body", sqlalchemy.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=False
            ),
            sqlalchemy.Column("expires", sqlalchemy.BigInteger, nullable=False, index=True),  # seconds since 1970
            mysql_charset="utf8mb4",
        )
        self.running: set[str] = set()  # the keys whose first request runs in this process
        self.swept = 0.0

    def __call__(self, app: ASGIApp) -> ASGIApp:
        """Return ``app``, a route's, answering the requests that carry an ``Idempotency-Key`` once per key."""

        async def keyed(scope: Scope, receive: Receive, send: Send) -> None:
            key = Headers(scope=scope).get("idempotency-key")
            if key is None or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
                await app(scope, receive, send)
            else:
                await self.answer(key, app, scope, receive, send)

        return keyed

    async def answer(self, key: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request with the answer recorded under ``key``, or run it and record its answer."""
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            raise HTTPException(status_code=400, detail=f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
        body = await Request(scope, receive).body()
        request = f"{scope['method']} {scope['path']}?{scope['query_string'].decode('latin-1')}\n"
        fingerprint = hashlib.sha256(request.encode() + body).hexdigest()
        if key in self.running:
            raise HTTPException(status_code=409, detail=STILL_RUNNING)
        self.running.add(key)
        try:
            messages = await self.recorded(key, fingerprint)
            if messages is None:
                messages = await self.run(key, fingerprint, app, scope, with_body(body, receive))
        finally:
            self.running.discard(key)
        for message in messages:
            await send(message)

    async def run(self, key: str, fingerprint: str, app: ASGIApp, scope: Scope, receive: Receive) -> list[Message]:
        """Run ``app`` in a transaction and return its answer's messages; a 2xx answer is recorded under ``key`` and
        committed with the request's writes, any other rolled back with them."""
        messages: list[Message] = []

        async def keep(message: Message) -> None:
            messages.append(message)

        transaction = self.database.transaction()
        with self.database.bounded():
            await transaction.start()
        try:
            async with self.database.lock(f"idempotency-key {key}") as held:
                if not held:  # the key's first request runs in another process
                    raise HTTPException(status_code=409, detail=STILL_RUNNING)
                await app(scope, receive, keep)
                succeeded = 200 <= messages[0]["status"] < 300
                if succeeded:
                    await self.sweep()
                    await self.database.execute(self.table.insert(), self.record(key, fingerprint, messages))
        except ConstraintConflict:  # the same key, committed meanwhile by a request in another process
            await self.database.end(transaction, commit=False)
            if (recorded := await self.recorded(key, fingerprint)) is None:  # and expired at once: never with a ttl
                raise HTTPException(status_code=409, detail=STILL_RUNNING)
            return recorded
        except BaseException:
            await self.database.end(transaction, commit=False)
            raise
        await self.database.end(transaction, commit=succeeded)
        return messages

    def record(self, key: str, fingerprint: str, messages: list[Message]) -> dict[str, Any]:
        """Return the values of the record of an answer, from its ASGI ``messages``."""
        headers = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in messages[0].get("headers", [])]
        return {
            "key": key,
            "fingerprint": fingerprint,
            "status": messages[0]["status"],
            "headers": json.dumps(headers),
            "body": base64.b64encode(b"".join(message.get("body", b"") for message in messages[1:])).decode(),
            "expires": int(time.time() + self.ttl),
        }

    async def recorded(self, key: str, fingerprint: str) -> list[Message] | None:
        """Return the messages of the answer recorded under ``key``, ``None`` if there is none; raise a 422 if it was
        recorded for another request."""
        table = self.table
        record = await self.database.fetch_one(table.select().where(table.c.key == key))
        if record is None:
            return None
        if record.expires <= time.time():  # not swept yet: gone now, so that the key can be recorded again
            await self.database.execute(table.delete().where(table.c.key == key, table.c.expires == record.expires))
            return None
        if record.fingerprint != fingerprint:
            error = {
                "type": "idempotency_key_reused",
                "loc": ("header", "idempotency-key"),
                "msg": "This Idempotency-Key was used for another request",
                "input": key,
            }
            raise RequestValidationError([error])
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in json.loads(record.headers)]
        return [
            {"type": "http.response.start", "status": record.status, "headers": headers},
            {"type": "http.response.body", "body": base64.b64decode(record.body)},
        ]

    async def sweep(self) -> None:
        """Remove the expired records, at most once every ``SWEEP_EVERY`` seconds: the table holds the keys of the
        last ``ttl`` seconds only. In a keyed request's transaction: a sweep that fails stores nothing of it."""
        now = time.time()
        if now - self.swept >= SWEEP_EVERY:
            self.swept = now
            await self.database.execute(self.table.delete().where(self.table.c.expires <= int(now)))


def with_body(body: bytes, receive: Receive) -> Receive:
    """Return a ``receive`` that gives ``body``, already read, then what ``receive`` gives (a disconnect)."""
    given = False

    async def receive_body() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_body
