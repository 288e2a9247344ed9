"""The CRM's customer data (`crm.customer_data`): every table that refers to a customer is covered
by a registered domain, and a merge moves, an erasure clears, the rows of every one of them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Column, func, select, text

from crm.config import CRMSettings
from crm.customer_data import customer_data
from crm.models import Base
from cxkit.lifecycle import unregistered_tables

# What an erasure leaves in each registered table, for the erased customer's rows: a condition
# every remaining row meets. A new registration fails the test below until it says its own.
ERASED = {
    "interactions": "summary IS NULL AND metadata = '{}'::jsonb",
    "customer_interaction_stats": "true",  # figures only: they stay
    "deals": "title = '[erased]' AND lost_reason IS NULL",
    "tasks": "title = '[erased]' AND description IS NULL",
    "documents": "false",  # the rows go (and their files)
    "campaign_members": "true",  # a campaign, dates and a response code: they stay
    "leads": "email IS NULL AND name IS NULL AND company IS NULL AND phone IS NULL AND job_title IS NULL AND notes IS NULL",
    "experience_events": "text IS NULL",
    "import_job_errors": "email IS NULL AND address_key IS NULL",
}
# Registered tables whose rows name an address, not a customer (found by the address's key): no
# column refers to the customer, so their merge and erasure are tested with their domain
# (test_imports.py).
BY_ADDRESS = {"import_job_errors"}


def _customer_columns() -> list[Column[Any]]:
    """Every column that refers to a customer: a foreign key to `customers.id`, or a `customer_id`
    kept without one (the interaction statistics, derived from rows that hold the key: crm0024)."""
    return [
        column
        for table in Base.metadata.sorted_tables
        if table.name != "customers"
        for column in table.columns
        if column.name == "customer_id" or any(fk.column.table.name == "customers" for fk in column.foreign_keys)
    ]


def test_every_table_that_refers_to_a_customer_is_covered_by_a_registered_domain() -> None:
    registry = customer_data()
    # The customers domain's own tables: `customers`, the outbox and the idempotency answers (an
    # erasure scrubs them; they refer to a customer by no such column), and `customer_changes`,
    # the field history: its trigger takes the personal values out at an erasure, and a merge
    # leaves it with the duplicate (test_customer_history.py).
    handled = {"customer_changes"}
    for name in {"customer_id"} | {column.name for column in _customer_columns()}:
        assert unregistered_tables(Base.metadata, registry, column=name, handled=handled) == set(), name
    assert registry.tables <= set(Base.metadata.tables)
    assert set(ERASED) == registry.tables


async def _rows_of(session_factory: Any, tables: set[str], customer_id: str) -> dict[str, int]:
    """table -> how many of its rows refer to the customer."""
    counts = dict.fromkeys(sorted(tables), 0)
    async with session_factory() as session:
        for column in _customer_columns():
            if column.table.name in tables:
                stmt = select(func.count()).select_from(column.table).where(column == uuid.UUID(customer_id))
                counts[column.table.name] += int(await session.scalar(stmt) or 0)
    return counts


async def test_a_merge_moves_and_an_erasure_clears_the_rows_of_every_registered_domain(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, session_factory: Any, crm_settings: CRMSettings
) -> None:
    survivor, duplicate = (await make.customer())["id"], (await make.customer(name="Ada"))["id"]
    await make.interaction(customer_id=duplicate, summary="Ada called", metadata={"mood": "cross"})
    await make.deal(duplicate, title="Ada's order", amount="100.00")
    await make.task(duplicate, title="Call Ada", description="about her order")
    document = await client.post(
        "/v1/documents", data={"customer_id": duplicate}, files={"file": ("cv.pdf", b"%PDF-1.4 Ada", "application/pdf")}
    )
    assert document.status_code == 201, document.text
    campaign = await make.campaign()
    joined = await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"customer_id": duplicate})
    assert joined.status_code == 201, joined.text
    lead = await make.lead(name="Ada", company="Engines", phone="1", job_title="CTO", notes="met at a fair")
    converted = await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": duplicate})
    assert converted.status_code == 200, converted.text
    await apply_cem(cem.feedback(uuid.UUID(duplicate), "Ada's own words"))

    tables = customer_data().tables - BY_ADDRESS
    held = await _rows_of(session_factory, tables, duplicate)
    assert all(held.values()), held  # the duplicate has rows in every registered table

    merged = await client.post(f"/v1/customers/{survivor}/merge", json={"duplicate_id": duplicate})
    assert merged.status_code == 200, merged.text
    assert set((await _rows_of(session_factory, tables, duplicate)).values()) == {0}
    moved = await _rows_of(session_factory, tables, survivor)
    assert all(moved.values()), moved

    async with session_factory() as session:
        (stored,) = (await session.execute(text("SELECT storage_path FROM documents"))).scalars()
    stored_file = Path(crm_settings.documents_dir) / stored
    assert stored_file.is_file()
    assert (await client.delete(f"/v1/customers/{survivor}")).status_code == 204
    async with session_factory() as session:
        for column in _customer_columns():
            if column.table.name in tables:
                kept = select(func.count()).select_from(column.table).where(column == uuid.UUID(survivor))
                left_personal = int(await session.scalar(kept.where(text(f"NOT ({ERASED[column.table.name]})"))) or 0)
                assert left_personal == 0, column.table.name
    assert not stored_file.exists()
