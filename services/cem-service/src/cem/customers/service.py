"""The customer projection: applying CRM snapshots, and the experience view."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.models import CustomerProfile
from cem.customers.repository import CustomerProfileRepository
from cem.customers.schemas import CustomerAsAnnounced, CustomerExperience, ExperienceSummary, LatestScore, TouchpointVisit
from cem.feedback.repository import FeedbackRepository
from cem.feedback.service import to_read as feedback_read
from cem.followups.repository import FollowupRepository
from cem.followups.schemas import FollowupRead
from cem.invitations.repository import InvitationRepository
from cem.invitations.service import to_read as invitation_read
from cem.responses.repository import ResponseRepository
from cem.responses.service import to_read as response_read
from cem.touchpoints.repository import TouchpointRepository
from cxkit.db import utcnow
from cxkit.events.payloads import CustomerSnapshot
from cxkit.http.problems import NotFound


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
        "crm_version": snapshot.version,
        "crm_created_at": snapshot.created_at,
        "crm_updated_at": snapshot.updated_at,
        "synced_at": utcnow(),
    }


async def apply_customer_snapshots(session: AsyncSession, snapshots: list[CustomerSnapshot]) -> None:
    await CustomerProfileRepository(session).apply_snapshots([profile_row(s) for s in snapshots])


async def experience(session: AsyncSession, customer_id: uuid.UUID, limit: int) -> CustomerExperience:
    """The customer with their latest invitations, answers, feedback, follow-ups and touchpoint
    visits (`limit` of each) and a summary; a fixed number of indexed queries."""
    profile = await get_profile(session, customer_id)
    now = utcnow()
    invitations = await InvitationRepository(session).list_page(customer_id=customer_id, now=now, limit=limit, after=None)
    responses = await ResponseRepository(session).list_page(
        survey_id=None, customer_id=customer_id, touchpoint=None, since=None, until=None, limit=limit, after=None
    )
    feedback_repo = FeedbackRepository(session)
    feedback = await feedback_repo.list_page(
        customer_id=customer_id,
        touchpoint=None,
        channel=None,
        sentiment=None,
        since=None,
        until=None,
        limit=limit,
        after=None,
    )
    followups_repo = FollowupRepository(session)
    followups = await followups_repo.for_customer(customer_id, limit)
    history = await TouchpointRepository(session).history(customer_id, limit)
    response_count, averages = await ResponseRepository(session).customer_summary(customer_id)
    latest = await ResponseRepository(session).latest_score(customer_id, "nps")
    return CustomerExperience(
        customer=CustomerAsAnnounced.model_validate(profile),
        summary=ExperienceSummary(
            responses=response_count,
            latest_nps=None
            if latest is None or latest.score is None
            else LatestScore(
                score=latest.score,
                scale_min=latest.scale_min,
                scale_max=latest.scale_max,
                category=latest.category,
                survey_id=latest.survey_id,
                touchpoint=latest.touchpoint,
                submitted_at=latest.submitted_at,
            ),
            nps_average=_average(averages, "nps"),
            csat_average=_average(averages, "csat"),
            ces_average=_average(averages, "ces"),
            feedback=await feedback_repo.count_for_customer(customer_id),
            open_followups=await followups_repo.count_open(customer_id),
        ),
        invitations=[invitation_read(i, now) for i in invitations[:limit]],
        responses=[response_read(r) for r in responses[:limit]],
        feedback=[feedback_read(f) for f in feedback[:limit]],
        followups=[FollowupRead.model_validate(f) for f in followups],
        touchpoint_history=[TouchpointVisit.model_validate(v) for v in history],
    )


def _average(averages: dict[str, tuple[int, float | None]], metric: str) -> float | None:
    value = averages.get(metric, (0, None))[1]
    return None if value is None else round(value, 2)


async def get_profile(session: AsyncSession, customer_id: uuid.UUID) -> CustomerProfile:
    profile = await CustomerProfileRepository(session).get(customer_id)
    if profile is None:
        raise NotFound(f"customer {customer_id} is not known here (yet): the CRM has not announced it")
    return profile
