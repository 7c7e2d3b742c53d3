"""The errors of the storage engine, as SQLAlchemy keeps its own in ``exc.py``: a database that fails, and data it
refuses."""

from __future__ import annotations

from typing import Any


class DatabaseError(Exception):
    """The database is down, unreachable, locked or failing; the driver's error is the ``__cause__``."""


class RefusedByDatabase(Exception):
    """The database refused a statement's data; the statement changed nothing, and sending it again will not help."""

    def __init__(self, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.column = column


class ConstraintConflict(RefusedByDatabase):
    """The data conflicts with a constraint: a unique, check or foreign key constraint (a 409)."""


class ValueNotStorable(RefusedByDatabase):
    """A value that its column cannot hold: too long, out of range, missing where it is required (a 422)."""


class ParameterNotStorable(ValueNotStorable):
    """A value given to a statement, as a key to look up, a limit or a column's value, that the database cannot take
    (a 422 located where the value came from)."""

    def __init__(self, value: Any, column: str | None = None) -> None:
        super().__init__("The database cannot take this value", column)
        self.value = value


class GroupConflict(Exception):
    """A group of writes conflicted with another transaction: each of its writes is run again alone."""


def conflict(constraint: str | None = None, column: str | None = None) -> ConstraintConflict:
    what = f" {constraint}" if constraint else f" on {column}" if column else ""
    return ConstraintConflict(f"Conflict with the database's constraint{what}", column)


def not_storable(column: str | None = None) -> ValueNotStorable:
    where = f"column {column}" if column else "columns"
    return ValueNotStorable(f"The value does not fit the database's {where}", column)
