"""Every statement compiled once per shape, bound as ``databases`` binds it, run by the driver.

``CompiledCache`` keys a statement as SQLAlchemy's engine keys its compiled cache (its cache key, and the values
extracted with it), so that a statement of the same shape with other values is not compiled again. A ``Statement``
holds the SQL as the backend's driver takes it, its parameters' bind processors and the readers of its rows
(``records.py``); each value goes through its type's processors for ``databases``' dialect, so that it is the value
``databases`` would bind or give. ``core.py``'s ``Database`` runs what this prepares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy
from sqlalchemy.sql import ClauseElement, operators
from sqlalchemy.sql.cache_key import CacheKey
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from storage.backends import Backend, Write
from storage.backends.base import bare_insert_into, is_plain
from storage.exceptions import DatabaseError, ParameterNotStorable, RefusedByDatabase
from storage.records import Record, RecordKeys, RowReader, row_reader


class CompiledCache:
    """Statements compiled once for each shape, as SQLAlchemy's engine caches them: keyed by the statement's cache key,
    each run with the values extracted with that key, bound and read as ``databases`` binds and reads them."""

    size = 500  # statements kept, as SQLAlchemy's engine keeps by default

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.statements: dict[Any, Statement] = {}
        self.inserts: dict[tuple[Any, ...], Statement | None] = {}  # by table and columns given, from code
        # By statement and the names of its values: a statement built once is found again without a cache key.
        self.bound: dict[ClauseElement, dict[tuple[str, ...], Bound]] = {}

    def prepare(self, query: ClauseElement | str, values: dict[str, Any] | None) -> Prepared:
        """Return ``query`` with ``values`` as ``databases`` would run them, the SQL compiled at most once; values
        that name ``bindparam()``s of ``query`` are bound to them (``bind``)."""
        if values and not isinstance(query, str) and is_plain(values):
            if (bound := self.bound.get(query, {}).get(tuple(values))) is not None:
                return bound.prepare(values)
            if (insert := self.insert(query, values)) is not None:
                # Its parameters are the columns given, named as the values are unless the SQL escapes a name.
                if insert.compiled.escaped_bind_names:
                    return insert.prepare(insert.compiled.construct_params(values))
                self.keep_bound(query, tuple(values), Bound(insert, {}))
                return insert.prepare(values)
            key = cache_key(query)
            if key is not None and any(bind.key in values for bind in key.bindparams):
                return self.bind(query, key, values)
        query = build_query(query, values)
        key = cache_key(query)
        statement = self.statements.get(key.key) if key is not None else None
        if statement is not None:
            assert key is not None
            statement.used = True
            return statement.prepare(statement.compiled.construct_params(key.params, key.bindparams))
        compiled = query.compile(dialect=self.backend.dialect, cache_key=key)
        assert isinstance(compiled, SQLCompiler)
        statement = Statement(compiled, self.backend)
        if key is not None:
            self.keep(key.key, statement)
        return statement.prepare(compiled.construct_params())

    def bind(self, query: ClauseElement, key: CacheKey, values: dict[str, Any]) -> Prepared:
        """Return ``query`` to run with ``values`` as SQLAlchemy's ``connection.execute(query, values)`` runs it: each
        value binds the ``bindparam()`` of its name or, in an INSERT or UPDATE, sets the column of its name. Compiled
        once for the statement's shape and the names given, and kept for ``query`` itself, so that a statement built
        once is not built, keyed or compiled again."""
        names = tuple(values)
        statement = self.statements.get((key.key, names))
        if statement is None:
            compiled = query.compile(dialect=self.backend.dialect, column_keys=list(names), cache_key=key)
            assert isinstance(compiled, SQLCompiler)
            statement = Statement(compiled, self.backend)
            self.keep((key.key, names), statement)
        statement.used = True
        bound = Bound.of(statement, values, key.bindparams)
        if bound is None:  # bound again at each call
            return statement.prepare(statement.compiled.construct_params(values, key.bindparams))
        self.keep_bound(query, names, bound)
        return bound.prepare(values)

    def insert(self, query: ClauseElement | str, values: dict[str, Any]) -> Statement | None:
        """Return the statement of ``query.values(**values)`` where ``query`` is a bare ``insert()`` of a table and
        ``values`` give its columns plain values: compiled once for the table and the columns given, with a parameter
        for each, so that no statement is built and no cache key made for each row; else ``None``."""
        table = bare_insert_into(query)
        if table is None:
            return None
        key = (table, *values)
        if key not in self.inserts:
            # A column left to a Python-side default takes it from the statement built for the row.
            plain = all(name in table.c for name in values)
            plain = plain and all(column.default is None for column in table.columns if column.key not in values)
            bound = table.insert().values({name: sqlalchemy.bindparam(name) for name in values}) if plain else None
            compiled = bound.compile(dialect=self.backend.dialect) if bound is not None else None
            self.inserts[key] = Statement(compiled, self.backend) if isinstance(compiled, SQLCompiler) else None
        return self.inserts[key]

    def keep_bound(self, query: ClauseElement, names: tuple[str, ...], bound: Bound) -> None:
        """Keep ``bound`` for ``query`` and the names of the values given; past ``size`` statements, drop the one kept
        first (statements built for each call)."""
        if query not in self.bound and len(self.bound) >= self.size:
            del self.bound[next(iter(self.bound))]
        self.bound.setdefault(query, {})[names] = bound

    def keep(self, key: Any, statement: Statement) -> None:
        """Cache ``statement`` under ``key``; past ``size`` statements, drop one not used lately, as SQLAlchemy's
        least-recently-used cache does: the oldest one not used since it was last passed over (a second chance)."""
        while len(self.statements) >= self.size:
            oldest = next(iter(self.statements))
            kept = self.statements.pop(oldest)
            if not kept.used:
                break
            kept.used = False
            self.statements[oldest] = kept
        self.statements[key] = statement


def build_query(query: ClauseElement | str, values: dict[str, Any] | None) -> ClauseElement:
    """Return ``query`` with ``values``, as ``databases`` builds it: ``text()`` with them bound, or ``.values()``."""
    if isinstance(query, str):
        return sqlalchemy.text(query).bindparams(**values) if values is not None else sqlalchemy.text(query)
    if values:
        return query.values(**values)  # type: ignore[attr-defined, no-any-return]
    return query


def at_most(query: ClauseElement | str, rows: int) -> ClauseElement | None:
    """Return the select that reads all of ``query``'s rows at once if it has at most ``rows``: ``query`` itself where
    its own LIMIT is at most ``rows``, else limited to one row more, which gives more than ``rows`` only if ``query``
    does; ``None`` for a larger LIMIT, an OFFSET without a LIMIT, a FETCH, or anything but a select.

    SQLAlchemy has no public name for a select's limit and offset: its compiler reads these same attributes.
    """
    if not isinstance(query, sqlalchemy.GenerativeSelect):
        return None
    if not query._has_row_limiting_clause:
        return query.limit(rows + 1)
    limit = query._limit_clause
    if limit is not None and query._simple_int_clause(limit) and query._limit is not None and query._limit <= rows:
        return query if query._fetch_clause is None else None
    return None


def cache_key(query: ClauseElement) -> CacheKey | None:
    """Return the key SQLAlchemy's engine caches ``query``'s compiled form under, ``None`` if it is not cacheable.

    SQLAlchemy has no public name for it: its engine's own ``_compile_w_cache`` makes the same call.
    """
    return query._generate_cache_key()


class Statement:
    """A statement compiled for ``databases``' dialect: its SQL as the driver takes it, what binds its parameters,
    and what reads its rows into the values ``databases`` gives."""

    def __init__(self, compiled: SQLCompiler, backend: Backend) -> None:
        self.compiled = compiled
        self.backend = backend
        self.used = False  # run again since it was compiled, or last passed over by ``CompiledCache.keep``
        dialect = backend.dialect
        escaped = compiled.escaped_bind_names
        binds = {bind: escaped.get(name, name) for bind, name in compiled.bind_names.items()}
        self.binds = binds
        self.processors = {}
        for bind, name in binds.items():
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None:
                self.processors[name] = process
        self.expanding = bool(compiled.post_compile_params or compiled.literal_execute_params)
        self.sql, self.names = backend.driver_sql(compiled.string, compiled.positiontup, dict.fromkeys(binds.values()))
        self.is_insert = compiled.isinsert or (
            isinstance(compiled.statement, sqlalchemy.TextClause)
            and compiled.string.lstrip().upper().startswith(("INSERT", "REPLACE"))
        )
        # An UPDATE or a DELETE that answers no rows gives nothing but its success: it can run with others.
        self.groupable = (compiled.isupdate or compiled.isdelete) and not compiled.effective_returning
        self.one_row = gives_one_row(compiled.statement)  # at most: read whole, in one call of the driver's
        columns = result_columns(compiled)
        self.columns = columns
        self.typed: tuple[RowReader, RecordKeys] | None = None  # where the statement types its columns
        self.readers: dict[tuple[str, ...], tuple[RowReader, RecordKeys]] = {}  # else, by the names the driver gives
        if columns:
            names = tuple(name for name, _, _ in columns)
            processors = {i: backend.result_processor(type_) for i, (_, type_, _) in enumerate(columns)}
            keys = RecordKeys(names, {label: name for name, _, labels in columns for label in labels})
            self.typed = row_reader(list(names), processors), keys

    def prepare(self, params: Mapping[str, Any]) -> Prepared:
        """Return the statement with ``params``, bound as the driver takes them."""
        sql, names = self.sql, self.names
        processors: Mapping[str, Callable[[Any], Any]] = self.processors
        if self.expanding:  # an IN list: the SQL has a parameter for each item
            expanded = self.compiled.construct_expanded_state(params)
            sql, names = self.backend.driver_sql(expanded.statement, expanded.positiontup, expanded.parameters)
            # The expanded state's processors are its items' only.
            params, processors = expanded.parameters, {**processors, **expanded.processors}
        values = []
        for name in names:  # a loop, not a list comprehension: a call of its own before Python 3.12
            values.append(processors[name](params[name]) if name in processors else params[name])
        return Prepared(self, sql, names, self.backend.arguments(names, values), params)

    def reader(self, names: Sequence[str]) -> tuple[RowReader, RecordKeys]:
        """Return what reads rows whose columns have ``names`` (as the driver describes them) into dicts, and their
        records' keys: values processed by their types where the statement types its columns (``text()`` does
        not)."""
        if self.typed is not None:
            return self.typed
        key = tuple(names)
        if key not in self.readers:
            self.readers[key] = row_reader(list(key), {}), RecordKeys(key, {})
        return self.readers[key]

    def compares_for_equality(self, name: str) -> bool:
        """Whether the parameter ``name`` is compared for equality with a column, in the ``AND`` of the statement's
        ``WHERE``: a value the column cannot hold then matches no row."""
        keys = {bind.key for bind, bound in self.binds.items() if bound == name}
        for clause in conjuncts(getattr(self.compiled.statement, "whereclause", None)):
            if isinstance(clause, BinaryExpression) and clause.operator is operators.eq:
                sides = (clause.left, clause.right)
                if any(isinstance(side, BindParameter) and side.key in keys for side in sides):
                    return any(isinstance(side, sqlalchemy.ColumnClause) for side in sides)
        return False

    def column_of(self, name: str) -> str | None:
        """Return the column the parameter ``name`` gives a value for, in an ``INSERT`` or ``UPDATE``."""
        table = getattr(self.compiled.statement, "table", None)
        if (self.compiled.isinsert or self.compiled.isupdate) and table is not None and name in table.c:
            return name
        return None


class Bound(NamedTuple):
    """A statement compiled for values given by name, and the values of the parameters its SQLAlchemy statement holds
    itself, by name."""

    statement: Statement
    held: dict[str, Any]

    def prepare(self, values: dict[str, Any]) -> Prepared:
        return self.statement.prepare({**self.held, **values} if self.held else values)

    @classmethod
    def of(cls, statement: Statement, values: dict[str, Any], extracted: Sequence[BindParameter[Any]]) -> Bound | None:
        """Return ``statement`` bound as its SQLAlchemy statement, whose parameters are ``extracted``, binds ``values``:
        ``None`` where a parameter is computed at each call, or one given has a name the SQL escapes."""
        compiled = statement.compiled
        if any(bind.callable is not None for bind in statement.binds) or set(compiled.escaped_bind_names) & set(values):
            return None
        params = compiled.construct_params(values, extracted)
        return cls(statement, {name: value for name, value in params.items() if name not in values})


class Prepared(NamedTuple):
    """A statement ready to run: its SQL, its parameters' names in the driver's order, and the driver's arguments."""

    statement: Statement
    sql: str
    names: list[str]
    args: Any
    params: Mapping[str, Any]  # the values as given, by name

    @property
    def is_insert(self) -> bool:
        return self.statement.is_insert

    async def execute(self, driver: Any) -> Any:
        """Run the statement on the ``driver``'s connection; return what ``databases``' ``execute`` returns."""
        return await self.statement.backend.execute(driver, self.sql, self.args, self.statement.is_insert)

    def write(self) -> Write:
        """Return the statement as a write that runs together with others of the same SQL."""
        return Write(self.sql, self.args)

    def dicts(self, rows: Sequence[Sequence[Any]], names: Sequence[str]) -> list[dict[str, Any]]:
        read_row, _ = self.statement.reader(names)
        return list(map(read_row, rows))

    def records(self, rows: Sequence[Sequence[Any]], names: Sequence[str]) -> list[Record]:
        read_row, keys = self.statement.reader(names)
        return [Record(read_row(row), keys) for row in rows]

    def record(self, row: Sequence[Any], names: Sequence[str]) -> Record:
        read_row, keys = self.statement.reader(names)
        return Record(read_row(row), keys)

    def matches_nothing(self, exc: RefusedByDatabase | DatabaseError, reading: bool = True) -> bool:
        """Whether ``exc`` is a value that a column cannot hold, given for ``reading`` rows where the column equals it,
        so that no row can match; raise a ``ParameterNotStorable`` for any other parameter the database cannot take.
        """
        cause = exc.__cause__
        if not isinstance(cause, Exception):
            return False
        name = self.statement.backend.refused_parameter(cause, self.names, self.args)
        if name is None:
            return False
        if reading and self.statement.compares_for_equality(name):
            return True
        raise ParameterNotStorable(self.params[name], self.statement.column_of(name)) from cause


