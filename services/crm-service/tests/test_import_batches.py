"""`crm import-customers` in chunks (COPY, one statement per table per chunk, chunks written
while the next are validated): bad rows are reported with their line and the rest imported,
each announced once exactly as `POST /v1/customers` announces; the quick validation gives
`CustomerCreate`'s verdict."""

from __future__ import annotations

import contextlib
import csv
import gc
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from crm.customers.csv_import import ChunkResult, _Validator, import_customers, row_to_customer
from crm.customers.models import Customer
from crm.customers.schemas import CustomerCreate
from crm.customers.service import snapshot
from cxkit.events.payloads import CustomerCreated
from cxkit.memory import collector_paused
from cxkit.pg_pool import asyncpg_dsn

from .test_import_cli import run_cli


async def test_bad_rows_are_reported_by_line_and_every_other_row_is_created_and_announced_once(
    client: httpx.AsyncClient, make: Any, events: Any, session_factory: Any, crm_database_url: str, tmp_path: Path
) -> None:
    await make.customer(email="taken@example.com")
    await make.customer(email="also.taken@example.com")
    campaign = (await make.campaign())["id"]
    missing_campaign = uuid.uuid4()
    lines = [
        "email,name,phone,lifecycle_stage,tags,campaign_id,attributes.plan,survey_opt_out",
        "ada@example.com,Ada Lovelace,+44 1,customer,vip;b2b;vip,,pro,no",  # 2
        "not-an-email,Bad Row,,,,,,",  # 3
        f"Info@Example.COM,Role Address,,,,{campaign},,yes",  # 4: from a campaign
        "bob@example.com,Bob,,king,,,,",  # 5: bad stage
        "taken@example.com,Already There,,,,,,",  # 6
        "ADA@example.com,Ada Again,,,,,,",  # 7: repeats line 2, in another chunk
        f"carol@example.com,Carol,,,,{missing_campaign},,",  # 8
        f"Also.Taken@EXAMPLE.com,Taken And Unknown Campaign,,,,{missing_campaign},,",  # 9: the email is checked first
        "dave@example.com,,,,,,,",  # 10: no name
        "",  # a blank line is skipped
        "erin@example.com,Erin,,,a|b,,,maybe",  # 12
        "frank@EXAMPLE.com,Frank,,lead,,,,",  # 13
    ]
    source = tmp_path / "customers.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "errors.csv"
    code, output = await run_cli(
        crm_database_url, "import-customers", str(source), "--errors-csv", str(report), "--batch-size", "2"
    )
    assert code == 1, output
    assert "11 rows: 3 created, 8 failed" in output, output

    with report.open(encoding="utf-8") as handle:
        failed = {int(r["line"]): r["reason"] for r in csv.DictReader(handle)}
    assert sorted(failed) == [3, 5, 6, 7, 8, 9, 10, 12]
    assert "email" in failed[3]
    assert "lifecycle_stage" in failed[5]
    assert failed[6] == "a customer with email taken@example.com already exists"
    assert failed[9] == "a customer with email Also.Taken@example.com already exists"
    assert failed[7] == "duplicate of line 2 in this file"
    assert failed[8] == f"campaign_id {missing_campaign} does not exist"
    assert "name" in failed[10]
    assert "survey_opt_out" in failed[12]

    async with session_factory() as session:
        customers = await session.scalars(select(Customer).where(Customer.email.not_like("%taken@example.com")))
        created = {c.email: c for c in customers}
    assert set(created) == {"ada@example.com", "info@example.com", "frank@example.com"}  # as `EmailStr` normalizes
    ada = created["ada@example.com"]
    assert (ada.name, ada.phone, ada.lifecycle_stage, ada.tags, ada.attributes) == (
        "Ada Lovelace",
        "+44 1",
        "customer",
        ["b2b", "vip"],
        {"plan": "pro"},
    )

    announced = [e for e in await events("customer.created") if not e["data"]["email"].endswith("taken@example.com")]
    assert sorted(e["subject"] for e in announced) == sorted(str(c.id) for c in created.values())
    for event in announced:
        customer = created[event["data"]["email"]]
        expected = CustomerCreated(**snapshot(customer, Decimal("0.00"))).model_dump(mode="json")
        assert event["data"] == expected
        assert (event["_topic"], event["_key"], event["source"], event["type"]) == (
            "crm.customers.v1",
            str(customer.id),
            "urn:cx:crm-service",
            "customer.created",
        )

    members = (await client.get(f"/v1/campaigns/{campaign}/members")).json()["items"]
    info = created["info@example.com"]
    assert [(m["customer_id"], m["response"], m["responded"]) for m in members] == [(str(info.id), "created", True)]
    assert info.survey_opt_out is True


