"""Webhook subscriptions and their delivery log: the rules behind `/v1/webhooks`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.events import encode_event, new_event
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, field_problem
from cxkit.webhooks.delivery import Webhooks
from cxkit.webhooks.models import PENDING, PING
from cxkit.webhooks.schemas import WebhookCreate, WebhookPing, WebhookSecretRotation, WebhookUpdate
from cxkit.webhooks.signing import new_secret
from cxkit.webhooks.targets import TargetRefused, check_target


async def _checked(webhooks: Webhooks, url: str | None, event_types: list[str] | None) -> None:
    if event_types is not None:
        unknown = sorted(set(event_types) - set(webhooks.event_types))
        if unknown:
            raise field_problem(
                ["body", "event_types"],
                f"unknown event types {', '.join(unknown)}; this service announces {', '.join(webhooks.event_types)}",
            )
    if url is not None:
        try:
            await check_target(
                url,
                allow_private=webhooks.settings.webhook_allow_private_targets,
                resolve_names=not webhooks.settings.webhook_proxy_resolves,
            )
        except TargetRefused as exc:
            raise field_problem(["body", "url"], str(exc)) from None


async def create_subscription(session: AsyncSession, webhooks: Webhooks, body: WebhookCreate) -> Any:
    await _checked(webhooks, body.url, body.event_types)
    now = utcnow()
    subscription = webhooks.subscription_model(
        id=new_id(),
        url=body.url,
        event_types=sorted(set(body.event_types)),
        description=body.description,
        secret=new_secret(),
        enabled=body.enabled,
        disabled_reason=None if body.enabled else "disabled by request",
        consecutive_failures=0,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    await session.flush()
    return subscription


async def get_subscription(session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID) -> Any:
    subscription = await session.get(webhooks.subscription_model, subscription_id)
    if subscription is None:
        raise NotFound(f"webhook {subscription_id} does not exist")
    return subscription


async def list_subscriptions(session: AsyncSession, webhooks: Webhooks, page: PageParams) -> tuple[list[Any], str | None]:
    model = webhooks.subscription_model
    sort = keyset.Sort(keyset.SortKey("created_at", model.created_at, "datetime"), False)
    rows = (await session.scalars(keyset.apply(select(model), sort, model.id, page))).all()
    return keyset.cut(rows, sort, page)


async def update_subscription(
    session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID, body: WebhookUpdate, if_match: str | None
) -> Any:
    subscription = await get_subscription(session, webhooks, subscription_id)
    check_if_match(if_match, subscription.version)
    changes = body.model_dump(exclude_unset=True)
    await _checked(webhooks, changes.get("url"), changes.get("event_types"))
    if "event_types" in changes:
        changes["event_types"] = sorted(set(changes["event_types"]))
    if changes.get("enabled") is True and not subscription.enabled:
        subscription.consecutive_failures = 0
        subscription.disabled_reason = None
    elif changes.get("enabled") is False and subscription.enabled:
        subscription.disabled_reason = "disabled by request"
    for name, value in changes.items():
        setattr(subscription, name, value)
    subscription.version += 1
    subscription.updated_at = utcnow()
    await session.flush()
    return subscription


async def rotate_secret(
    session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID, if_match: str | None, body: WebhookSecretRotation
) -> Any:
    """A new secret; the one it replaces keeps signing beside it for the seconds asked (none:
    it stops now), and any older one stops now."""
    subscription = await get_subscription(session, webhooks, subscription_id)
    check_if_match(if_match, subscription.version)
    now = utcnow()
    keep = body.previous_secret_expires_in_seconds
    subscription.previous_secret = subscription.secret if keep else None
    subscription.previous_secret_expires_at = now + dt.timedelta(seconds=keep) if keep else None
    subscription.secret = new_secret()
    subscription.version += 1
    subscription.updated_at = now
    await session.flush()
    return subscription


async def delete_subscription(
    session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID, if_match: str | None
) -> None:
    subscription = await get_subscription(session, webhooks, subscription_id)
    check_if_match(if_match, subscription.version)
    await session.delete(subscription)  # its deliveries go with it (ON DELETE CASCADE)
    await session.flush()


async def list_deliveries(
    session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID, status: str | None, page: PageParams
) -> tuple[list[Any], str | None]:
    await get_subscription(session, webhooks, subscription_id)
    model = webhooks.delivery_model
    sort = keyset.Sort(keyset.SortKey("seq", model.seq, "int", unique=True), True)
    stmt = select(model).where(model.subscription_id == subscription_id)
    if status is not None:
        stmt = stmt.where(model.status == status)
    rows = (await session.scalars(keyset.apply(stmt, sort, model.id, page))).all()
    return keyset.cut(rows, sort, page)


async def get_delivery(session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID, delivery_id: uuid.UUID) -> Any:
    delivery = await session.get(webhooks.delivery_model, delivery_id)
    if delivery is None or delivery.subscription_id != subscription_id:
        raise NotFound(f"delivery {delivery_id} of webhook {subscription_id} does not exist")
    return delivery


async def ping(session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID) -> Any:
    """A test delivery: a `webhook.ping` CloudEvent, due now, in a queue of its own (it waits
    for no customer's events), signed like any other. It is attempted once: not retried, and
    a failure does not count towards disabling the webhook (`retry_delivery` sends it again)."""
    subscription = await get_subscription(session, webhooks, subscription_id)
    if not subscription.enabled:
        raise Conflict(f"webhook {subscription_id} is disabled; enable it (PATCH enabled: true) to ping it")
    service = webhooks.settings.service_name
    data = WebhookPing(
        webhook=subscription.id,
        message=f"A test delivery from {service}: its webhook-signature verifies with this webhook's secret.",
    )
    event = new_event(PING, source=f"urn:cx:{service}", subject=None, data=data)
    now = utcnow()
    delivery = webhooks.delivery_model(
        id=new_id(),
        subscription_id=subscription.id,
        webhook_id=event.id,
        event_type=PING,
        ordering_key=event.id,
        payload=encode_event(event),
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        attempt_log=[],
        created_at=now,
        updated_at=now,
        expires_at=now,
    )
    session.add(delivery)
    await session.flush()
    return delivery


async def retry_delivery(session: AsyncSession, webhooks: Webhooks, subscription_id: uuid.UUID, delivery_id: uuid.UUID) -> Any:
    """Queue the delivery again, due now, with a fresh retry window (a ping: attempted once
    more) and the same `webhook-id` (a receiver that had it already drops the repeat). It keeps
    its place in its customer's order: later pending deliveries of that customer wait for it."""
    subscription = await get_subscription(session, webhooks, subscription_id)
    if not subscription.enabled:
        raise Conflict(f"webhook {subscription_id} is disabled; enable it (PATCH enabled: true) to deliver again")
    delivery = await session.get(webhooks.delivery_model, delivery_id, with_for_update=True)
    if delivery is None or delivery.subscription_id != subscription_id:
        raise NotFound(f"delivery {delivery_id} of webhook {subscription_id} does not exist")
    now = utcnow()
    delivery.status = PENDING
    delivery.next_attempt_at = now
    # A ping is sent once each time it is asked for; anything else gets a new retry window.
    delivery.expires_at = now if delivery.event_type == PING else now + webhooks.retry_window
    delivery.updated_at = now
    await session.flush()
    return delivery
