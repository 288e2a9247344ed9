"""Campaign rules: members (customers or leads), their responses, the response rate and what
the campaign brought in."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm.campaigns.models import Campaign, CampaignMember
from crm.campaigns.repository import MEMBER_SORT, SORT_KEYS, CampaignRepository
from crm.campaigns.schemas import CampaignCreate, CampaignStats, CampaignUpdate, MemberCreate, MemberResponse
from crm.customers import service as customers
from crm.leads.repository import LeadRepository
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, Unprocessable, field_problem


def stats_of(raw: dict[str, Any]) -> CampaignStats:
    members, responded = raw["members"], raw["responded"]
    return CampaignStats(
        members=members,
        responded=responded,
        response_rate=round(responded / members, 4) if members else None,
        leads=raw["leads"],
        customers=raw["customers"],
        won_amount=Decimal(raw["won_amount"]).quantize(Decimal("0.01")),
    )


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a campaign named {name!r} already exists")


async def create_campaign(session: AsyncSession, data: CampaignCreate) -> Campaign:
    repo = CampaignRepository(session)
    if await repo.name_taken(data.name):
        raise _name_taken(data.name)
    now = utcnow()
    campaign = Campaign(id=new_id(), **data.model_dump(), version=1, created_at=now, updated_at=now)
    repo.add(campaign)
    await repo.flush_or(_name_taken(data.name))
    return campaign


async def get_campaign(session: AsyncSession, campaign_id: uuid.UUID, *, for_update: bool = False) -> Campaign:
    campaign = await CampaignRepository(session).get(campaign_id, for_update=for_update)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return campaign


async def campaign_stats(session: AsyncSession, campaign_ids: list[uuid.UUID]) -> dict[uuid.UUID, CampaignStats]:
    raw = await CampaignRepository(session).stats(campaign_ids)
    return {cid: stats_of(raw[cid]) for cid in campaign_ids}


async def list_campaigns(
    session: AsyncSession, status: str | None, sort_token: str, page: PageParams
) -> tuple[list[Campaign], str | None]:
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    rows = await CampaignRepository(session).list_page(status, sort, page)
    return keyset.cut(rows, sort, page)


async def update_campaign(session: AsyncSession, campaign_id: uuid.UUID, data: CampaignUpdate, if_match: str | None) -> Campaign:
    repo = CampaignRepository(session)
    campaign = await get_campaign(session, campaign_id, for_update=True)
    check_if_match(if_match, campaign.version)
    if data.name is not None and data.name != campaign.name and await repo.name_taken(data.name, other_than=campaign.id):
        raise _name_taken(data.name)
    changed = False
    for field in data.model_fields_set:
        if getattr(campaign, field) != getattr(data, field):
            setattr(campaign, field, getattr(data, field))
            changed = True
    if campaign.start_date and campaign.end_date and campaign.end_date < campaign.start_date:
        raise field_problem(["body", "end_date"], "end_date is before start_date")
    if changed:
        campaign.version += 1
        campaign.updated_at = utcnow()
        await repo.flush_or(_name_taken(campaign.name))
    return campaign


async def delete_campaign(session: AsyncSession, campaign_id: uuid.UUID, if_match: str | None) -> None:
    repo = CampaignRepository(session)
    campaign = await get_campaign(session, campaign_id, for_update=True)
    check_if_match(if_match, campaign.version)
    customers_n, leads_n = await repo.attributed(campaign.id)
    if customers_n or leads_n:
        raise Conflict(
            f"{customers_n} customers and {leads_n} leads came from this campaign; set its status to aborted or completed instead"
        )
    await repo.delete(campaign)
    await repo.flush()


async def add_member(session: AsyncSession, campaign_id: uuid.UUID, data: MemberCreate) -> CampaignMember:
    repo = CampaignRepository(session)
    await get_campaign(session, campaign_id)
    ref: dict[str, uuid.UUID]
    if data.customer_id is not None:
        ref = {"customer_id": (await customers.resolve_reference(session, data.customer_id)).id}
    else:
        assert data.lead_id is not None
        if await LeadRepository(session).get(data.lead_id) is None:
            raise Unprocessable(
                f"lead_id {data.lead_id} does not exist",
                errors=[{"loc": ["body", "lead_id"], "msg": "unknown id", "type": "reference"}],
            )
        ref = {"lead_id": data.lead_id}
    responded_at = utcnow() if data.response else None
    if not await repo.add_member(campaign_id, responded_at=responded_at, response=data.response, **ref):
        raise Conflict("already a member of this campaign")
    member = await repo.get_member_by_ref(campaign_id, **ref)
    assert member is not None
    return member


async def get_member(session: AsyncSession, campaign_id: uuid.UUID, member_id: uuid.UUID) -> CampaignMember:
    member = await CampaignRepository(session).get_member(campaign_id, member_id)
    if member is None:
        raise NotFound(f"campaign {campaign_id} has no member {member_id}")
    return member


async def record_response(
    session: AsyncSession, campaign_id: uuid.UUID, member_id: uuid.UUID, data: MemberResponse
) -> CampaignMember:
    """The first response date is kept; a later call updates what the response was."""
    member = await get_member(session, campaign_id, member_id)
    if member.responded_at is None:
        member.responded_at = data.responded_at or utcnow()
    member.response = data.response
    await CampaignRepository(session).flush()
    return member


async def remove_member(session: AsyncSession, campaign_id: uuid.UUID, member_id: uuid.UUID) -> None:
    member = await get_member(session, campaign_id, member_id)
    await CampaignRepository(session).delete_member(member)
    await CampaignRepository(session).flush()


async def list_members(
    session: AsyncSession, campaign_id: uuid.UUID, responded: bool | None, page: PageParams
) -> tuple[list[CampaignMember], str | None]:
    await get_campaign(session, campaign_id)
    sort = keyset.Sort(MEMBER_SORT, descending=False)
    rows = await CampaignRepository(session).list_members(campaign_id, responded, sort, page)
    return keyset.cut(rows, sort, page)
