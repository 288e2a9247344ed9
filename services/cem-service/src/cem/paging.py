"""Decoding the keyset cursors the CEM's lists hand out (`[sort value, id]`)."""

from __future__ import annotations

import datetime as dt
import uuid

from cxkit.http.pagination import PageParams
from cxkit.http.problems import Unprocessable

BAD_CURSOR = "cursor is not valid; use the next_cursor of a previous page"


def after_time(page: PageParams) -> tuple[dt.datetime, uuid.UUID] | None:
    """(time, id) of the last item of the previous page, for lists ordered by a time."""
    if page.cursor is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(page.cursor[0])
        last_id = uuid.UUID(page.cursor[1])
    except (ValueError, IndexError, TypeError, AttributeError):
        raise Unprocessable(BAD_CURSOR) from None
    if moment.tzinfo is None:
        raise Unprocessable(BAD_CURSOR)
    return moment, last_id


def after_text(page: PageParams) -> tuple[str, uuid.UUID] | None:
    """(text, id) of the last item of the previous page, for lists ordered by a name or key."""
    if page.cursor is None:
        return None
    try:
        text = page.cursor[0]
        last_id = uuid.UUID(page.cursor[1])
    except (ValueError, IndexError, TypeError, AttributeError):
        raise Unprocessable(BAD_CURSOR) from None
    if not isinstance(text, str) or "\x00" in text:
        raise Unprocessable(BAD_CURSOR)
    return text, last_id
