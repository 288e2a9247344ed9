"""Personal data kept outside the domain tables: stored answers of idempotent writes, and the
events in the outbox (sent ones stay until the relay's retention removes them)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import and_, or_, select

from cem.db import IdempotencyKey, OutboxMessage
from cxkit.erasure import bytes_mention, forget_answers_mentioning
from cxkit.repository import SessionRepository

# The free-text and address fields of the CEM's events; an erased customer's events keep
# their ids, scores and times without these.
PERSONAL_EVENT_FIELDS = ("email", "comment", "text")


class PersonalDataRepository(SessionRepository):
    async def forget_answers_mentioning(self, needles: list[str]) -> None:
        """A replayable answer (e.g. the JSON of recorded feedback) holds personal data."""
        await forget_answers_mentioning(self.session, IdempotencyKey, needles)

    async def scrub_events(self, customer_id: uuid.UUID, unkeyed_ids: list[uuid.UUID]) -> None:
        """Blank the personal fields of the customer's outbox events, sent or not (what is still
        to be relayed goes out without them): those keyed by the customer, and those about the
        invitations, answers and feedback made under their address before anyone knew it was
        theirs (`unkeyed_ids`), which carry no key."""
        condition: Any = OutboxMessage.key == str(customer_id)
        mentions = [bytes_mention(OutboxMessage.value, str(i)) for i in unkeyed_ids]
        if mentions:
            condition = or_(condition, and_(OutboxMessage.key.is_(None), or_(*mentions)))
        rows = (await self.session.scalars(select(OutboxMessage).where(condition))).all()
        for row in rows:
            event = orjson.loads(row.value)
            data = event.get("data")
            if not isinstance(data, dict) or not any(data.get(f) is not None for f in PERSONAL_EVENT_FIELDS):
                continue
            event["data"] = {k: (None if k in PERSONAL_EVENT_FIELDS else v) for k, v in data.items()}
            row.value = orjson.dumps(event)
        await self.session.flush()
