"""Streamed, spreadsheet-safe CSV exports of a query's rows, in constant memory.

The rows come from a server-side cursor on one connection of the asyncpg pool (inside a
transaction, as PostgreSQL requires), a batch at a time; each batch is written by the stdlib
`csv` writer into a small buffer and sent as one body part. A batch is bounded by bytes as well
as rows: about `CHUNK_BYTES` of CSV, and never more than `CHUNK_ROWS` rows (the rows fetched next
follow the bytes a row took in the batch before; the buffer is sent as soon as it passes the
target). So memory stays that of a batch whether the export has a hundred rows or a million, and
whether a row is a hundred bytes or 16 KiB of attributes, and the connection is held only while
the body is being sent: it goes back to the pool when the last row is out, or as soon as the
client goes away (the response closes the stream in every case).

Spreadsheet safety (OWASP "CSV injection"): a text cell beginning with `=`, `+`, `-`, `@`, a
tab or a carriage return would be read as a formula by Excel, LibreOffice or Sheets; it is
written with a leading `'`. Numbers from the database (int, Decimal, float) are written as
numbers and never changed, so a negative amount stays a number."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

CSV_MEDIA_TYPE = "text/csv"  # sent with `; charset=utf-8` (Starlette adds it to text/*)
CHUNK_ROWS = 2_000
"""The most rows fetched at once."""
CHUNK_BYTES = 512 * 1024
"""About the most CSV one batch holds (in characters): 2,000 rows of ~14 KiB made a batch of
hundreds of MB (the records, their cells, the CSV text and its bytes, all at once)."""
FIRST_ROWS = 64  # the first fetch, before a row's size is known (rows fetched at most double after)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Text a spreadsheet would run as a formula, with a leading `'` so it reads as text."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _other_cell(value: Any) -> Any:
    """A value of a type `_CELLS` does not name: lists and objects (JSON), or a subclass."""
    for kind, write in _CELLS.items():
        if kind is not bool and isinstance(value, kind):
            return write(value)
    return neutralise(orjson.dumps(value, default=str).decode())


def _iso(value: dt.date) -> str:
    return value.isoformat()


def _keep(value: Any) -> Any:
    return value


# By exact type: one dict lookup per cell (an export writes millions of them).
_CELLS: dict[type, Callable[[Any], Any]] = {
    str: neutralise,
    bool: lambda value: "true" if value else "false",  # before int: True is an int too
    int: _keep,
    float: _keep,
    Decimal: _keep,
    type(None): lambda value: "",
    dt.datetime: _iso,
    dt.date: _iso,
    uuid.UUID: str,
    asyncpg.pgproto.pgproto.UUID: str,
}


def cell(value: Any) -> Any:
    """One value as a CSV cell: numbers as they are, text neutralised, times in RFC 3339,
    lists and objects as compact JSON (neutralised too), None as an empty cell."""
    return _CELLS.get(type(value), _other_cell)(value)


RowOf = Callable[[asyncpg.Record], Sequence[Any]]


def next_fetch(fetched: int, size: int, chunk_rows: int = CHUNK_ROWS, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many rows to fetch next, after `fetched` rows made `size` (bytes or characters) of
    output: about `chunk_bytes` at that size per row, at least 1, at most `chunk_rows` and twice as
    many as before (the rows ahead may be bigger)."""
    return max(1, min(chunk_rows, 2 * fetched, chunk_bytes * fetched // max(size, 1)))


async def _csv_chunks(
    pool: asyncpg.Pool,
    sql: str,
    args: Sequence[Any],
    header: Sequence[str],
    row_of: RowOf,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> AsyncGenerator[bytes, None]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends; quoting as needed

    def take() -> bytes:
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return data

    writer.writerow(header)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        # One long statement: planned for its own values (a generic plan of a prepared search can
        # walk a whole index for a term that matches nothing). SET LOCAL ends with the transaction.
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        cursor = await conn.cursor(sql, *args)
        rows = min(chunk_rows, FIRST_ROWS)
        while records := await cursor.fetch(rows):
            written = -buffer.tell()  # the characters these records make (the header is not one of them)
            for record in records:
                writer.writerow([cell(v) for v in row_of(record)])
                if buffer.tell() >= chunk_bytes:  # a few rows bigger than those before
                    written += buffer.tell()
                    yield take()
            written += buffer.tell()
            if buffer.tell():
                yield take()
            rows = next_fetch(len(records), written, chunk_rows, chunk_bytes)
    if buffer.tell():  # no rows: the header alone
        yield take()


class Download(StreamingResponse):
    """A streamed attachment. The body's generator is always closed when the response ends
    (finished, failed or the client gone), so its connection goes back to the pool then, not
    when the garbage collector finds it."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], first: bytes, filename: str, media_type: str) -> None:
        self._chunks = chunks

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in chunks:
                yield chunk

        super().__init__(body(), media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._chunks.aclose()


class CsvExport(Download):
    """A streamed CSV download."""

    media_type = CSV_MEDIA_TYPE

    def __init__(self, chunks: AsyncGenerator[bytes, None], first: bytes, filename: str) -> None:
        super().__init__(chunks, first, filename, CSV_MEDIA_TYPE)


def export_filename(name: str, now: dt.datetime | None = None, suffix: str = "csv") -> str:
    """`<name>-<UTC timestamp>.<suffix>`, e.g. `customers-20261202T091500Z.csv`."""
    return f"{name}-{(now or dt.datetime.now(dt.UTC)).strftime('%Y%m%dT%H%M%SZ')}.{suffix}"


async def csv_export(
    pool: asyncpg.Pool,
    sql: str,
    args: Sequence[Any],
    *,
    header: Sequence[str],
    row_of: RowOf,
    name: str,
    chunk_rows: int = CHUNK_ROWS,
) -> CsvExport:
    """Every row of `sql` (with `args`) as a streamed CSV attachment named after `name`, each
    record turned into the cells of its line by `row_of` (in `header` order).

    The first chunk is read before the answer starts, so a database that cannot be reached is
    the usual 503 problem, not a download that breaks off after its headers."""
    chunks = _csv_chunks(pool, sql, args, header, row_of, chunk_rows)
    first = await anext(chunks)
    return CsvExport(chunks, first, export_filename(name))


def csv_response_doc(description: str, example: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses=` entry of a CSV export: a `text/csv` body with an example."""
    return {
        200: {
            "description": description,
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}, "example": example}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="<name>-<UTC timestamp>.csv"',
                    "schema": {"type": "string"},
                }
            },
        }
    }
