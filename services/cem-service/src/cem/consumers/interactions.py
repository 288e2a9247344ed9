"""Applies `cx.interactions.v1` (published by the CRM and by any other system): stores each
interaction, then invites to the surveys whose trigger it matches."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cem.config import CEMSettings
from cem.touchpoints.service import record_interactions
from cem.triggers.service import invite_for_interactions
from cxkit.kafka.consumer import BatchHandler, Delivery


def consumer_name(settings: CEMSettings) -> str:
    """The live consumer's name, which `cem replay` rebuilds the interactions under."""
    return f"{settings.consumer_group}.interactions"


def live_handlers(settings: CEMSettings) -> dict[str, BatchHandler]:
    """The live consumer's handlers: store, then apply the survey triggers (in event order)."""

    async def on_interactions_recorded(session: AsyncSession, deliveries: list[Delivery]) -> None:
        stored = await record_interactions(session, deliveries)
        if stored:
            await invite_for_interactions(session, settings, stored)

    return {"interaction.recorded": on_interactions_recorded}


def projection_handlers() -> dict[str, BatchHandler]:
    """A replay's: rows only, never an invitation or a suppression."""
    return {"interaction.recorded": store_interactions}


async def store_interactions(session: AsyncSession, deliveries: list[Delivery]) -> None:
    """`interaction.recorded` in a replay: the rows, nothing else."""
    await record_interactions(session, deliveries)
