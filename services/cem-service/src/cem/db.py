"""The CEM's declarative Base and the platform tables it carries."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from cxkit.db import new_metadata
from cxkit.platform_models import ApiKeyMixin, IdempotencyKeyMixin, OutboxMixin, ProcessedEventMixin
from cxkit.webhooks.models import WebhookDeliveryMixin, WebhookSubscriptionMixin

SOURCE = "urn:cx:cem-service"


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
