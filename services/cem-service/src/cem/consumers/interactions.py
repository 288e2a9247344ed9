"""Applies `cx.interactions.v1` (published by the CRM and by any other system): stores each
interaction, then invites to the surveys whose trigger it matches."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cem.config import CEMSettings
from cem.touchpoints.service import record_interactions
from cem.triggers.service import invite_for_interactions
from cxkit.kafka.consumer import BatchHandler, Delivery


def handlers(settings: CEMSettings) -> dict[str, BatchHandler]:
    """The live consumer's handlers: store, then apply the survey triggers (in event order)."""

    async def on_interactions_recorded(session: AsyncSession, deliveries: list[Delivery]) -> None:
        stored = await record_interactions(session, deliveries)
        if stored:
            await invite_for_interactions(session, settings, stored)

    return {"interaction.recorded": on_interactions_recorded}


async def store_interactions(session: AsyncSession, deliveries: list[Delivery]) -> None:
    """The replay's handler: rows only, never an invitation or a suppression."""
    await record_interactions(session, deliveries)


PROJECTION_HANDLERS: dict[str, BatchHandler] = {"interaction.recorded": store_interactions}
