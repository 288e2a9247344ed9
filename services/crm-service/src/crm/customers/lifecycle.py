"""What the customers domain hands the domains above it, and asks of them.

Every other CRM domain builds on customers (a deal, a task, a document belongs to one), so this
domain imports none of them. Yet a merge and an erasure reach every domain's rows, a customer's
announced snapshot carries the sum of their open deals, and a customer can come from a campaign.
For each, this module states what customers needs; the domains answer it, `crm.customer_data`
composes the answers once, and they are handed in: by the customers router (`OtherDomains`, from
the app's state) or by the domain that calls (deals and leads pass their own).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from cxkit.http.data_export import Section
from cxkit.lifecycle import CustomerDataRegistry


@dataclass(slots=True)
class CustomerErasure:
    """One customer's erasure, as each domain's `erase_customer` gets it: who, when, and what the
    domains found on the way."""

    customer_id: uuid.UUID
    erased_at: dt.datetime
    # Stored files of the erased rows (paths relative to their store). They are deleted once the
    # rows are flushed, not by the domain that found them (`service.erase_customer` says why).
    files: list[str] = field(default_factory=list)


class StoredFiles(Protocol):
    """Where the files an erasure collects are kept (the documents' store)."""

    def delete(self, relative: str) -> None:
        """Remove a stored file; one already gone is fine (erasures are retried)."""


# The query of a customer's sum of open deal amounts, given the customer's id as a value, a bind
# parameter or a column (so it can also sit inside a statement): the deals domain's to write.
OpenDealValue = Callable[[Any], Select[Any]]


class CampaignMembership(Protocol):
    """A new customer's campaign: whether it exists, and the membership it gives them."""

    async def exists(self, campaign_id: uuid.UUID) -> bool: ...

    async def add_member(
        self,
        campaign_id: uuid.UUID,
        *,
        customer_id: uuid.UUID | None = None,
        responded_at: dt.datetime | None = None,
        response: str | None = None,
    ) -> bool: ...


# Whether a campaign exists, on a plain asyncpg connection (the hot write).
CampaignExists = Callable[[asyncpg.Connection, uuid.UUID], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class OtherDomains:
    """The answers the customers router hands its service, composed by `crm.customer_data`."""

    # The domains that own customer data, in the order merges and erasures visit them.
    customer_data: CustomerDataRegistry[CustomerErasure]
    stored_files: StoredFiles
    open_deal_value: OpenDealValue
    campaigns: Callable[[AsyncSession], CampaignMembership]
    campaign_exists: CampaignExists
    # What a data export (`GET /v1/customers/{id}/data-export`) reads besides the customer's record.
    export_sections: Sequence[Section]
