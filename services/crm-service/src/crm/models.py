"""Imports every model so `Base.metadata` is complete (Alembic and tests use this)."""

from crm.customers.models import Customer
from crm.db import ApiKey, Base, IdempotencyKey, OutboxMessage, ProcessedEvent

__all__ = ["ApiKey", "Base", "Customer", "IdempotencyKey", "OutboxMessage", "ProcessedEvent"]
