"""Every campaign and campaign-member query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import and_, bindparam, delete, exists, func, select, update
from sqlalchemy.orm import aliased

from crm.campaigns.models import Campaign, CampaignMember
from crm.customers.lifecycle import CustomerErasure
from crm.customers.models import Customer
from crm.deals.models import Deal
from crm.leads.models import Lead
from cxkit import keyset
from cxkit.db import insert_ignoring_conflicts, new_id, utcnow
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

SORT_KEYS = (keyset.SortKey("created_at", Campaign.created_at, "datetime"), keyset.SortKey("name", Campaign.name, "str"))
MEMBER_SORT = keyset.SortKey("added_at", CampaignMember.added_at, "datetime")


_CAMPAIGN_EXISTS = CompiledQuery(select(exists().where(Campaign.id == bindparam("campaign_id"))))


async def campaign_exists(conn: asyncpg.Connection, campaign_id: uuid.UUID) -> bool:
    """Whether the campaign exists (on a plain asyncpg connection, for hot writes)."""
    return bool(await _CAMPAIGN_EXISTS.fetchval(conn, campaign_id=campaign_id))


class CampaignRepository(Repository[Campaign]):
    model = Campaign

    async def exists(self, campaign_id: uuid.UUID) -> bool:
        return (await self.session.scalar(select(Campaign.id).where(Campaign.id == campaign_id))) is not None

    async def name_taken(self, name: str, *, other_than: uuid.UUID | None = None) -> bool:
        """Whether another campaign has this name in any case; lowered by PostgreSQL, as the
        unique index on lower(name) is (it reads that index)."""
        stmt = select(Campaign.id).where(func.lower(Campaign.name) == func.lower(name))
        if other_than is not None:
            stmt = stmt.where(Campaign.id != other_than)
        return (await self.session.scalar(stmt.limit(1))) is not None

    async def list_page(self, status: str | None, sort: keyset.Sort, page: PageParams) -> list[Campaign]:
        stmt = select(Campaign)
        if status:
            stmt = stmt.where(Campaign.status == status)
        return list((await self.session.scalars(keyset.apply(stmt, sort, Campaign.id, page))).all())

    async def attributed(self, campaign_id: uuid.UUID) -> tuple[int, int]:
        """(customers, leads) that came from the campaign."""
        customers = await self.session.scalar(select(func.count()).where(Customer.campaign_id == campaign_id))
        leads = await self.session.scalar(select(func.count()).where(Lead.campaign_id == campaign_id))
        return int(customers or 0), int(leads or 0)

    async def stats(self, campaign_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Members, responses, attributed leads and customers, won amount: four grouped
        queries for any number of campaigns."""
        found: dict[uuid.UUID, dict[str, Any]] = defaultdict(
            lambda: {"members": 0, "responded": 0, "leads": 0, "customers": 0, "won_amount": Decimal(0)}
        )
        if not campaign_ids:
            return found
        members = (
            select(CampaignMember.campaign_id, func.count(), func.count(CampaignMember.responded_at))
            .where(CampaignMember.campaign_id.in_(campaign_ids))
            .group_by(CampaignMember.campaign_id)
        )
        for cid, total, responded in await self.session.execute(members):
            found[cid]["members"], found[cid]["responded"] = int(total), int(responded)
        leads = select(Lead.campaign_id, func.count()).where(Lead.campaign_id.in_(campaign_ids)).group_by(Lead.campaign_id)
        for cid, total in await self.session.execute(leads):
            found[cid]["leads"] = int(total)
        customers = (
            select(Customer.campaign_id, func.count())
            .where(Customer.campaign_id.in_(campaign_ids), Customer.merged_into_id.is_(None))
            .group_by(Customer.campaign_id)
        )
        for cid, total in await self.session.execute(customers):
            found[cid]["customers"] = int(total)
        won = (
            select(Customer.campaign_id, func.coalesce(func.sum(Deal.amount), 0))
            .join(Deal, Deal.customer_id == Customer.id)
            .where(Customer.campaign_id.in_(campaign_ids), Deal.status == "won")
            .group_by(Customer.campaign_id)
        )
        for cid, total in await self.session.execute(won):
            found[cid]["won_amount"] = Decimal(total)
        return found

    async def add_member(
        self,
        campaign_id: uuid.UUID,
        *,
        customer_id: uuid.UUID | None = None,
        lead_id: uuid.UUID | None = None,
        responded_at: dt.datetime | None = None,
        response: str | None = None,
    ) -> bool:
        """Add a member unless it already is one; returns whether it was added."""
        row = {
            "id": new_id(),
            "campaign_id": campaign_id,
            "customer_id": customer_id,
            "lead_id": lead_id,
            "responded_at": responded_at,
            "response": response,
            "added_at": utcnow(),
        }
        table = CampaignMember.__table__
        result = await self.session.execute(insert_ignoring_conflicts(table).values(row).returning(table.c.id))
        return result.first() is not None

    async def get_member(self, campaign_id: uuid.UUID, member_id: uuid.UUID) -> CampaignMember | None:
        return await self.session.scalar(
            select(CampaignMember).where(CampaignMember.id == member_id, CampaignMember.campaign_id == campaign_id)
        )

    async def get_member_by_ref(self, campaign_id: uuid.UUID, **ref: uuid.UUID) -> CampaignMember | None:
        return await self.session.scalar(select(CampaignMember).filter_by(campaign_id=campaign_id, **ref))

    async def list_members(
        self, campaign_id: uuid.UUID, responded: bool | None, sort: keyset.Sort, page: PageParams
    ) -> list[CampaignMember]:
        stmt = select(CampaignMember).where(CampaignMember.campaign_id == campaign_id)
        if responded is not None:
            stmt = stmt.where(CampaignMember.responded_at.is_not(None) if responded else CampaignMember.responded_at.is_(None))
        return list((await self.session.scalars(keyset.apply(stmt, sort, CampaignMember.id, page))).all())

    async def delete_member(self, member: CampaignMember) -> None:
        await self.session.delete(member)

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        """Memberships move to the survivor; where both were members of a campaign, the
        survivor's membership stays and takes the duplicate's response if it had none."""
        cm, dup = CampaignMember, aliased(CampaignMember)
        same_campaign = and_(dup.customer_id == duplicate_id, dup.campaign_id == cm.campaign_id)
        await self.session.execute(
            update(cm)
            .where(
                cm.customer_id == survivor_id,
                cm.responded_at.is_(None),
                exists().where(same_campaign, dup.responded_at.is_not(None)),
            )
            .values(
                responded_at=select(dup.responded_at).where(same_campaign).scalar_subquery(),
                response=select(dup.response).where(same_campaign).scalar_subquery(),
            )
        )
        survivor = aliased(CampaignMember)
        survivor_campaigns = select(survivor.campaign_id).where(survivor.customer_id == survivor_id)
        await self.session.execute(delete(cm).where(cm.customer_id == duplicate_id, cm.campaign_id.in_(survivor_campaigns)))
        await self.session.execute(update(cm).where(cm.customer_id == duplicate_id).values(customer_id=survivor_id))

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """Nothing to erase: a membership holds no personal data (a campaign, dates and a
        response code), and it stays so that campaign figures still add up."""