ADDRESSES = [
    "ada@example.com",
    "Ada.Lovelace@Example.COM",
    "INFO@example.com",
    "postmaster@example.org",
    "a+tag@sub.example.co.uk",
    "o'brien@example.ie",
    "x@example",
    "x@localhost",
    "x@example.test",
    "x@example.invalid",
    "x@123.com",
    "x@example.123",
    "x@-example.com",
    "x@example-.com",
    "x@exa_mple.com",
    "x@xn--bcher-kva.example",
    "x@XN--BCHER-KVA.example",
    "x..y@example.com",
    ".x@example.com",
    "x.@example.com",
    "x@@example.com",
    "@example.com",
    "x@",
    "x@.example.com",
    "x@example..com",
    '"quoted"@example.com',
    "Ada <ada@example.com>",
    "ada@example.com ",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + ("b" * 63 + ".") * 3 + "com",
    "a@" + ("b" * 63 + ".") * 4 + "com",
    "x" * 240 + "@example.com",
    "ünicode@example.com",
    "x@exämple.com",
    "x@[127.0.0.1]",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_quick_email_check_agrees_with_email_str(address: str) -> None:
    quick = _Validator().email(address)
    try:
        full: str | None = str(CustomerCreate(email=address, name="N").email)
    except ValidationError:
        full = None
    if quick is not None:
        assert quick == full
    # Left to the full check: fine. What matters is never answering differently.


ROWS = [
    {"email": "ada@example.com", "name": "Ada", "tags": "a; b |a", "attributes.plan": "pro", "survey_opt_out": "Yes"},
    {"email": "ada@example.com", "name": ""},
    {"email": "ada@example.com", "name": "x" * 201},
    {"email": "ada@example.com", "name": "Ada", "lifecycle_stage": "king"},
    {"email": "ada@example.com", "name": "Ada", "campaign_id": "nope"},
    {"email": "ada@example.com", "name": "Ada", "campaign_id": str(uuid.uuid4())},
    {"email": "ada@example.com", "name": "Ada", "tags": ";".join(f"t{i}" for i in range(51))},
    {"email": "ada@example.com", "name": "Ada", "tags": "x" * 51},
    {"email": "ada@example.com", "name": "Ada", "attributes.note": "y" * 17_000},
    {"email": "ada@example.com", "name": "Ada\x00Lovelace"},
    {"email": "bad", "name": ""},
    {"email": "", "name": "Nobody"},
    {"name": "No Email Column"},
    {"email": "ada@example.com", "name": "Ada", "survey_opt_out": "maybe"},
    {"email": " Ada@Example.com ", "name": " Ada ", "phone": "1" * 51},
    {"email": "ada@example.com", "name": "Ada", "owner": "o" * 200, "source": "s" * 100, "company": "c" * 200},
]


def test_the_quick_row_validation_gives_row_to_customers_verdict() -> None:
    results = _Validator().validate([dict(r) for r in ROWS])
    assert len(results) == len(ROWS)
    for row, result in zip(ROWS, results, strict=True):
        try:
            expected: Any = row_to_customer(dict(row)).model_dump()
        except ValidationError as exc:
            expected = ("invalid", [(e["loc"], e["msg"]) for e in exc.errors()])
        except ValueError as exc:
            expected = ("value", str(exc))
        if isinstance(result, ValidationError):
            got: Any = ("invalid", [(e["loc"], e["msg"]) for e in result.errors()])
        elif isinstance(result, ValueError):
            got = ("value", str(result))
        else:
            got = result.model_dump()
        assert got == expected, row


class _Crash(Exception):
    """The process died before the chunk committed."""


async def test_a_resumed_import_refuses_a_repeat_of_a_committed_row_as_a_duplicate_as_an_unbroken_run_does(
    client: httpx.AsyncClient, crm_database_url: str, tmp_path: Path
) -> None:
    """The committed chunks are read past on resume, but their rows' keys still count: a later
    row repeating one is `duplicate of line N` (failed), not "already exists" (skipped), so a
    restart does not change what the job reports. (`client` empties the tables afterwards.)"""
    tag = uuid.uuid4().hex[:8]
    lines = [
        "email,name,external_id",
        f"ada-{tag}@example.com,Ada,",  # 2 ┐ chunk 0, committed before the crash
        f"bob-{tag}@example.com,Bob,ext-{tag}",  # 3 ┘
        f"ADA-{tag}@example.com,Ada Again,",  # 4 ┐ chunk 1: repeats line 2
        f"carol-{tag}@example.com,Carol,ext-{tag}",  # 5 ┘ repeats line 3's external_id
        f"dave-{tag}@example.com,Dave,",  # 6   chunk 2
    ]
    source = tmp_path / "customers.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dsn = asyncpg_dsn(crm_database_url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    async def crash_after_the_first_chunk(conn: asyncpg.Connection, result: ChunkResult) -> None:
        if result.index > 0:
            raise _Crash

    with pytest.raises(_Crash):
        await import_customers(connect, source, batch_size=2, writers=1, on_chunk=crash_after_the_first_chunk)
    resumed = await import_customers(connect, source, batch_size=2, writers=1, skip_chunks=frozenset({0}))

    assert resumed.created == 1
    assert [(e.line, e.reason, e.existing) for e in resumed.errors] == [
        (4, "duplicate of line 2 in this file", False),
        (5, "duplicate of line 3 in this file", False),
    ]
    conn = await connect()
    try:
        emails = await conn.fetch("SELECT email FROM customers WHERE email LIKE $1 ORDER BY email", f"%-{tag}@example.com")
    finally:
        await conn.close()
    assert [r["email"] for r in emails] == [f"{n}-{tag}@example.com" for n in ("ada", "bob", "dave")]


async def test_an_import_keeps_the_collector_paused_when_a_consumer_poll_beside_it_ends(
    crm_database_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """An import job runs in the service's process beside its consumers: both pause the cyclic
    garbage collector through cxkit.memory.collector_paused, so a poll that ends while the
    import runs does not switch it back on under the import (nor the import under a poll).
    (`client` empties the tables afterwards.)"""
    tag = uuid.uuid4().hex[:8]
    source = tmp_path / "customers.csv"
    source.write_text("email,name\n" + "".join(f"c{i}-{tag}@example.com,C {i}\n" for i in range(6)), encoding="utf-8")
    dsn = asyncpg_dsn(crm_database_url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    poll = contextlib.ExitStack()
    poll.enter_context(collector_paused())  # a consumer's poll, begun before the import
    seen: list[bool] = []

    def on_rows(n: int) -> None:
        poll.close()  # the poll ends while the import runs
        seen.append(gc.isenabled())

    report = await import_customers(connect, source, batch_size=2, writers=1, on_rows=on_rows)
    assert report.created == 6
    assert seen and not any(seen)
    assert gc.isenabled()
