"""Interaction rules: record one over HTTP (and publish it), or apply a batch of
`interaction.recorded` events from any system with a handful of statements."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers import service as customers
from crm.customers.repository import CustomerRepository, still_live
from crm.db import SOURCE, OutboxMessage
from crm.interactions.models import Interaction
from crm.interactions.repository import (
    BATCH_COLUMNS,
    SORT_KEYS,
    InteractionFilters,
    InteractionRepository,
    customer_targets,
    export_query,
    insert_interaction_batch,
    list_page,
)
from crm.interactions.schemas import InteractionCreate
from cxkit import keyset
from cxkit.db import new_id, session_connection, utcnow
from cxkit.events.payloads import CustomerCreated, InteractionRecorded
from cxkit.fields import MAX_JSON_BYTES
from cxkit.http.pagination import PageParams
from cxkit.http.problems import NotFound
from cxkit.kafka.consumer import Delivery, PermanentEventError, storable_json
from cxkit.kafka.outbox import add_event, outbox_row
from cxkit.pg_pool import CompiledQuery, Guard, GuardFailed, RowInsert, insert_together

HTTP_SOURCE = "api"
# An event without `interaction_id` gets one derived from its own id, so a redelivery of
# that event (even to another consumer group) maps to the same row.
_EVENT_NAMESPACE = uuid.UUID("2f0c6a57-3d1e-4f7b-9a55-6c2b8e1d4a90")


def interaction_id_for(payload: InteractionRecorded, event_source: str, event_id: str) -> uuid.UUID:
    return payload.interaction_id or uuid.uuid5(_EVENT_NAMESPACE, f"{event_source}\n{event_id}")


async def record_interaction(session: AsyncSession, data: InteractionCreate) -> dict[str, Any]:
    """Resolve the customer by `customer_email` (an unknown email makes a lead-stage one), store
    the row and publish it on `cx.interactions.v1` through the outbox. Returns the row. The row
    goes in only if the customer found is still live then (`still_live`: an erasure blanks the
    email, a merge frees the duplicate's), else the email is looked up again."""
    assert data.customer_email is not None
    while True:
        customer, _ = await customers.find_or_create_by_email(session, str(data.customer_email), source=HTTP_SOURCE)
        row = _new_row(customer.id, data)
        # JSON as text on the session's connection: its codec (SQLAlchemy's) takes it so.
        stored = RowInsert(Interaction.__table__, {**row, "metadata": orjson.dumps(row["metadata"]).decode()})
        try:
            # On the session's connection, in its transaction (begun by the lookup).
            await insert_together(await session_connection(session), [stored], guard=still_live(customer.id))
        except GuardFailed:
            continue  # erased or merged meanwhile
        break
    add_event(
        session, OutboxMessage, "interaction.recorded", source=SOURCE, subject=customer.id, data=_recorded(row, customer.email)
    )
    return row


def guarded(rows: list[RowInsert]) -> Guard:
    """`Idempotency.write_rows`'s guard of `plan_interaction_for_id`'s rows: the customer they
    were planned for is still live when they go in (`still_live`)."""
    return still_live(rows[0].values["customer_id"])


async def plan_interaction_for_id(conn: asyncpg.Connection, data: InteractionCreate) -> tuple[dict[str, Any], list[RowInsert]]:
    """The new row for a body naming `customer_id` and the rows to insert together, the
    interaction and its outbox row: resolves the customer in one statement (unknown or erased:
    422; a merged duplicate: its survivor)."""
    assert data.customer_id is not None
    customer_id, email = await customers.resolve_reference_on(conn, data.customer_id)
    row = _new_row(customer_id, data)
    event = outbox_row("interaction.recorded", source=SOURCE, subject=customer_id, data=_recorded(row, email))
    return row, [RowInsert(Interaction.__table__, row), RowInsert(OutboxMessage.__table__, event)]


def _new_row(customer_id: uuid.UUID, data: InteractionCreate) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "customer_id": customer_id,
        "type": data.type,
        "channel": data.channel,
        "touchpoint": data.touchpoint,
        "occurred_at": data.occurred_at or now,
        "summary": data.summary,
        "amount": data.amount,
        "currency": data.currency,
        "metadata": data.metadata,
        "source": HTTP_SOURCE,
        "recorded_at": now,
    }


def _recorded(row: dict[str, Any], customer_email: str | None) -> InteractionRecorded:
    return InteractionRecorded(
        interaction_id=row["id"],
        customer_id=row["customer_id"],
        customer_email=customer_email,
        type=row["type"],
        channel=row["channel"],
        touchpoint=row["touchpoint"],
        occurred_at=row["occurred_at"],
        summary=row["summary"],
        amount=row["amount"],
        currency=row["currency"],
        metadata=row["metadata"],
    )


async def get_interaction(session: AsyncSession, interaction_id: uuid.UUID) -> Interaction:
    interaction = await InteractionRepository(session).get(interaction_id)
    if interaction is None:
        raise NotFound(f"interaction {interaction_id} does not exist")
    return interaction


