"""Applies `crm.customers.v1` to the local customer projection, and closes follow-ups whose CRM
task was completed. Every handler is idempotent: a redelivered or replayed event changes nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from cem.config import CEMSettings
from cem.customers.lifecycle import CustomerErasure
from cem.customers.service import (
    apply_customer_snapshots,
    apply_deal_changes,
    erase_customer,
    merge_customers,
    record_conversions,
)
from cem.followups.service import close_followups
from cxkit.db import utcnow
from cxkit.kafka.consumer import BatchHandler, Delivery
from cxkit.lifecycle import CustomerDataRegistry


def consumer_name(settings: CEMSettings) -> str:
    """The live consumer's name, which `cem replay` rebuilds the projection under."""
    return f"{settings.consumer_group}.crm-customers"


def live_handlers(customer_data: CustomerDataRegistry[CustomerErasure]) -> dict[str, BatchHandler]:
    """The live consumer's handlers; merges, erasures and snapshots reach every domain's rows
    through `customer_data` (`cem.customer_data`)."""
    return _handlers(customer_data, replaying=False)


def projection_handlers(customer_data: CustomerDataRegistry[CustomerErasure]) -> dict[str, BatchHandler]:
    """A replay rebuilds the projection with the same rules, but re-applies snapshots of the
    version the copy already has, restoring a damaged copy. Closing a follow-up is idempotent and
    creates nothing, so a replay may re-close one whose closing was lost."""
    return _handlers(customer_data, replaying=True)


def _handlers(customer_data: CustomerDataRegistry[CustomerErasure], *, replaying: bool) -> dict[str, BatchHandler]:
    async def on_customer_snapshots(session: AsyncSession, deliveries: list[Delivery]) -> None:
        """customer.created / customer.updated: one upsert for the whole run of events."""
        await apply_customer_snapshots(session, [d.payload for d in deliveries], customer_data, replaying=replaying)

    async def on_customers_merged(session: AsyncSession, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            await merge_customers(session, d.payload, customer_data, replaying=replaying)

    async def on_customers_erased(session: AsyncSession, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            await erase_customer(session, d.payload, customer_data)

    return {
        "customer.created": on_customer_snapshots,
        "customer.updated": on_customer_snapshots,
        "customer.merged": on_customers_merged,
        "customer.erased": on_customers_erased,
        "deal.stage_changed": on_deal_stages_changed,
        "lead.converted": on_leads_converted,
        "task.completed": on_tasks_completed,
    }


async def on_deal_stages_changed(session: AsyncSession, deliveries: list[Delivery]) -> None:
    await apply_deal_changes(session, [d.payload for d in deliveries])


async def on_leads_converted(session: AsyncSession, deliveries: list[Delivery]) -> None:
    await record_conversions(session, [(d.payload, _event_time(d)) for d in deliveries])


async def on_tasks_completed(session: AsyncSession, deliveries: list[Delivery]) -> None:
    await close_followups(session, [d.payload for d in deliveries])


def _event_time(delivery: Delivery) -> dt.datetime:
    """The event's own time (a replay records the same moment again), in UTC."""
    at = delivery.event.time
    if at is None:
        return utcnow()
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at
