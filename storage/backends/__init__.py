"""What differs from one database to another, one module for each, as ``databases`` keeps its ``backends/``."""

from __future__ import annotations

from storage.backends.base import Backend, Described, Release, Write
from storage.backends.mysql import MySQLBackend
from storage.backends.postgres import PostgresBackend
from storage.backends.sqlite import SQLiteBackend

BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (SQLiteBackend, PostgresBackend, MySQLBackend)
}


__all__ = ["BACKENDS", "Backend", "Described", "MySQLBackend", "PostgresBackend", "Release", "SQLiteBackend", "Write"]
