"""Run the migrations against ``DATABASE_URL`` through the app's own async driver: no sync driver needed."""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from notes_app import DATABASE_URL, metadata

ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "postgres": "asyncpg", "mysql": "aiomysql"}

if context.config.config_file_name is not None:
    logging.config.fileConfig(context.config.config_file_name, disable_existing_loggers=False)


def sqlalchemy_url() -> str:
    """Return ``DATABASE_URL`` for SQLAlchemy's async engine, without the options only ``databases`` reads."""
    url = make_url(DATABASE_URL)
    backend = url.get_backend_name()
    drivername = "postgresql" if backend == "postgres" else backend
    return url.set(drivername=f"{drivername}+{ASYNC_DRIVERS[backend]}", query={}).render_as_string(hide_password=False)


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(sqlalchemy_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=sqlalchemy_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_migrations_online())
