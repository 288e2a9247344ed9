"""Keyset pagination for every list of both services: the opaque `?cursor=` of
`cxkit.http.pagination`, read as typed values and turned into a WHERE, an ORDER BY and a LIMIT.

A list is ordered by one sort key (a client-chosen `?sort=name` / `?sort=-created_at`, or a
fixed one) and then by id. The cursor carries (sort, last value, last id), so a page starts
where the previous one ended, as a bound of an index on (filter columns..., key, id): a page
costs the same at any depth (an OFFSET, or `key < v OR (key = v AND id < i)`, would read and
drop the rows before it). A cursor made for another sort is refused (422).

- `parse_sort` / `sort_pattern`: the `sort` parameter; `Sort(SortKey(...), descending)` a fixed one.
- `apply` (ORM), or `page_of` + `after_params` (a statement compiled once per shape, run on the
  asyncpg pool): the page's query, one row more than asked; `fetch` runs it (by a nullable key,
  as up to two statements, each an index range read forwards or backwards); `within` the
  [since, until) window; `ordered` every row in the list's order, unpaged (exports).
- `cut`: the page and the `next_cursor` from the rows fetched.
- `read_cursor` / `trim`: the same cursors for a list whose order is not one key and an id (the
  CRM's timeline merges several tables)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from sqlalchemy import Integer, Select, bindparam, or_, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from cxkit.db import window_conditions
from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import Unprocessable

Kind = Literal["datetime", "date", "str", "decimal", "int", "uuid"]
T = TypeVar("T")
BAD_CURSOR = "cursor is not valid for this list and sort; use the next_cursor of a previous page"
# What a cursor value of the wrong shape or kind raises while it is decoded.
_NOT_A_VALUE = (ValueError, TypeError, InvalidOperation, AttributeError, OverflowError)


# (precision, scale) of the numeric a "decimal" value is checked against when no column says:
# money, `numeric(18, 2)`, the decimal both services sort by.
MONEY_DIGITS = (18, 2)


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sortable column: its public name, the column, how to (de)serialise its values, and
    whether it can be NULL (NULLs always come last, in both directions). A `unique` key (a
    deal's `seq` within its deal) needs no id to break ties: the list is ordered by it alone.

    A "decimal" key's `digits` are its column's (precision, scale): a cursor's value is one the
    column holds as it is, or the cursor is refused. Read from a `numeric(p, s)` column when not
    given."""

    name: str
    column: InstrumentedAttribute[Any]
    kind: Kind
    nullable: bool = False
    unique: bool = False
    digits: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.unique and self.nullable:
            raise ValueError(f"sort key {self.name}: NULLs are never unique, so a nullable key needs the id")
        if self.kind == "decimal" and self.digits is None:
            precision, scale = getattr(self.column.type, "precision", None), getattr(self.column.type, "scale", None)
            if precision is None or scale is None:
                raise ValueError(f"sort key {self.name}: a decimal key needs its column's digits (numeric(p, s))")
            object.__setattr__(self, "digits", (precision, scale))


@dataclass(frozen=True, slots=True)
class Sort:
    key: SortKey
    descending: bool

    @property
    def token(self) -> str:
        return f"-{self.key.name}" if self.descending else self.key.name


def sort_pattern(keys: Sequence[SortKey]) -> str:
    """A regex for the `sort` query parameter, so a wrong value is a 422 with the choices."""
    return "^-?(" + "|".join(k.name for k in keys) + ")$"


def parse_sort(value: str, keys: Sequence[SortKey]) -> Sort:
    name = value.removeprefix("-")
    for key in keys:
        if key.name == name:
            return Sort(key, value.startswith("-"))
    raise Unprocessable(f"sort must be one of {', '.join(k.name for k in keys)} (prefix - for descending)")


def _encode(kind: Kind, value: Any) -> Any:
    if value is None:  # the NULLs at the end of a nullable key
        return None
    if kind in ("datetime", "date"):
        return value.isoformat()
    if kind in ("decimal", "uuid"):
        return str(value)
    return value


def _decode(kind: Kind, value: Any, digits: tuple[int, int] = MONEY_DIGITS) -> Any:
    """A cursor value as the column holds it; ValueError (or another of `_NOT_A_VALUE`) when it
    is not one PostgreSQL would take (NUL in text, a NaN, an int beyond 32 bits, a naive time, a
    decimal its `numeric(*digits)` column cannot hold as it is)."""
    if kind == "datetime":
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed.astimezone(dt.UTC)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        return _numeric(Decimal(value), *digits)
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
            raise ValueError("not an int")
        return value
    if kind == "uuid":
        return uuid.UUID(value)
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not a string")
    return value


