"""What a GDPR erasure clears in the platform tables (cxkit.erasure): the customer's sent outbox
rows and the stored answers that name them go; their unsent rows (still owed to the broker)
and everything about anyone else stay."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import utcnow
from cxkit.erasure import erase_platform_traces, forget_answers_mentioning
from cxkit.events.payloads import CustomerUpdated
from cxkit.kafka.outbox import outbox_row

from .conftest import SOURCE, IdempotencyKey, Outbox, WebhookDelivery, WebhookSubscription

Sessions = async_sessionmaker[AsyncSession]


def outbox(customer_id: uuid.UUID, *, sent: bool, key: str | None = None) -> Outbox:
    row = outbox_row(
        "customer.updated",
        source=SOURCE,
        subject=customer_id,
        data=CustomerUpdated(id=customer_id, email=f"{customer_id.hex[:8]}@example.com", changed=["email"]),
        key=key,
    )
    return Outbox(**row, sent_at=utcnow() if sent else None)


def answer(key: str, body: dict[str, Any]) -> IdempotencyKey:
    return IdempotencyKey(
        principal="p", key=key, request_hash="h", status_code=201, response_body=orjson.dumps(body), created_at=utcnow()
    )


async def remaining(sessions: Sessions) -> tuple[list[str | None], list[str]]:
    """(keys of the outbox rows left, in order, with `sent`/`unsent`; Idempotency-Keys left)."""
    async with sessions() as session:
        rows = (await session.scalars(select(Outbox).order_by(Outbox.id))).all()
        answers = (await session.scalars(select(IdempotencyKey.key).order_by(IdempotencyKey.key))).all()
    return [f"{r.key} {'sent' if r.sent_at else 'unsent'}" for r in rows], list(answers)


async def test_erasure_removes_the_customers_sent_events_and_answers_and_leaves_the_rest(sessions: Sessions) -> None:
    ada, bob = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add_all(
            [
                outbox(ada, sent=True),
                outbox(ada, sent=False),  # not yet at the broker: must still go
                outbox(bob, sent=True),
                outbox(bob, sent=True, key="campaign-7"),  # keyed by something else
            ]
        )
        session.add_all(
            [
                answer("ada-created", {"id": str(ada), "name": "Ada"}),
                answer("ada-in-a-list", {"items": [{"customer_id": str(ada)}, {"customer_id": str(bob)}]}),
                answer("bob-created", {"id": str(bob), "name": "Bob"}),
            ]
        )
    async with sessions() as session, session.begin():
        await erase_platform_traces(session, ada, outbox_model=Outbox, idempotency_model=IdempotencyKey)

    events, answers = await remaining(sessions)
    assert events == [f"{ada} unsent", f"{bob} sent", "campaign-7 sent"]
    assert answers == ["bob-created"]


async def test_answers_are_forgotten_by_exact_bytes_and_blank_or_wildcard_needles_forget_nothing(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        session.add_all(
            [
                answer("zoe", {"email": "zoë@example.com"}),
                answer("zoe-upper", {"email": "ZOË@EXAMPLE.COM"}),
                answer("percent", {"note": "100% done"}),
                answer("other", {"email": "someone@example.com"}),
            ]
        )
    async with sessions() as session, session.begin():
        # position() in bytes, not LIKE: a blank needle or a wildcard matches nothing by itself.
        await forget_answers_mentioning(session, IdempotencyKey, ["", "_", "%@%"])
    assert (await remaining(sessions))[1] == ["other", "percent", "zoe", "zoe-upper"]

    async with sessions() as session, session.begin():
        await forget_answers_mentioning(session, IdempotencyKey, ["zoë@example.com", "100% done"])
    assert (await remaining(sessions))[1] == ["other", "zoe-upper"]  # UTF-8 matched; another spelling is not


async def test_erasure_removes_the_customers_finished_webhook_deliveries(sessions: Sessions) -> None:
    """Their bodies are the customer's events: finished ones go, pending ones still owed to a
    receiver stay, and nobody else's are touched."""
    ada, bob, sub = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = utcnow()

    def delivery(customer_id: uuid.UUID, status: str) -> WebhookDelivery:
        return WebhookDelivery(
            id=uuid.uuid4(),
            subscription_id=sub,
            webhook_id=str(uuid.uuid4()),
            event_type="customer.updated",
            ordering_key=str(customer_id),
            payload=b"{}",
            status=status,
            attempt_log=[],
            created_at=now,
            updated_at=now,
            expires_at=now,
        )

    async with sessions() as session, session.begin():
        session.add(WebhookSubscription(id=sub, url="https://93.184.216.34/", event_types=[], secret="whsec_x", enabled=True))
        await session.flush()
        session.add_all(
            [delivery(ada, "succeeded"), delivery(ada, "failed"), delivery(ada, "pending"), delivery(bob, "succeeded")]
        )
    async with sessions() as session, session.begin():
        await erase_platform_traces(
            session, ada, outbox_model=Outbox, idempotency_model=IdempotencyKey, webhook_delivery_model=WebhookDelivery
        )
    async with sessions() as session:
        left = (await session.execute(select(WebhookDelivery.ordering_key, WebhookDelivery.status))).all()
    assert sorted(left) == sorted([(str(ada), "pending"), (str(bob), "succeeded")])
