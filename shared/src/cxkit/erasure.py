"""What a GDPR erasure must also clear in the platform tables of a service: the sent outbox
rows about the customer (event payloads hold names, emails and free text) and the stored
answers of idempotent writes that mention them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession


async def erase_platform_traces(
    session: AsyncSession, customer_id: uuid.UUID, *, outbox_model: type[Any], idempotency_model: type[Any]
) -> None:
    """Delete sent outbox rows keyed by the customer and idempotency records whose stored answer
    names them. Unsent rows stay: they still have to reach the broker (the relay's retention
    cleanup removes them once sent)."""
    key = str(customer_id)
    await session.execute(delete(outbox_model).where(outbox_model.key == key, outbox_model.sent_at.is_not(None)))
    # The stored answer is JSON bytes; the customer's id appears in it as text.
    await session.execute(delete(idempotency_model).where(idempotency_model.response_body.contains(key.encode())))
