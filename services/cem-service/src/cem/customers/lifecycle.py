"""What the customers domain hands the domains that own customer data, and asks of them.

Merges and erasures walk a `cxkit.lifecycle.CustomerDataRegistry` composed in `cem.customer_data`
and handed in by the caller, so this domain imports no other: the domains import this module.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession

from cxkit.lifecycle import CustomerDataRegistry


@dataclass(slots=True)
class CustomerErasure:
    """One customer's erasure, as each domain's `erase_customer` gets it: who (`email_lower`
    also finds what was kept under their address before the CRM announced them), when, and
    what the domains found on the way."""

    customer_id: uuid.UUID
    email_lower: str | None
    at: dt.datetime
    # Ids named by the outbox events of rows kept under the address (a row's id, or the event's own
    # id where the event names no row): these events carry no key, so their personal fields are
    # scrubbed by id (`PersonalDataRepository.scrub_events`).
    unkeyed_ids: list[uuid.UUID] = field(default_factory=list)


@runtime_checkable
class AddressLinks(Protocol):
    """Customer data that can be kept under an email address until the CRM announces its owner."""

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        """Rows kept under these addresses without a customer go to the customer now announced with each."""


async def link_addresses(
    customer_data: CustomerDataRegistry[CustomerErasure], session: AsyncSession, emails_lower: Collection[str]
) -> None:
    """Every registered domain that keeps rows under an address links them (the kit's registry
    knows merges and erasures only, so this one walks it for owners that are `AddressLinks`)."""
    for _, owner in customer_data.owners(session):
        if isinstance(owner, AddressLinks):
            await owner.link_emails(emails_lower)
