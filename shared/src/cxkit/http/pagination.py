"""Cursor pagination: `?limit=` (default 50, max 200) and an opaque `?cursor=` (keyset: what a
cursor holds and how a list pages by it is `cxkit.keyset`)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from cxkit.http.problems import Unprocessable

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null on the last page.")


class PageParams(BaseModel):
    limit: int
    cursor: list[Any] | None


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise Unprocessable("cursor is not valid; use the next_cursor of a previous page") from None
    if not isinstance(values, list):
        raise Unprocessable("cursor is not valid; use the next_cursor of a previous page")
    return values


async def page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page (1-200).")] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="Opaque cursor from `next_cursor`.")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=decode_cursor(cursor) if cursor else None)
