"""Interactions are read by address only while no customer is linked to them, so the address
index holds those rows alone (migration cem0028): an interaction of a known customer writes no
entry there, and each statement that reads interactions by address can still use it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI
from sqlalchemy import text

from cem.customer_data import export_sections
from cxkit.events.payloads import CustomerCreated, CustomerErased
from cxkit.pg_pool import asyncpg_dsn
from cxkit.testing import plan_nodes, statements_sent

from .conftest import delivery, interaction, snapshot

INDEX = "ix_touchpoint_interactions_email_lower"
ROWS = 2_000  # a few hundred address entries fill an index page


async def index_bytes(session_factory: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(text("SELECT pg_relation_size(CAST(:index AS regclass))"), {"index": INDEX}))


async def test_only_interactions_without_a_customer_take_room_in_the_address_index(
    make: Any, apply: Any, session_factory: Any
) -> None:
    known = [await make.customer() for _ in range(10)]
    empty = await index_bytes(session_factory)

    await apply(*(interaction(known[i % len(known)], type="visit", touchpoint="website") for i in range(ROWS)))
    assert await index_bytes(session_factory) == empty

    marker = uuid.uuid4().hex[:8]
    await apply(*(interaction(customer_email=f"walk-in-{marker}-{i}@example.com") for i in range(ROWS)))
    assert await index_bytes(session_factory) > empty + 4 * 8192


def uses_the_index(plan: dict[str, Any]) -> bool:
    return any(node.get("Index Name") == INDEX for node in plan_nodes(plan))


async def explain(dsn: str, statement: str, parameters: Any) -> dict[str, Any]:
    """The plan of a statement (not run: it may write), with sequential scans off, as the test's
    table is small enough that reading it whole would rightly win."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + statement, *(parameters or ()))
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    return dict(orjson.loads(plan)[0]["Plan"])


async def test_every_read_by_address_can_use_the_address_index(
    cem_app: FastAPI, apply: Any, session_factory: Any, cem_database_url: str
) -> None:
    marker = uuid.uuid4().hex[:8]
    address = f"walk-in-{marker}@example.com"
    # Many interactions wait for a customer under other addresses (the planner knows it): the
    # rows with no customer are then too many to read for one address.
    await apply(*(interaction(customer_email=f"other-{marker}-{i}@example.com") for i in range(ROWS)))
    await apply(interaction(customer_email=address), interaction(customer_email=address.upper()))
    async with session_factory() as session, session.begin():
        await session.execute(text("ANALYZE touchpoint_interactions"))
    customer = uuid.uuid4()
    with statements_sent(cem_app) as seen:
        # Linking the rows kept under the address, then erasing what is still kept under it.
        await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=address))))
        await apply(delivery("customer.erased", CustomerErased(customer_id=customer, erased_at=dt.datetime.now(dt.UTC))))
    by_address = [(sql, a) for sql, a in seen if "touchpoint_interactions" in sql and "email_lower" in sql.partition("WHERE")[2]]
    assert len(by_address) >= 2, [sql for sql, _ in seen]
    (export,) = [s.sql for s in export_sections() if s.name == "touchpoint_interactions"]
    by_address.append((export, (customer,)))

    dsn = asyncpg_dsn(cem_database_url)
    for sql, args in by_address:
        plan = await explain(dsn, sql, args)
        assert uses_the_index(plan), sql
