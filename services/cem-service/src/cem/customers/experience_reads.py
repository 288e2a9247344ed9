"""The experience view's statements: built with SQLAlchemy from the domains' models, compiled
once, run on one connection of the asyncpg pool (no session, no ORM objects). Each is a
primary-key lookup or an index range scan of at most `limit` rows in the order the index
keeps, so the view costs the same for a customer with 200,000 visits as for a new one
(tests/test_per_customer_plans.py checks the plans)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Integer, Uuid, bindparam, select

from cem.customers.models import CustomerExperienceTotals, CustomerProfile
from cem.feedback.models import Feedback
from cem.followups.models import Followup
from cem.invitations.models import Invitation
from cem.responses.models import Score, SurveyResponse
from cem.touchpoints.models import TouchpointInteraction
from cem.triggers.models import Suppression
from cxkit.pg_pool import CompiledQuery, Row, row_columns

_CUSTOMER = bindparam("customer_id", type_=Uuid)
_LIMIT = bindparam("limit", type_=Integer)
SCORE = "score_"  # the prefix of a response's score columns


def _newest(entity: Any, customer: Any, at: Any, row_id: Any) -> CompiledQuery:
    """The customer's newest `limit` rows of `entity`, newest first (as its list orders them),
    from the index on (customer_id, at, id)."""
    return CompiledQuery(
        select(*row_columns(entity)).where(customer == _CUSTOMER).order_by(at.desc(), row_id.desc()).limit(_LIMIT)
    )


PROFILE = CompiledQuery(select(*row_columns(CustomerProfile)).where(CustomerProfile.id == _CUSTOMER))
TOTALS = CompiledQuery(select(*row_columns(CustomerExperienceTotals)).where(CustomerExperienceTotals.customer_id == _CUSTOMER))
INVITATIONS = _newest(Invitation, Invitation.customer_id, Invitation.created_at, Invitation.id)
RESPONSES = CompiledQuery(
    # Each answer with its score and whether a follow-up was asked for, as GET /v1/responses lists them.
    select(*row_columns(SurveyResponse), *row_columns(Score, SCORE), Followup.id.label("followup_id"))
    .outerjoin(Score, Score.response_id == SurveyResponse.id)
    .outerjoin(Followup, Followup.response_id == SurveyResponse.id)
    .where(SurveyResponse.customer_id == _CUSTOMER)
    .order_by(SurveyResponse.submitted_at.desc(), SurveyResponse.id.desc())
    .limit(_LIMIT)
)
FEEDBACK = _newest(Feedback, Feedback.customer_id, Feedback.received_at, Feedback.id)
FOLLOWUPS = _newest(Followup, Followup.customer_id, Followup.created_at, Followup.id)
SUPPRESSIONS = _newest(Suppression, Suppression.customer_id, Suppression.created_at, Suppression.id)
VISITS = _newest(
    TouchpointInteraction,
    TouchpointInteraction.customer_id,
    TouchpointInteraction.occurred_at,
    TouchpointInteraction.interaction_id,
)
LATEST_NPS = CompiledQuery(
    select(*row_columns(Score))
    .where(Score.customer_id == _CUSTOMER, Score.metric == "nps", Score.score.is_not(None))
    .order_by(Score.submitted_at.desc(), Score.response_id.desc())
    .limit(1)
)


Values = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExperienceRows:
    """What the experience view shows of one customer: each row as its columns' values, keyed
    by the models' attribute names (a response with its score's, or None, and its follow-up id)."""

    invitations: list[Values]
    responses: list[tuple[Values, Values | None, uuid.UUID | None]]
    feedback: list[Values]
    followups: list[Values]
    suppressions: list[Values]
    visits: list[Values]
    totals: Values | None
    latest_nps: Values | None


async def read_profile(conn: asyncpg.Connection, customer_id: uuid.UUID) -> Row | None:
    record = await PROFILE.fetchrow(conn, customer_id=customer_id)
    return None if record is None else Row(record)


def _response(record: asyncpg.Record) -> tuple[Values, Values | None, uuid.UUID | None]:
    values = dict(record)
    score = None
    if values[SCORE + "response_id"] is not None:
        score = {k.removeprefix(SCORE): v for k, v in values.items() if k.startswith(SCORE)}
    return values, score, values["followup_id"]


async def read_experience(conn: asyncpg.Connection, customer_id: uuid.UUID, limit: int) -> ExperienceRows:
    """Every list of the view (`limit` rows each), the kept totals and the latest NPS answer."""

    async def rows(query: CompiledQuery) -> list[Values]:
        return [dict(r) for r in await query.fetch(conn, customer_id=customer_id, limit=limit)]

    def one(record: asyncpg.Record | None) -> Values | None:
        return None if record is None else dict(record)

    return ExperienceRows(
        invitations=await rows(INVITATIONS),
        responses=[_response(r) for r in await RESPONSES.fetch(conn, customer_id=customer_id, limit=limit)],
        feedback=await rows(FEEDBACK),
        followups=await rows(FOLLOWUPS),
        suppressions=await rows(SUPPRESSIONS),
        visits=await rows(VISITS),
        totals=one(await TOTALS.fetchrow(conn, customer_id=customer_id)),
        latest_nps=one(await LATEST_NPS.fetchrow(conn, customer_id=customer_id)),
    )
