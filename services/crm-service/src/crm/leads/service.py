"""Lead rules: capture, qualify, convert into a customer (and a deal) in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm.campaigns.repository import CampaignRepository
from crm.customers import service as customers
from crm.customers.models import Customer
from crm.customers.repository import CustomerRepository
from crm.db import SOURCE, IdempotencyKey, OutboxMessage
from crm.deals import service as deals
from crm.deals.models import Deal
from crm.deals.repository import open_value_query
from crm.deals.schemas import DealCreate
from crm.leads import repository
from crm.leads.models import Lead
from crm.leads.repository import SORT_KEYS, LeadFilters, LeadRepository
from crm.leads.schemas import ConversionDeal, LeadConvert, LeadCreate, LeadUpdate
from crm.pipelines.models import PipelineStage
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.erasure import forget_answers_mentioning
from cxkit.events.payloads import LeadConverted
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, Unprocessable
from cxkit.kafka.outbox import add_event
from cxkit.pg_pool import CompiledQuery

# Lead fields that fill a linked customer's empty ones on conversion.
_CARRIED = ("name", "phone", "company", "owner", "source", "campaign_id")


async def _require_campaign(session: AsyncSession, campaign_id: uuid.UUID | None) -> None:
    if campaign_id is not None and not await CampaignRepository(session).exists(campaign_id):
        raise Unprocessable(
            f"campaign_id {campaign_id} does not exist",
            errors=[{"loc": ["body", "campaign_id"], "msg": "unknown id", "type": "reference"}],
        )


async def create_lead(session: AsyncSession, data: LeadCreate) -> Lead:
    await _require_campaign(session, data.campaign_id)
    now = utcnow()
    fields = data.model_dump()
    if data.status != "disqualified":
        fields["disqualified_reason"] = None
    email = str(data.email) if data.email else None
    lead = Lead(
        id=new_id(),
        **(fields | {"email": email}),
        email_normalized=email.lower() if email else None,
        version=1,
        created_at=now,
        updated_at=now,
    )
    repo = LeadRepository(session)
    repo.add(lead)
    await repo.flush()
    if data.campaign_id is not None:
        # A lead from a campaign is a member of it that responded (it became a lead).
        await CampaignRepository(session).add_member(data.campaign_id, lead_id=lead.id, responded_at=now, response="lead created")
    return lead


async def get_lead(session: AsyncSession, lead_id: uuid.UUID, *, for_update: bool = False) -> Lead:
    lead = await LeadRepository(session).get(lead_id, for_update=for_update)
    if lead is None:
        raise NotFound(f"lead {lead_id} does not exist")
    return lead


async def list_leads(
    session: AsyncSession, filters: LeadFilters, sort_token: str, page: PageParams
) -> tuple[list[Lead], str | None]:
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    rows = await LeadRepository(session).list_page(filters, sort, page)
    return keyset.cut(rows, sort, page)


def export_query(filters: LeadFilters, sort_token: str, columns: Sequence[str]) -> CompiledQuery:
    """The statement of a lead export: what `list_leads` shows, unpaged."""
    return repository.export_query(filters, keyset.parse_sort(sort_token, SORT_KEYS), columns)


async def update_lead(session: AsyncSession, lead_id: uuid.UUID, data: LeadUpdate, if_match: str | None) -> Lead:
    lead = await get_lead(session, lead_id, for_update=True)
    check_if_match(if_match, lead.version)
    if lead.converted_at is not None:
        raise Conflict(f"lead {lead_id} was converted into customer {lead.converted_customer_id}; change the customer")
    if "campaign_id" in data.model_fields_set and data.campaign_id != lead.campaign_id:
        await _require_campaign(session, data.campaign_id)
    changed = False
    for field in data.model_fields_set:
        value: Any = getattr(data, field)
        if field == "email":
            value = str(value) if value else None
            lead.email_normalized = value.lower() if value else None
        if getattr(lead, field) != value:
            setattr(lead, field, value)
            changed = True
    if lead.status != "disqualified":
        lead.disqualified_reason = None
    if not lead.email and not lead.name:
        raise Unprocessable("a lead needs an email or a name")
    if changed:
        lead.version += 1
        lead.updated_at = utcnow()
        await LeadRepository(session).flush()
    return lead


async def delete_lead(session: AsyncSession, lead_id: uuid.UUID, if_match: str | None) -> None:
    """Deletes the lead (its campaign memberships go with it) and the stored answers that
    mention it: for a lead, deletion is the GDPR erasure."""
    lead = await get_lead(session, lead_id, for_update=True)
    check_if_match(if_match, lead.version)
    await forget_answers_mentioning(session, IdempotencyKey, [str(lead.id), lead.email or ""])
    await LeadRepository(session).delete(lead)
    await LeadRepository(session).flush()


async def convert_lead(
    session: AsyncSession, lead_id: uuid.UUID, data: LeadConvert, actor: str | None, default_currency: str
) -> tuple[Lead, Customer, bool, tuple[Deal, PipelineStage] | None]:
    """Make (or link) the customer, optionally open a deal, mark the lead converted and
    announce `lead.converted`; the caller's transaction holds it all."""
    lead = await get_lead(session, lead_id, for_update=True)
    if lead.converted_at is not None:
        raise Conflict(
            f"lead {lead_id} was already converted into customer {lead.converted_customer_id}",
            converted_customer_id=str(lead.converted_customer_id),
        )
    if lead.status == "disqualified":
        raise Conflict(f"lead {lead_id} is disqualified; requalify it before converting")
    # The stage asked for wins; without one, the deal's (`opportunity`, or `customer` once won).
    target_stage = data.lifecycle_stage or ("opportunity" if data.deal else "sql")

    customer, created = await _customer_for(session, lead, data.customer_id, target_stage)
    if not created:
        await _fill_from_lead(session, customer, lead)
        await customers.advance_lifecycle(session, customer, target_stage, open_value_query)

    deal = None
    if data.deal is not None:
        try:
            deal = await deals.create_deal(
                session,
                DealCreate(customer_id=customer.id, owner=lead.owner or customer.owner, **data.deal.model_dump()),
                actor,
                default_currency,
                advance_customer=data.lifecycle_stage is None,
            )
        except Unprocessable as error:
            raise _in_deal(error) from None
    now = utcnow()
    lead.status = "qualified"
    lead.converted_at = now
    lead.converted_customer_id = customer.id
    lead.converted_deal_id = deal[0].id if deal else None
    lead.version += 1
    lead.updated_at = now
    await LeadRepository(session).flush()
    add_event(
        session,
        OutboxMessage,
        "lead.converted",
        source=SOURCE,
        subject=customer.id,
        data=LeadConverted(
            lead_id=lead.id, customer_id=customer.id, deal_id=lead.converted_deal_id, campaign_id=lead.campaign_id
        ),
    )
    return lead, customer, created, deal