async def execute_all(driver: Any, statements: list[Prepared]) -> list[Any]:
    """Run ``statements`` in turn on the ``driver``'s connection; return what ``databases``' ``execute`` returns for
    each. Several of one SQL (``execute_many``'s) go in one call of the driver's ``executemany``, each result ``None``:
    one round trip, not one a row."""
    if len(statements) > 1 and all(each.sql == statements[0].sql for each in statements):
        first = statements[0]
        await first.statement.backend.execute_many(driver, first.sql, [each.args for each in statements])
        return [None] * len(statements)
    return [await each.execute(driver) for each in statements]


def result_columns(compiled: SQLCompiler) -> list[tuple[str, Any, list[str]]]:
    """Return the columns of ``compiled``'s rows: each one's key, type and the names ``str(column)`` gives its
    ``Column``s, as ``databases``' ``create_column_maps`` reads them from SQLAlchemy's compiler."""
    columns = []
    for key, _, objects, type_ in compiled._result_columns:
        labels = [str(item) for item in objects if isinstance(item, sqlalchemy.ColumnElement)]
        columns.append((key, type_, labels))
    return columns


def gives_one_row(statement: Any) -> bool:
    """Whether ``statement`` is a select of one table that gives one row at most: its ``WHERE`` compares each column of
    the table's primary key, or of one of its unique constraints, for equality with a value."""
    if not isinstance(statement, sqlalchemy.Select) or len(froms := statement.get_final_froms()) != 1:
        return False
    table = froms[0]
    if not isinstance(table, sqlalchemy.Table):
        return False
    equal = set()
    for clause in conjuncts(statement.whereclause):
        if isinstance(clause, BinaryExpression) and clause.operator is operators.eq:
            for column, other in ((clause.left, clause.right), (clause.right, clause.left)):
                if isinstance(column, sqlalchemy.Column) and column.table is table and isinstance(other, BindParameter):
                    equal.add(column.key)
    unique = [constraint for constraint in table.constraints if isinstance(constraint, sqlalchemy.UniqueConstraint)]
    keys: list[Iterable[sqlalchemy.Column[Any]]] = [table.primary_key.columns, *(each.columns for each in unique)]
    keys += [[column] for column in table.columns if column.unique]
    return any(all(column.key in equal for column in key) for key in keys if list(key))


def conjuncts(clause: Any) -> Iterator[Any]:
    """Yield the terms of ``clause`` joined by ``AND``, or ``clause`` itself."""
    if isinstance(clause, BooleanClauseList) and clause.operator is operators.and_:
        for term in clause.clauses:
            yield from conjuncts(term)
    elif clause is not None:
        yield clause
