"""The customer projection: applying CRM snapshots, and the experience view."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.experience_reads import ExperienceRows, read_experience
from cem.customers.models import CustomerProfile
from cem.customers.repository import CustomerProfileRepository, ExperienceTotalsRepository
from cem.customers.schemas import (
    ConvertedLead,
    CustomerAsAnnounced,
    CustomerExperience,
)
from cem.feedback.repository import FeedbackRepository
from cem.followups.repository import FollowupRepository
from cem.invitations.repository import InvitationRepository
from cem.invitations.service import status_of
from cem.privacy import PersonalDataRepository
from cem.responses.repository import ResponseRepository
from cem.responses.service import erase_answers
from cem.touchpoints.repository import TouchpointRepository
from cem.triggers.repository import SuppressionRepository
from cxkit.db import lock_keys, utcnow
from cxkit.events.payloads import CustomerErased, CustomerMerged, CustomerSnapshot, DealStageChanged, LeadConverted
from cxkit.http.problems import NotFound, ProblemError
from cxkit.kafka.consumer import PermanentEventError
from cxkit.pg_pool import Row


def profile_row(snapshot: CustomerSnapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "email": snapshot.email,
        "email_lower": snapshot.email.strip().lower() if snapshot.email else None,
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


async def apply_customer_snapshots(session: AsyncSession, snapshots: list[CustomerSnapshot], *, replaying: bool = False) -> None:
    """customer.created / customer.updated: one upsert, then what was kept under the announced
    addresses (interactions, invitations, suppressions) is linked to its customer."""
    rows = [profile_row(s) for s in snapshots]
    emails = {row["email_lower"] for row in rows if row["email_lower"]}
    # Taken before the upsert, as the interactions consumer takes it before its lookup: of two
    # concurrent transactions about one address, the later sees the earlier's committed rows.
    await lock_keys(session, "email", emails)
    await CustomerProfileRepository(session).apply_snapshots(rows, replaying=replaying)
    if emails:
        await TouchpointRepository(session).link_emails(emails)
        await InvitationRepository(session).link_emails(emails)
        await SuppressionRepository(session).link_emails(emails)


async def merge_customers(session: AsyncSession, merged: CustomerMerged, *, replaying: bool = False) -> None:
    """customer.merged: the survivor takes the CRM's merged record and every piece of CEM data
    of the duplicate (invitations, answers and scores, follow-ups, feedback, interactions,
    suppressions); the duplicate's profile stays as a pointer. Analytics do not change: the
    same answers, under one customer. Applying it twice changes nothing more."""
    if merged.survivor_id == merged.duplicate_id:
        raise PermanentEventError("a customer cannot be merged into itself")
    await apply_customer_snapshots(session, [merged.survivor], replaying=replaying)
    survivor, duplicate = merged.survivor_id, merged.duplicate_id
    await CustomerProfileRepository(session).mark_merged(duplicate, survivor, utcnow())
    await InvitationRepository(session).repoint_customer(duplicate, survivor)
    await ResponseRepository(session).repoint_customer(duplicate, survivor)
    await FollowupRepository(session).repoint_customer(duplicate, survivor)
    await FeedbackRepository(session).repoint_customer(duplicate, survivor)
    await TouchpointRepository(session).repoint_customer(duplicate, survivor)
    await SuppressionRepository(session).repoint_customer(duplicate, survivor)


async def erase_customer(session: AsyncSession, erased: CustomerErased) -> None:
    """customer.erased: no personal data of the customer stays in the CEM (name, email, phone,
    company and tags of the profile; addresses of invitations, answers, feedback, interactions
    and suppressions; free text of answers and feedback; interaction summaries and metadata;
    stored answers of idempotent writes; personal fields of their outbox events). Their scores,
    ratings and sentiment still count, anonymously. Scheduled invitations are cancelled and the
    customer is never invited again. Applying it twice changes nothing more."""
    customer_id = erased.customer_id
    profiles = CustomerProfileRepository(session)
    profile = await profiles.get(customer_id)
    email = profile.email_lower if profile else None
    needles = [str(customer_id), *([profile.email] if profile and profile.email else [])]
    now = utcnow()
    await profiles.erase(customer_id, erased.erased_at, now)
    unkeyed = await InvitationRepository(session).erase_customer(customer_id, email, now)
    unkeyed += await erase_answers(session, customer_id, email)
    unkeyed += await FeedbackRepository(session).erase_customer(customer_id, email)
    await TouchpointRepository(session).erase_customer(customer_id, email)
    await SuppressionRepository(session).erase_customer(customer_id, email)
    personal = PersonalDataRepository(session)
    await personal.forget_answers_mentioning(needles)
    await personal.scrub_events(customer_id, unkeyed)


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


class MergedAway(ProblemError):
    """The customer was merged into another: the answer points there (308, `Location` and
    `merged_into`), as the CRM answers for a merged duplicate."""

    status, title, slug = 308, "Merged into another customer", "merged"


async def experience(pool: asyncpg.Pool, customer_id: uuid.UUID, limit: int, path: str) -> CustomerExperience:
    """The customer with their latest invitations, answers, feedback, follow-ups, suppressions
    and touchpoint visits (`limit` of each) and a summary: one statement on the pool, whose parts
    are each an index range scan of at most `limit` rows or a primary-key lookup (the summary's
    figures are kept per customer), so it costs the same for a customer with 200,000 visits as
    for a new one."""
    async with pool.acquire() as conn:
        rows = await read_experience(conn, customer_id, limit)
    if rows is None:
        raise NotFound(f"customer {customer_id} is not known here (yet): the CRM has not announced it")
    if rows.profile.merged_into is not None:
        survivor = str(rows.profile.merged_into)
        raise MergedAway(
            f"customer {customer_id} was merged into {survivor}",
            headers={"Location": path.replace(str(customer_id), survivor, 1)},
            merged_into=survivor,
        )
    return CustomerExperience.model_validate(_experience_fields(rows, utcnow()))


def _experience_fields(rows: ExperienceRows, now: dt.datetime) -> dict[str, Any]:
    """The view as plain values, validated into `CustomerExperience` in one call (building a
    model per row took two thirds of the view's time). Rows keep their column names, which are
    the read schemas' field names; the few derived fields are as the lists derive them."""
    totals, latest = rows.totals or {}, rows.latest_nps

    def total(name: str) -> int:
        return int(totals.get(name, 0))

    return {
        "customer": _as_announced(rows.profile),
        "summary": {
            "responses": total("responses"),
            "latest_nps": latest,
            "nps_average": _average(total("nps_score_sum"), total("nps_answers")),
            "csat_average": _average(total("csat_score_sum"), total("csat_answers")),
            "ces_average": _average(total("ces_score_sum"), total("ces_answers")),
            "feedback": total("feedback"),
            "open_followups": total("open_followups"),
            "suppressions": total("suppressions"),
        },
        "invitations": [{**i, "status": status_of(Row(i), now)} for i in rows.invitations],
        "responses": [
            {
                **response,
                "score": None if score is None else {**score, "value": score["score"]},
                "followup_requested": followup_id is not None,
            }
            for response, score, followup_id in rows.responses
        ],
        "feedback": [{**f, "sentiment": {"label": f["sentiment_label"], "score": f["sentiment_score"]}} for f in rows.feedback],
        "followups": rows.followups,
        "suppressions": rows.suppressions,
        "touchpoint_history": rows.visits,
    }


async def rebuild_experience_totals(session: AsyncSession) -> tuple[int, int]:
    """Recompute every customer's experience totals from the rows (after a restore, or a change
    made by hand with the triggers off). Returns (customers with figures, customers corrected)."""
    return await ExperienceTotalsRepository(session).rebuild()


def _as_announced(profile: CustomerProfile | Row) -> CustomerAsAnnounced:
    converted = None
    if profile.converted_lead_id is not None and profile.converted_at is not None:
        converted = ConvertedLead(
            lead_id=profile.converted_lead_id, deal_id=profile.converted_deal_id, converted_at=profile.converted_at
        )
    return CustomerAsAnnounced(
        id=profile.id,
        email=profile.email,
        name=profile.name,
        company=profile.company,
        lifecycle_stage=profile.lifecycle_stage,
        owner=profile.owner,
        tags=profile.tags or [],
        survey_opt_out=profile.survey_opt_out,
        open_deal_value=profile.open_deal_value,
        converted_from=converted,
        erased_at=profile.erased_at,
        crm_version=profile.crm_version,
        synced_at=profile.synced_at,
    )


def _average(score_sum: int, answers: int) -> float | None:
    return round(score_sum / answers, 2) if answers else None
