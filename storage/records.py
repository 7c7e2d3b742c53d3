"""Rows as ``databases`` gives them: read from the driver's rows into dicts, each value processed as ``databases``
processes it, and answered as ``databases``' records answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, KeysView, Sequence, ValuesView
from typing import Any, NamedTuple

import databases


class RecordKeys(NamedTuple):
    names: tuple[str, ...]  # the columns in order
    labels: dict[str, str]  # a column's name as ``str(column)`` gives it ("notes.id"), to its key


class Record(databases.interfaces.Record):
    """A row as ``databases`` gives one: each value by its column's name, position or ``Column``, or as an attribute;
    ``_mapping`` holds the same values, as a dict (``databases``' on PostgreSQL holds asyncpg's, JSON as its text)."""

    __slots__ = ("_mapping", "_keys")
    _mapping: dict[str, Any]

    def __init__(self, values: dict[str, Any], keys: RecordKeys) -> None:
        self._mapping = values
        self._keys = keys

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._mapping[key]
        if isinstance(key, int):
            return self._mapping[self._keys.names[key]]
        if isinstance(key, slice):
            return [self._mapping[name] for name in self._keys.names[key]]
        return self._mapping[self._keys.labels.get(str(key), getattr(key, "key", key))]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping)

    def __len__(self) -> int:
        return len(self._mapping)

    def keys(self) -> KeysView[str]:
        return self._mapping.keys()

    def values(self) -> ValuesView[Any]:
        return self._mapping.values()

    def _asdict(self) -> dict[str, Any]:
        return self._mapping

    def __repr__(self) -> str:
        return f"Record({self._mapping!r})"


def row_reader(names: list[str], processors: dict[int, Callable[[Any], Any] | None]) -> RowReader:
    """Return the function that turns a row, as the driver gives it, into a dict of ``names``, each value through
    its column's result processor where ``processors`` has one.

    It is written out as a dict display, as ``dataclasses`` writes the ``__init__`` of a class: for a long list, a
    dict display takes much less time per row than ``dict(zip(names, row))``.
    """
    values = [f"process_{i}(row[{i}])" if processors.get(i) else f"row[{i}]" for i in range(len(names))]
    display = ", ".join(f"{name!r}: {value}" for name, value in zip(names, values))
    namespace = {f"process_{i}": process for i, process in processors.items() if process}
    reader: RowReader = eval(f"lambda row: {{{display}}}", namespace)
    return reader


RowReader = Callable[[Sequence[Any]], dict[str, Any]]  # a row as the driver gives it, to the dict of its values
