"""Applies `crm.customers.v1` to the local customer projection."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.service import apply_customer_snapshots
from cxkit.kafka.consumer import Delivery


async def on_customer_snapshots(session: AsyncSession, deliveries: list[Delivery]) -> None:
    """customer.created / customer.updated: one upsert for the whole run of events."""
    await apply_customer_snapshots(session, [d.payload for d in deliveries])


HANDLERS = {
    "customer.created": on_customer_snapshots,
    "customer.updated": on_customer_snapshots,
}
