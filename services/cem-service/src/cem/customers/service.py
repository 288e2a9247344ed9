"""The customer projection: applying CRM snapshots, merges and erasures, deal values and lead
conversions. What other domains hold of a customer follows a merge or an erasure through the
registry the caller hands in (`cem.customer_data`): this domain imports no other."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.lifecycle import CustomerErasure, link_addresses
from cem.customers.models import CustomerProfile, email_key
from cem.customers.repository import CustomerProfileRepository, ExperienceTotalsRepository
from cem.db import WebhookDelivery
from cem.privacy import PersonalDataRepository
from cxkit.db import lock_keys, utcnow
from cxkit.erasure import forget_webhook_deliveries
from cxkit.events.payloads import CustomerErased, CustomerMerged, CustomerSnapshot, DealStageChanged, LeadConverted
from cxkit.kafka.consumer import PermanentEventError
from cxkit.lifecycle import CustomerDataRegistry


def profile_row(snapshot: CustomerSnapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "email": snapshot.email,
        "email_lower": email_key(snapshot.email) if snapshot.email else None,
        "name": snapshot.name,
        "phone": snapshot.phone,
        "company": snapshot.company,
        "lifecycle_stage": snapshot.lifecycle_stage,
        "owner": snapshot.owner,
        "tags": list(snapshot.tags),
        "survey_opt_out": snapshot.survey_opt_out,
        "open_deal_value": snapshot.open_deal_value,
        "open_deal_value_at": snapshot.updated_at,
        "crm_version": snapshot.version,
        "crm_created_at": snapshot.created_at,
        "crm_updated_at": snapshot.updated_at,
        "synced_at": utcnow(),
    }


async def apply_customer_snapshots(
    session: AsyncSession,
    snapshots: list[CustomerSnapshot],
    customer_data: CustomerDataRegistry[CustomerErasure],
    *,
    replaying: bool = False,
) -> None:
    """customer.created / customer.updated: one upsert, then what was kept under an address new
    to its profile (interactions, invitations, answers, feedback, suppressions) is linked to its customer.

    Only a new address can have rows waiting: whatever came under an address its profile
    already had found the customer when it came (the interactions consumer and the invitation
    routes look the address up under the same lock). A replay links every address it
    announces, as it rebuilds a copy that may have missed some.

    A snapshot of a merged duplicate changes nothing of the pointer but its address, recorded
    so that the duplicate's erasure finds it; what was kept under that address goes to the
    survivor (a merge applied before the duplicate's customer.created leaves such rows)."""
    rows = [profile_row(s) for s in snapshots]
    emails = {row["email_lower"] for row in rows if row["email_lower"]}
    # Taken before the upsert, as the interactions consumer takes it before its lookup: of two
    # concurrent transactions about one address, the later sees the earlier's committed rows.
    await lock_keys(session, "email", emails)
    profiles = CustomerProfileRepository(session)
    new_addresses = await profiles.apply_snapshots(rows, replaying=replaying)
    to_link = emails if replaying else new_addresses
    if to_link:
        await link_addresses(customer_data, session, to_link)
    merged_addresses = await profiles.record_merged_addresses(rows, replaying=replaying)
    if merged_addresses:
        await link_addresses(customer_data, session, merged_addresses)
        await profiles.drop_merged_address_keys(merged_addresses)


async def merge_customers(
    session: AsyncSession,
    merged: CustomerMerged,
    customer_data: CustomerDataRegistry[CustomerErasure],
    *,
    replaying: bool = False,
) -> None:
    """customer.merged: the survivor takes the CRM's merged record and every piece of CEM data
    of the duplicate (each registered domain's rows: invitations, answers and scores,
    follow-ups, feedback, interactions, suppressions); the duplicate's profile stays as a
    pointer. Analytics do not change: the same answers, under one customer. Applying it twice
    changes nothing more.

    customer.merged is keyed by the survivor, so a chain's merges come in any order: a survivor
    merged away itself hands the duplicate on to its own survivor (pointers stay one hop). The
    duplicate's profile is locked first (`CustomerProfileRepository.lock`): a write about the
    duplicate under way is waited for and its rows move too; one that comes later waits and
    then writes for the survivor."""
    if merged.survivor_id == merged.duplicate_id:
        raise PermanentEventError("a customer cannot be merged into itself")
    await apply_customer_snapshots(session, [merged.survivor], customer_data, replaying=replaying)
    duplicate = merged.duplicate_id
    profiles = CustomerProfileRepository(session)
    await profiles.lock(duplicate)
    survivor = await profiles.survivor_of(merged.survivor_id)
    if survivor == duplicate:
        raise PermanentEventError(f"customer {merged.survivor_id} was merged into {duplicate}, which cannot merge into it")
    await profiles.mark_merged(duplicate, survivor, utcnow())
    await customer_data.repoint(session, duplicate, survivor)


async def erase_customer(
    session: AsyncSession, erased: CustomerErased, customer_data: CustomerDataRegistry[CustomerErasure]
) -> None:
    """customer.erased: no personal data of the customer stays in the CEM (name, email, phone,
    company and tags of the profile; what each registered domain erases: addresses of
    invitations, answers, feedback, interactions and suppressions, free text of answers and
    feedback, interaction summaries and metadata; stored answers of idempotent writes; personal
    fields of their outbox events). Their scores, ratings and sentiment still count,
    anonymously. Scheduled invitations are cancelled and the customer is never invited again.
    Applying it twice changes nothing more.

    The profile is locked first (`CustomerProfileRepository.lock`): a write about the customer
    under way is waited for, and erased here; one that comes later waits and then finds the
    customer erased. Stored answers are found by the customer's id and address, and by the ids
    of their rows kept under an address (`CustomerErasure.unkeyed_ids`): an answer given before
    the CRM announced them names neither, or the address in another case."""
    customer_id = erased.customer_id
    profiles = CustomerProfileRepository(session)
    profile = await profiles.lock(customer_id)
    needles = [str(customer_id), *([profile.email] if profile and profile.email else [])]
    erasure = CustomerErasure(customer_id, _address_key(profile), utcnow())
    await profiles.erase(customer_id, erased.erased_at, erasure.at)
    await customer_data.erase(session, erasure)
    needles += [str(i) for i in erasure.unkeyed_ids]
    personal = PersonalDataRepository(session)
    await personal.forget_answers_mentioning(needles)
    await personal.scrub_events(customer_id, erasure.unkeyed_ids)
    await forget_webhook_deliveries(session, WebhookDelivery, customer_id)


def _address_key(profile: CustomerProfile | None) -> str | None:
    """The key of the address an erasure finds a customer's rows by: a merged duplicate's is its
    recorded address's (it finds nobody by it, but what came under it after the merge is theirs)."""
    if profile is None:
        return None
    if profile.email_lower is None and profile.merged_into is not None and profile.email:
        return email_key(profile.email)
    return profile.email_lower


async def apply_deal_changes(session: AsyncSession, changes: list[DealStageChanged]) -> None:
    """deal.stage_changed: the customer's open deal value as the CRM computed it, only ever
    moving forward in CRM time (the newest change per customer in the run, one update each)."""
    newest: dict[uuid.UUID, DealStageChanged] = {}
    for change in changes:
        seen = newest.get(change.customer_id)
        if seen is None or change.changed_at >= seen.changed_at:
            newest[change.customer_id] = change
    repo = CustomerProfileRepository(session)
    now = utcnow()
    for change in newest.values():
        await repo.set_open_deal_value(change.customer_id, change.customer_open_deal_value, change.changed_at, now)


async def record_conversions(session: AsyncSession, conversions: list[tuple[LeadConverted, dt.datetime]]) -> None:
    """lead.converted: which lead (and deal) the customer came from, and when."""
    repo = CustomerProfileRepository(session)
    now = utcnow()
    for conversion, at in conversions:
        await repo.record_conversion(conversion.customer_id, conversion.lead_id, conversion.deal_id, at, now)


async def reset_projection(session: AsyncSession) -> None:
    """Before a replay: rows stay (answers point at them), and so do merges and erasures (an
    erasure is never undone); the replay re-applies every snapshot, deal value and conversion."""
    await CustomerProfileRepository(session).reset_deal_value_times()


async def rebuild_experience_totals(session: AsyncSession) -> tuple[int, int]:
    """Recompute every customer's experience totals from the rows (after a restore, or a change
    made by hand with the triggers off). Returns (customers with figures, customers corrected)."""
    return await ExperienceTotalsRepository(session).rebuild()
