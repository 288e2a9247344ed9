"""What a GDPR erasure must also clear in the platform tables of a service: the sent outbox
rows about the customer (event payloads hold names, emails and free text) and the stored
answers of idempotent writes that mention them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, literal, or_
from sqlalchemy.ext.asyncio import AsyncSession


def bytes_mention(column: Any, needle: str) -> Any:
    """`column` (bytea) contains the UTF-8 bytes of `needle`."""
    return func.position(literal(needle.encode()).op("IN")(column)) > 0


async def forget_answers_mentioning(session: AsyncSession, idempotency_model: type[Any], needles: Iterable[str]) -> None:
    """Delete the stored answers of idempotent writes that mention any of `needles` (an id, an
    email). Erasures are rare: a scan of the table is fine."""
    conditions = [bytes_mention(idempotency_model.response_body, n) for n in dict.fromkeys(needles) if n]
    if conditions:
        await session.execute(delete(idempotency_model).where(or_(*conditions)))


async def forget_webhook_deliveries(session: AsyncSession, delivery_model: type[Any], customer_id: uuid.UUID) -> None:
    """Delete the finished webhook deliveries of the customer's events (their bodies are the
    events, personal data included). Pending ones stay: they still have to reach their receiver,
    and go with the delivery log's retention once finished."""
    await session.execute(
        delete(delivery_model).where(delivery_model.ordering_key == str(customer_id), delivery_model.status != "pending")
    )


async def erase_platform_traces(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    outbox_model: type[Any],
    idempotency_model: type[Any],
    webhook_delivery_model: type[Any] | None = None,
) -> None:
    """Delete sent outbox rows keyed by the customer, idempotency records whose stored answer
    names them, and their finished webhook deliveries. Unsent rows stay: they still have to
    reach the broker (the relay's retention cleanup removes them once sent)."""
    key = str(customer_id)
    await session.execute(delete(outbox_model).where(outbox_model.key == key, outbox_model.sent_at.is_not(None)))
    await forget_answers_mentioning(session, idempotency_model, [key])
    if webhook_delivery_model is not None:
        await forget_webhook_deliveries(session, webhook_delivery_model, customer_id)
