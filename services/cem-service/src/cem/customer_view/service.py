"""The joined experience view: the customer as the CRM announced it, with what every CEM domain
holds of them, from the CEM's own tables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

from cem.customer_view.repository import ExperienceRows, read_experience
from cem.customer_view.schemas import ConvertedLead, CustomerAsAnnounced, CustomerExperience
from cem.customers.models import CustomerProfile
from cem.invitations.service import status_of
from cxkit.db import utcnow
from cxkit.http.problems import MergedAway, NotFound
from cxkit.pg_pool import Row


async def experience(pool: asyncpg.Pool, customer_id: uuid.UUID, limit: int) -> CustomerExperience:
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
        raise MergedAway(customer_id, rows.profile.merged_into)
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


async def exportable_customer(pool: asyncpg.Pool, customer_id: uuid.UUID) -> None:
    """404 for a customer the CRM has not announced, 308 for a merged duplicate."""
    merged_into = await pool.fetchrow("SELECT merged_into FROM customer_profiles WHERE id = $1", customer_id)
    if merged_into is None:
        raise NotFound(f"customer {customer_id} is not known here (yet): the CRM has not announced it")
    if merged_into[0] is not None:
        raise MergedAway(customer_id, merged_into[0])