async def _customer_for(
    session: AsyncSession, lead: Lead, customer_id: uuid.UUID | None, lifecycle_stage: str
) -> tuple[Customer, bool]:
    """The customer a lead converts into: the one named, else the one with the lead's email,
    else a new one made from the lead. Returns (customer, created)."""
    if customer_id is not None:
        return await customers.resolve_reference(session, customer_id), False
    repo = CustomerRepository(session)
    if lead.email:
        found = await repo.get_by_email(lead.email)
        if found is not None:
            return await customers.resolve_reference(session, found.id), False
    try:
        # In a savepoint, as `find_or_create_by_email` does: a customer given this email since
        # the lookup makes the insert fail, and is the one to link to.
        customer = await customers.insert_customer(
            session,
            email=lead.email,
            # A nameless lead makes a nameless customer, as an interaction's unknown email does:
            # the email is no name, and is longer than the name column may hold.
            name=lead.name,
            phone=lead.phone,
            company=lead.company,
            owner=lead.owner,
            source=lead.source,
            campaign_id=lead.campaign_id,
            lifecycle_stage=lifecycle_stage,
            campaigns=CampaignRepository(session),
            savepoint=True,
        )
    except IntegrityError:
        found = await repo.get_by_email(lead.email) if lead.email else None
        if found is None:
            raise Conflict(f"a customer with email {lead.email} already exists") from None
        return await customers.resolve_reference(session, found.id), False
    return customer, True


def _in_deal(error: Unprocessable) -> Unprocessable:
    """A 422 about a field of the deal (`body.stage`) located as the convert's body has it
    (`body.deal.stage`)."""

    def located(loc: list[Any]) -> list[Any]:
        return ["body", "deal", *loc[1:]] if loc[:1] == ["body"] and loc[1:2] and loc[1] in ConversionDeal.model_fields else loc

    extra = dict(error.extra)
    if "errors" in extra:
        extra["errors"] = [{**item, "loc": located(list(item["loc"]))} for item in extra["errors"]]
    detail = error.detail
    if detail is not None and ": " in detail:
        field, msg = detail.split(": ", 1)
        if located(field.split(".")) != field.split("."):
            detail = f"body.deal.{field.removeprefix('body.')}: {msg}"
    return Unprocessable(detail, headers=error.headers, **extra)


async def _fill_from_lead(session: AsyncSession, customer: Customer, lead: Lead) -> None:
    """A linked customer keeps its values and gains the lead's where it has none."""
    locked = await customers.live_customer_for_update(session, customer.id)
    changed = []
    for field in _CARRIED:
        if getattr(locked, field) in (None, "") and getattr(lead, field) not in (None, ""):
            setattr(locked, field, getattr(lead, field))
            changed.append(field)
    if changed:
        locked.version += 1
        locked.updated_at = utcnow()
        await customers.announce_updated(session, locked, changed, open_value_query)
