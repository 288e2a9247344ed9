"""Keyset pagination over a client-chosen sort column (`?sort=name`, `?sort=-created_at`).

The opaque cursor carries (sort, last value, last id), so a page is found by an index range
scan instead of an OFFSET, and a cursor reused with another sort is refused (422)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from sqlalchemy import Integer, Select, bindparam, or_, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import Unprocessable

Kind = Literal["datetime", "date", "str", "decimal", "int"]
T = TypeVar("T")
BAD_CURSOR = "cursor is not valid for this list and sort; use the next_cursor of a previous page"


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sortable column: its public name, the column, how to (de)serialise its values,
    and whether it can be NULL (NULLs always come last, in both directions)."""

    name: str
    column: InstrumentedAttribute[Any]
    kind: Kind
    nullable: bool = False


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
    if value is None:
        return None
    if kind in ("datetime", "date"):
        return value.isoformat()
    if kind == "decimal":
        return str(value)
    return value


def _decode(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed.astimezone(dt.UTC)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        number = Decimal(value)
        if not number.is_finite():
            raise ValueError("not a number")
        return number
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
            raise ValueError("not an int")
        return value
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not a string")
    return value


CursorKind = Literal["none", "value", "null"]


@dataclass(frozen=True, slots=True)
class After:
    """A decoded cursor: where the previous page ended (`kind` "value": after (value, id);
    "null": inside the NULLs at the end, after id; "none": the first page)."""

    kind: CursorKind
    value: Any = None
    last_id: uuid.UUID | None = None


def decode_cursor(sort: Sort, page: PageParams) -> After:
    """The page's cursor for this sort; 422 when it was made for another list or sort."""
    if page.cursor is None:
        return After("none")
    try:
        token, raw_value, raw_id = page.cursor
        if token != sort.token:
            raise ValueError("another sort")
        value = _decode(sort.key.kind, raw_value)
        last_id = uuid.UUID(raw_id)
    except (ValueError, TypeError, InvalidOperation, AttributeError, OverflowError):
        raise Unprocessable(BAD_CURSOR) from None
    if value is None and not sort.key.nullable:
        raise Unprocessable(BAD_CURSOR)
    return After("null" if value is None else "value", value, last_id)


def page_of(
    stmt: Select[Any], sort: Sort, id_column: InstrumentedAttribute[Any], after: After, *, bound: bool = True
) -> Select[Any]:
    """Add the cursor's WHERE, the ORDER BY and the LIMIT (one row more than asked) as bind
    parameters `after_value`, `after_id` and `limit`: with `bound`, holding the cursor's
    values (the limit is left to fill); without, all left to fill, so the statement can be
    compiled once per shape (`CompiledQuery`) and run with `after_params`."""
    col, desc = sort.key.column, sort.descending

    def param(name: str, value: Any, type_: Any) -> Any:
        return bindparam(name, value, type_=type_) if bound else bindparam(name, type_=type_)

    if after.kind == "null":
        last_id = param("after_id", after.last_id, id_column.type)
        stmt = stmt.where(col.is_(None), id_column < last_id if desc else id_column > last_id)
    elif after.kind == "value":
        value, last_id = param("after_value", after.value, col.type), param("after_id", after.last_id, id_column.type)
        key = tuple_(col, id_column) < tuple_(value, last_id) if desc else tuple_(col, id_column) > tuple_(value, last_id)
        stmt = stmt.where(or_(key, col.is_(None)) if sort.key.nullable else key)
    if desc:
        first = col.desc().nulls_last() if sort.key.nullable else col.desc()
        stmt = stmt.order_by(first, id_column.desc())
    else:
        first = col.asc().nulls_last() if sort.key.nullable else col.asc()
        stmt = stmt.order_by(first, id_column.asc())
    return stmt.limit(bindparam("limit", type_=Integer))


def after_params(after: After, page: PageParams) -> dict[str, Any]:
    """The values of `page_of`'s parameters for a statement built without `bound`."""
    params: dict[str, Any] = {"limit": page.limit + 1}
    if after.kind != "none":
        params["after_id"] = after.last_id
    if after.kind == "value":
        params["after_value"] = after.value
    return params


def apply(stmt: Select[Any], sort: Sort, id_column: InstrumentedAttribute[Any], page: PageParams) -> Select[Any]:
    """Add the cursor's WHERE, the ORDER BY and the LIMIT (one row more than asked), for the ORM."""
    return page_of(stmt, sort, id_column, decode_cursor(sort, page)).params(limit=page.limit + 1)


def cut(
    rows: Sequence[T], sort: Sort, page: PageParams, value_of: Callable[[T], tuple[Any, uuid.UUID]]
) -> tuple[list[T], str | None]:
    """Trim the extra row and build the cursor of the next page (None on the last page)."""
    if len(rows) <= page.limit:
        return list(rows), None
    kept = list(rows[: page.limit])
    value, last_id = value_of(kept[-1])
    return kept, encode_cursor([sort.token, _encode(sort.key.kind, value), str(last_id)])
