"""Imports every model so `Base.metadata` is complete (Alembic and tests use this)."""

from cem.customers.models import CustomerProfile
from cem.db import ApiKey, Base, IdempotencyKey, OutboxMessage, ProcessedEvent
from cem.touchpoints.models import Touchpoint

__all__ = ["ApiKey", "Base", "CustomerProfile", "IdempotencyKey", "OutboxMessage", "ProcessedEvent", "Touchpoint"]
