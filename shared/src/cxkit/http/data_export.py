"""A data subject's copy of their data (GDPR articles 15 and 20): every row a service holds
about one customer, as one JSON document streamed in constant memory.

The document is `{"service", "customer_id", "generated_at", "sections": {"<table>": [rows]}}`,
each row with all its columns (times in RFC 3339, amounts as text, JSON columns as JSON). The
sections are read in one read-only REPEATABLE READ transaction, so they are one consistent
snapshot, each through a server-side cursor a batch at a time, at most `CHUNK_ROWS` rows and
about `CHUNK_BYTES` of JSON (`next_fetch`: a customer with 200,000 interactions, or with rows of
16 KiB of metadata, costs the memory of a batch), on one connection of the asyncpg pool that
goes back when the download ends or the client leaves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from cxkit.db import utcnow
from cxkit.http.csv_export import CHUNK_ROWS, FIRST_ROWS, Download, export_filename, next_fetch

JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Section:
    """One part of the export: `sql` takes the customer's id as `$1` and answers that part's
    rows in a stable order."""

    name: str
    sql: str


def _default(value: Any) -> Any:
    """What orjson does not write itself: amounts (as text, exact) and the driver's own uuid type."""
    return str(value)


async def _chunks(
    pool: asyncpg.Pool, service: str, customer_id: uuid.UUID, sections: Sequence[Section], chunk_rows: int
) -> AsyncGenerator[bytes, None]:
    head = {"service": service, "customer_id": str(customer_id), "generated_at": utcnow()}
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        yield orjson.dumps(head)[:-1] + b',"sections":{'
        for n, section in enumerate(sections):
            yield (b"," if n else b"") + orjson.dumps(section.name) + b":["
            cursor = await conn.cursor(section.sql, customer_id)
            first = True
            fetch = min(chunk_rows, FIRST_ROWS)
            while records := await cursor.fetch(fetch):
                rows = b",".join(orjson.dumps(dict(r), default=_default) for r in records)
                yield rows if first else b"," + rows
                first = False
                fetch = next_fetch(len(records), len(rows), chunk_rows)
            yield b"]"
    yield b"}}"


async def data_export(
    pool: asyncpg.Pool, service: str, customer_id: uuid.UUID, sections: Sequence[Section], *, chunk_rows: int = CHUNK_ROWS
) -> Download:
    """The customer's rows in `sections` as a streamed JSON attachment
    (`customer-<id>-<UTC timestamp>.json`). The first chunk is made before the answer starts,
    so a database that cannot be reached is the usual 503 problem."""
    chunks = _chunks(pool, service, customer_id, sections, chunk_rows)
    first = await anext(chunks)
    return Download(chunks, first, export_filename(f"customer-{customer_id}", suffix="json"), JSON_MEDIA_TYPE)


def data_export_doc(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses=` entry of a data export: a JSON attachment with an example."""
    return {
        200: {
            "description": "The customer's data: every section, each a list of rows with all their columns.",
            "content": {JSON_MEDIA_TYPE: {"schema": {"type": "object"}, "example": example}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="customer-<id>-<UTC timestamp>.json"',
                    "schema": {"type": "string"},
                }
            },
        }
    }
