"""The CRM's declarative Base and the platform tables it carries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric
from sqlalchemy.orm import DeclarativeBase

from cxkit.db import new_metadata
from cxkit.platform_models import ApiKeyMixin, IdempotencyKeyMixin, OutboxMixin, ProcessedEventMixin
from cxkit.webhooks.models import WebhookDeliveryMixin, WebhookSubscriptionMixin

SOURCE = "urn:cx:crm-service"

# Money: exact decimals, up to 16 digits before the point (validated at the API edge).
Money = Numeric(18, 2)


def as_money(total: Any) -> Decimal:
    """A sum of Money (or nothing, for no rows) at its two decimal places, as answers state it."""
    return Decimal(total or 0).quantize(Decimal("0.01"))


class Base(DeclarativeBase):
    metadata = new_metadata()


class ApiKey(ApiKeyMixin, Base):
    pass


class IdempotencyKey(IdempotencyKeyMixin, Base):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class WebhookSubscription(WebhookSubscriptionMixin, Base):
    pass


class WebhookDelivery(WebhookDeliveryMixin, Base):
    pass