def _numeric(number: Decimal, precision: int, scale: int) -> Decimal:
    """`number` as a `numeric(precision, scale)` column holds it, or ValueError: beyond the column
    it overflows in PostgreSQL (1E+16 in `numeric(18, 2)`), and with more digits than the driver
    sends (1e999999, 1E-20000) it is never sent; finer than the scale, no page ended there. The
    value is given back at the scale, so the driver sends it at its size (1E+1 as 10.00)."""
    if not number.is_finite() or number.adjusted() >= precision - scale:
        raise ValueError("not a value of the column")
    # At most `precision` digits once at the scale (its integer part is checked above); one more,
    # rounded up to 10^(precision - scale), is InvalidOperation.
    held = number.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision))
    if held != number:
        raise ValueError("finer than the column")
    return held


CursorKind = Literal["none", "value", "null"]


@dataclass(frozen=True, slots=True)
class After:
    """A decoded cursor: where the previous page ended (`kind` "value": after (value, id), or
    after the value for a unique key; "null": inside the NULLs at the end, after id; "none":
    the first page)."""

    kind: CursorKind
    value: Any = None
    last_id: uuid.UUID | None = None


def decode_after(sort: Sort, page: PageParams) -> After:
    """The page's cursor for this sort; 422 when it was made for another list or sort."""
    if page.cursor is None:
        return After("none")
    key = sort.key
    try:
        if key.unique:
            token, raw_value = page.cursor
            last_id = None
        else:
            token, raw_value, raw_id = page.cursor
            last_id = _decode("uuid", raw_id)
        if token != sort.token:
            raise ValueError("another sort")
        value = None if raw_value is None and key.nullable else _decode(key.kind, raw_value, key.digits or MONEY_DIGITS)
    except _NOT_A_VALUE:
        raise Unprocessable(BAD_CURSOR) from None
    return After("null" if value is None else "value", value, last_id)


def page_of(
    stmt: Select[Any],
    sort: Sort,
    id_column: InstrumentedAttribute[Any],
    after: After,
    *,
    limit: int | None = None,
    with_nulls: bool = True,
) -> Select[Any]:
    """Add the cursor's WHERE, the ORDER BY and the LIMIT (one row more than a page) as bind
    parameters `after_value`, `after_id` and `limit`. Given the page's `limit`, they hold the
    cursor's values and `limit + 1`; without, they are all left to fill, so the statement is
    the same for every page of one shape (sort, kind of cursor) and can be compiled once
    (`cxkit.pg_pool.CompiledQuery`), then run with `after_params`.

    A nullable key's rows after a cursor on a value are those with a later value, then the
    NULLs: one condition (`(key, id) > cursor OR key IS NULL`) that no index range can read, so
    the scan filters out every row before the cursor; and a descending order with the NULLs
    last is not the order of an index read backwards, so PostgreSQL sorts every row. With
    `with_nulls=False` the statement is for rows of one kind (`fetch` reads the valued ones and
    the NULLs apart): after a value, no NULLs, and the ORDER BY of a plain index scan."""
    col, desc, key = sort.key.column, sort.descending, sort.key

    def param(name: str, value: Any, type_: Any) -> Any:
        return bindparam(name, type_=type_) if limit is None else bindparam(name, value, type_=type_)

    if after.kind == "null":
        last_id = param("after_id", after.last_id, id_column.type)
        stmt = stmt.where(col.is_(None), id_column < last_id if desc else id_column > last_id)
    elif after.kind == "value" and key.unique:
        value = param("after_value", after.value, col.type)
        stmt = stmt.where(col < value if desc else col > value)
    elif after.kind == "value":
        value, last_id = param("after_value", after.value, col.type), param("after_id", after.last_id, id_column.type)
        # A row comparison: PostgreSQL makes it a bound of the (..., key, id) index.
        row = tuple_(col, id_column) < tuple_(value, last_id) if desc else tuple_(col, id_column) > tuple_(value, last_id)
        stmt = stmt.where(or_(row, col.is_(None)) if key.nullable and with_nulls else row)
    ordered_stmt = ordered(stmt, sort, id_column, nulls_last=with_nulls)
    return ordered_stmt.limit(param("limit", None if limit is None else limit + 1, Integer))


def ordered(stmt: Select[Any], sort: Sort, id_column: InstrumentedAttribute[Any], *, nulls_last: bool = True) -> Select[Any]:
    """The list's ORDER BY (the key, NULLs last, then the id) without paging: every row in the
    order the pages give them (an export). `nulls_last=False` for rows whose keys are all NULL
    or none: PostgreSQL's own placing (last ascending, first descending) is an index's order
    read forwards or backwards."""
    col, desc = sort.key.column, sort.descending
    first = col.desc() if desc else col.asc()
    if sort.key.nullable and nulls_last:
        first = first.nulls_last()
    return stmt.order_by(first) if sort.key.unique else stmt.order_by(first, id_column.desc() if desc else id_column.asc())


