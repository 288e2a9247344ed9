"""Applies `cx.interactions.v1` (published by any system) to the CRM's interactions."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from crm.config import CRMSettings
from crm.interactions.service import apply_interaction_events
from cxkit.kafka.consumer import BatchHandler, Delivery


def consumer_name(settings: CRMSettings) -> str:
    return f"{settings.consumer_group}.interactions"


def live_handlers() -> dict[str, BatchHandler]:
    """The live consumer's (the CRM replays no interactions, so there are no projection handlers)."""
    return {"interaction.recorded": on_interactions_recorded}


async def on_interactions_recorded(session: AsyncSession, deliveries: list[Delivery]) -> None:
    """A whole run of `interaction.recorded` events in a few statements (see the service)."""
    await apply_interaction_events(session, deliveries)
