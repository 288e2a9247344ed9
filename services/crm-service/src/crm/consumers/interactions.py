"""Applies `cx.interactions.v1` (published by any system) to the CRM's interactions."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from crm.interactions.service import apply_interaction_events
from cxkit.kafka.consumer import Delivery


async def on_interactions_recorded(session: AsyncSession, deliveries: list[Delivery]) -> None:
    """A whole run of `interaction.recorded` events in a few statements (see the service)."""
    await apply_interaction_events(session, deliveries)


HANDLERS = {"interaction.recorded": on_interactions_recorded}