def interactions_export(filters: InteractionFilters, sort_token: str, columns: Sequence[str]) -> CompiledQuery:
    """The statement of an interaction export: what `list_interactions` shows, unpaged."""
    return export_query(filters, keyset.parse_sort(sort_token, SORT_KEYS), columns)


async def list_interactions(
    pool: asyncpg.Pool, filters: InteractionFilters, sort_token: str, page: PageParams
) -> tuple[list[asyncpg.Record], str | None]:
    """A page, on the asyncpg pool (no session: the list is read often, by customer)."""
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    rows = await list_page(pool, filters, sort, page)
    return keyset.cut(rows, sort, page, lambda i: (i["occurred_at"], i["id"]))


async def apply_interaction_events(session: AsyncSession, deliveries: Sequence[Delivery]) -> int:
    """Apply a run of `interaction.recorded` events: one query resolves the batch's customer
    ids, one its emails, one multi-row insert makes the missing lead-stage customers and one
    `INSERT ... SELECT FROM unnest(...)` inserts every interaction (a row whose interaction id
    exists is skipped). An erased customer's interaction is stored without its summary or
    metadata, as the erasure left the ones it found (and as the CEM stores it). Returns the
    number of interactions inserted."""
    repo = CustomerRepository(session)
    conn = await session_connection(session)
    payloads: list[tuple[Delivery, InteractionRecorded]] = [(d, d.payload) for d in deliveries]

    known_ids = await customer_targets(conn, list({p.customer_id for _, p in payloads if p.customer_id is not None}))
    unknown = sorted(str(p.customer_id) for _, p in payloads if p.customer_id is not None and p.customer_id not in known_ids)
    if unknown:
        raise PermanentEventError(f"unknown customer_id: {', '.join(unknown)}")

    # What the decoder could not judge without writing the JSON (the same rule as the CEM's).
    metadata_json = [storable_json(p.metadata, "metadata", MAX_JSON_BYTES).decode() for _, p in payloads]
    # The address as the CRM stores one: normalized (as the event was decoded), lower-cased.
    emails = {p.customer_address.lower() for _, p in payloads if p.customer_address is not None}
    by_email = await repo.by_emails(sorted(emails))
    missing = sorted(emails - set(by_email))
    if missing:
        sources = {p.customer_address.lower(): d.event.source for d, p in payloads if p.customer_address is not None}
        by_email |= await _create_lead_customers(session, missing, sources)

    columns: tuple[list[Any], ...] = tuple([] for _ in BATCH_COLUMNS)
    ids, customer_ids, types, channels, touchpoints, occurred, summaries, amounts, currencies, metadata, sources = columns
    for (delivery, p), details in zip(payloads, metadata_json, strict=True):
        if p.customer_id is not None:
            merged_into, erased = known_ids[p.customer_id]
            customer_id = merged_into or p.customer_id  # a merged duplicate's events go to its survivor
        else:
            # Erasure blanks the email, so an address never finds an erased customer.
            assert p.customer_address is not None
            cid, merged_into = by_email[p.customer_address.lower()]
            customer_id, erased = merged_into or cid, False
        ids.append(interaction_id_for(p, delivery.event.source, delivery.event.id))
        customer_ids.append(customer_id)
        types.append(p.type)
        channels.append(p.channel)
        touchpoints.append(p.touchpoint)
        occurred.append(p.occurred_at)
        summaries.append(None if erased else p.summary)
        amounts.append(p.amount)
        currencies.append(p.currency)
        metadata.append("{}" if erased else details)
        sources.append(delivery.event.source[:255])
    return await insert_interaction_batch(conn, columns, utcnow())


async def _create_lead_customers(
    session: AsyncSession, emails: list[str], sources: dict[str, str]
) -> dict[str, tuple[uuid.UUID, uuid.UUID | None]]:
    """Lead-stage customers for unknown emails, in one insert, each announced. An email a
    concurrent writer just took is looked up again instead."""
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "email": email,
            "email_normalized": email,
            "lifecycle_stage": "lead",
            "tags": [],
            "attributes": {},
            "source": sources.get(email, "")[:100] or None,
            "survey_opt_out": False,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for email in emails
    ]
    inserted = await CustomerRepository(session).insert_new_ignoring_taken_emails(rows)
    for row in rows:
        if row["id"] in inserted:
            add_event(
                session,
                OutboxMessage,
                "customer.created",
                source=SOURCE,
                subject=row["id"],
                data=CustomerCreated(
                    id=row["id"],
                    email=row["email"],
                    lifecycle_stage="lead",
                    source=row["source"],
                    version=1,
                    created_at=now,
                    updated_at=now,
                ),
            )
    created = {row["email"]: (row["id"], None) for row in rows if row["id"] in inserted}
    taken = [row["email"] for row in rows if row["id"] not in inserted]
    return created | await CustomerRepository(session).by_emails(taken)
