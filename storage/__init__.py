"""The storage engine: ``databases.Database`` with every statement compiled once, clean failures, deadlines and the
writes waiting together committed together, laid out as ``databases`` lays out its own (``core.py`` over
``backends/``). The app and its FastAPI-side modules use the names below."""

from __future__ import annotations

from storage.core import Database
from storage.exceptions import (
    ConstraintConflict,
    DatabaseError,
    ParameterNotStorable,
    RefusedByDatabase,
    ValueNotStorable,
)
from storage.replicas import DatabaseSelector
from storage.storable import storable_in

__all__ = [
    "ConstraintConflict",
    "Database",
    "DatabaseError",
    "DatabaseSelector",
    "ParameterNotStorable",
    "RefusedByDatabase",
    "ValueNotStorable",
    "storable_in",
]
