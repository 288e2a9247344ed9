"""cxkit.http.csv_export: how values become spreadsheet-safe CSV cells."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson

from cxkit.http import data_export
from cxkit.http.csv_export import CHUNK_BYTES, CHUNK_ROWS, _csv_chunks, cell, export_filename, neutralise


def test_text_a_spreadsheet_would_run_as_a_formula_gets_a_leading_quote() -> None:
    for risky in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(risky) == "'" + risky
    for safe in ("Ada", "1-2", "a=b", "", " =x", "'=x"):
        assert neutralise(safe) == safe


def test_numbers_stay_numbers_and_other_values_are_written_plainly() -> None:
    assert cell(-12) == -12 and cell(Decimal("-3.50")) == Decimal("-3.50") and cell(-0.5) == -0.5
    assert cell("-12") == "'-12"  # the same characters as text are neutralised
    assert cell(None) == "" and cell(True) == "true" and cell(False) == "false"
    assert cell(dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)) == "2026-12-02T09:00:00+00:00"
    assert cell(dt.date(2026, 12, 2)) == "2026-12-02"
    some_id = uuid.uuid4()
    assert cell(some_id) == str(some_id)
    assert cell({"plan": "pro", "seats": 3}) == '{"plan":"pro","seats":3}'
    assert cell(["=1", "b"]) == '["=1","b"]'


def test_subclasses_are_written_as_their_base_type() -> None:
    class Label(str):
        pass

    assert cell(Label("=x")) == "'=x"


def test_the_file_name_carries_the_utc_time() -> None:
    assert export_filename("customers", dt.datetime(2026, 12, 2, 9, 15, tzinfo=dt.UTC)) == "customers-20261202T091500Z.csv"


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]], asked: list[int]) -> None:
        self.rows, self.asked = rows, asked

    async def fetch(self, n: int) -> list[tuple[Any, ...]]:
        self.asked.append(n)
        taken, self.rows = self.rows[:n], self.rows[n:]
        return taken


class _Pool:
    """What `_csv_chunks` uses of an asyncpg pool: a connection, a transaction, a cursor."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.asked: list[int] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Pool]:
        yield self

    @contextlib.asynccontextmanager
    async def transaction(self, readonly: bool = False, isolation: str | None = None) -> AsyncIterator[None]:
        yield

    async def execute(self, sql: str) -> None:
        pass

    async def cursor(self, sql: str, *args: Any) -> _Cursor:
        return _Cursor(list(self.rows), self.asked)


async def _chunks(rows: list[tuple[Any, ...]], **sizes: int) -> tuple[list[bytes], list[int]]:
    pool = _Pool(rows)
    chunks = [c async for c in _csv_chunks(pool, "SELECT", [], ["n", "text"], list, **sizes)]  # type: ignore[arg-type]
    return chunks, pool.asked


def _plain_csv(rows: list[tuple[Any, ...]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["n", "text"])
    writer.writerows([cell(v) for v in row] for row in rows)
    return buffer.getvalue().encode()


async def test_a_batch_is_bounded_by_bytes_as_well_as_rows() -> None:
    """2,000 rows a fetch made one batch of hundreds of MB when each row was ~14 KiB: the rows
    fetched next follow the bytes a row took so far, and the buffer is sent once past the target."""
    big = [(n, f"=row {n} é " + "x" * 14_000) for n in range(300)]
    chunks, asked = await _chunks(big, chunk_rows=CHUNK_ROWS, chunk_bytes=256 * 1024)
    assert b"".join(chunks) == _plain_csv(big)  # the same bytes, only cut elsewhere
    assert asked[0] <= 64 and max(asked[1:]) <= 256 * 1024 // 14_000, asked  # ~18 rows a batch once seen, not 2,000
    assert max(len(c) for c in chunks) < 256 * 1024 + 2 * 14_100, [len(c) for c in chunks]
    assert len(chunks) >= 300 * 14_000 // (256 * 1024)

    small = [(n, f"row {n}") for n in range(10_000)]
    chunks, asked = await _chunks(small, chunk_rows=CHUNK_ROWS, chunk_bytes=256 * 1024)
    assert b"".join(chunks) == _plain_csv(small)
    assert max(asked) == CHUNK_ROWS  # small rows: still CHUNK_ROWS a fetch (after the first few)

    mixed = [(n, "x" * (50_000 if n % 7 == 0 else 10)) for n in range(500)]  # rows that vary
    chunks, asked = await _chunks(mixed, chunk_rows=100, chunk_bytes=64 * 1024)
    assert b"".join(chunks) == _plain_csv(mixed) and max(asked) <= 100 and min(asked) >= 1
    assert max(len(c) for c in chunks) < 64 * 1024 + 50_100, [len(c) for c in chunks]

    huge = [(n, "y" * 300_000) for n in range(5)]  # a row beyond the target: one at a time
    chunks, asked = await _chunks(huge, chunk_rows=CHUNK_ROWS, chunk_bytes=64 * 1024)
    assert b"".join(chunks) == _plain_csv(huge) and max(len(c) for c in chunks) < 300_100 and max(asked[1:]) == 1

    chunks, asked = await _chunks([], chunk_rows=CHUNK_ROWS)
    assert chunks == [b"n,text\r\n"]


async def test_a_data_export_batch_is_bounded_by_bytes_as_well_as_rows() -> None:
    """A customer's rows of 14 KiB each (metadata, attributes): fetched a few dozen at a time
    once their size is seen, not CHUNK_ROWS; the document is the same."""
    big = [{"n": n, "text": "x" * 14_000} for n in range(400)]
    small = [{"n": n} for n in range(5_000)]
    pool = _Pool(big)
    sections = [data_export.Section("big", "SELECT")]
    chunks = [c async for c in data_export._chunks(pool, "crm", uuid.UUID(int=1), sections, CHUNK_ROWS)]  # type: ignore[arg-type]
    assert orjson.loads(b"".join(chunks))["sections"] == {"big": big}
    assert pool.asked[0] <= 64 and max(pool.asked[1:]) <= 2 * CHUNK_BYTES // 14_000, pool.asked
    assert max(len(c) for c in chunks) < 2 * CHUNK_BYTES + 14_100

    pool = _Pool(small)
    chunks = [c async for c in data_export._chunks(pool, "crm", uuid.UUID(int=1), sections, CHUNK_ROWS)]  # type: ignore[arg-type]
    assert orjson.loads(b"".join(chunks))["sections"] == {"big": small}
    assert max(pool.asked) == CHUNK_ROWS  # small rows: CHUNK_ROWS a fetch once seen