def after_params(after: After, page: PageParams) -> dict[str, Any]:
    """The values of `page_of`'s parameters for a statement built without `limit`."""
    params: dict[str, Any] = {"limit": page.limit + 1}
    if after.last_id is not None:
        params["after_id"] = after.last_id
    if after.kind == "value":
        params["after_value"] = after.value
    return params


def apply(stmt: Select[Any], sort: Sort, id_column: InstrumentedAttribute[Any], page: PageParams) -> Select[Any]:
    """Add the cursor's WHERE, the ORDER BY and the LIMIT (one row more than asked), for the ORM.
    For a sort that may be by a nullable key, `fetch` reads later pages as index ranges."""
    return page_of(stmt, sort, id_column, decode_after(sort, page), limit=page.limit)


async def fetch(
    run: Callable[[Select[Any]], Awaitable[Sequence[T]]],
    stmt: Select[Any],
    sort: Sort,
    id_column: InstrumentedAttribute[Any],
    page: PageParams,
) -> list[T]:
    """The page's rows, one more than asked, as `apply`'s statement gives them, `run` running a
    statement and answering its rows. By a nullable key they come from up to two statements,
    each one index range read in order (forwards, or backwards when descending): the rows with a
    value (after the cursor's), and, only when those do not fill the page, the first NULLs. One
    statement would filter out every row before the cursor, and a descending one would sort every
    row: a page of a million rows would read most of them."""
    after = decode_after(sort, page)
    rows = list(await run(first_statement(stmt, sort, id_column, after, page.limit)))
    if sort.key.nullable and after.kind != "null" and len(rows) <= page.limit:
        nulls = ordered(stmt.where(sort.key.column.is_(None)), sort, id_column, nulls_last=False)
        rows += await run(nulls.limit(page.limit + 1 - len(rows)))
    return rows


def first_statement(
    stmt: Select[Any], sort: Sort, id_column: InstrumentedAttribute[Any], after: After, limit: int
) -> Select[Any]:
    """The first (often the only) statement `fetch` runs for a page of `limit` rows. By a nullable
    key: the rows with a value (from the first, or after the cursor's value), or, after a cursor
    inside the NULLs, the NULLs after it."""
    if not sort.key.nullable:
        return page_of(stmt, sort, id_column, after, limit=limit)
    valued = stmt.where(sort.key.column.is_not(None)) if after.kind == "none" else stmt  # a cursor says which
    return page_of(valued, sort, id_column, after, limit=limit, with_nulls=False)


def within(stmt: Select[Any], column: Any, since: Any | None, until: Any | None) -> Select[Any]:
    """Only rows in the window [since, until) on `column` (each end a value, a `bindparam`, or
    None for open). Check the ends' order where they are read (a problem names the parameter)."""
    return stmt.where(*window_conditions(column, since, until))


def cut(
    rows: Sequence[T], sort: Sort, page: PageParams, value_of: Callable[[T], tuple[Any, uuid.UUID]] | None = None
) -> tuple[list[T], str | None]:
    """Trim the extra row and build the cursor of the next page (None on the last page) from
    the last row's (sort value, id): by `value_of`, or the row's attribute named like the sort
    column and its `id`."""
    if len(rows) <= page.limit:
        return list(rows), None
    kept = list(rows[: page.limit])
    value, last_id = (value_of or _by_attribute(sort))(kept[-1])
    value = _encode(sort.key.kind, value)
    return kept, encode_cursor([sort.token, value] if sort.key.unique else [sort.token, value, str(last_id)])


def _by_attribute(sort: Sort) -> Callable[[Any], tuple[Any, uuid.UUID]]:
    name = sort.key.column.key
    return lambda row: (getattr(row, name), row.id)


def read_cursor(page: PageParams, kinds: Sequence[Kind]) -> tuple[Any, ...] | None:
    """The page's cursor as one value of each kind (None on the first page), for a list with an
    order of its own; 422 when it is not such a cursor. A decimal is one `numeric(18, 2)` holds."""
    if page.cursor is None:
        return None
    try:
        if len(page.cursor) != len(kinds):
            raise ValueError("another list")
        return tuple(_decode(kind, value) for kind, value in zip(kinds, page.cursor, strict=True))
    except _NOT_A_VALUE:
        raise Unprocessable(BAD_CURSOR) from None


def trim(
    rows: Sequence[T], limit: int, kinds: Sequence[Kind], values_of: Callable[[T], Sequence[Any]]
) -> tuple[list[T], str | None]:
    """Rows fetched with `limit + 1`: keep `limit`, and if there were more, the cursor (read back
    by `read_cursor` with the same kinds) of the last kept row's values."""
    if len(rows) <= limit:
        return list(rows), None
    kept = list(rows[:limit])
    values = values_of(kept[-1])
    return kept, encode_cursor([_encode(kind, value) for kind, value in zip(kinds, values, strict=True)])
