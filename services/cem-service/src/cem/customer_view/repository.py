"""The experience view's statement: built with SQLAlchemy from the domains' models, compiled
once, run on the asyncpg pool (no session, no ORM objects) in one round trip. Each of its
parts is a primary-key lookup or an index range scan of at most `limit` rows in the order the
index keeps, so the view costs the same for a customer with 200,000 visits as for a new one
(tests/test_per_customer_plans.py checks the plans)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Integer, Select, Uuid, bindparam, select

from cem.customers.models import CustomerExperienceTotals, CustomerProfile
from cem.feedback.models import Feedback
from cem.followups.models import Followup
from cem.invitations.models import Invitation
from cem.responses.models import Score, SurveyResponse
from cem.suppressions.models import Suppression
from cem.touchpoints.models import TouchpointInteraction
from cxkit.pg_pool import CompiledQuery, Nested, Row, row_columns

_CUSTOMER = bindparam("customer_id", type_=Uuid)
_LIMIT = bindparam("limit", type_=Integer)
SCORE = "score_"  # the prefix of a response's score columns
TOTALS = "totals_"  # the prefix of the kept totals' columns


def _newest(entity: Any, customer: Any, at: Any, row_id: Any) -> Select[Any]:
    """The customer's newest `limit` rows of `entity`, newest first (as its list orders them),
    from the index on (customer_id, at, id)."""
    return select(*row_columns(entity)).where(customer == _CUSTOMER).order_by(at.desc(), row_id.desc()).limit(_LIMIT)


INVITATIONS = Nested(_newest(Invitation, Invitation.customer_id, Invitation.created_at, Invitation.id), "invitations")
RESPONSES = Nested(
    # Each answer with its score and whether a follow-up was asked for, as GET /v1/responses lists them.
    select(*row_columns(SurveyResponse), *row_columns(Score, SCORE), Followup.id.label("followup_id"))
    .outerjoin(Score, Score.response_id == SurveyResponse.id)
    .outerjoin(Followup, Followup.response_id == SurveyResponse.id)
    .where(SurveyResponse.customer_id == _CUSTOMER)
    .order_by(SurveyResponse.submitted_at.desc(), SurveyResponse.id.desc())
    .limit(_LIMIT),
    "responses",
)
FEEDBACK = Nested(_newest(Feedback, Feedback.customer_id, Feedback.received_at, Feedback.id), "feedback")
FOLLOWUPS = Nested(_newest(Followup, Followup.customer_id, Followup.created_at, Followup.id), "followups")
SUPPRESSIONS = Nested(_newest(Suppression, Suppression.customer_id, Suppression.created_at, Suppression.id), "suppressions")
VISITS = Nested(
    _newest(
        TouchpointInteraction,
        TouchpointInteraction.customer_id,
        TouchpointInteraction.occurred_at,
        TouchpointInteraction.interaction_id,
    ),
    "visits",
)
LATEST_NPS = Nested(
    select(*row_columns(Score))
    .where(Score.customer_id == _CUSTOMER, Score.metric == "nps", Score.score.is_not(None))
    .order_by(Score.submitted_at.desc(), Score.response_id.desc())
    .limit(1),
    "latest_nps",
    one=True,
)
_LISTS = (INVITATIONS, RESPONSES, FEEDBACK, FOLLOWUPS, SUPPRESSIONS, VISITS)
# The whole view in one statement (one round trip): the profile, its kept totals, and each list
# and the latest NPS answer as a nested column, each still an index range scan of its own.
EXPERIENCE = CompiledQuery(
    select(
        *row_columns(CustomerProfile),
        *row_columns(CustomerExperienceTotals, TOTALS),
        *(nested.column for nested in (*_LISTS, LATEST_NPS)),
    )
    .outerjoin(CustomerExperienceTotals, CustomerExperienceTotals.customer_id == CustomerProfile.id)
    .where(CustomerProfile.id == _CUSTOMER)
)


Values = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExperienceRows:
    """What the experience view shows of one customer: the profile, and each row as its columns'
    values, keyed by the models' attribute names (a response with its score's, or None, and its
    follow-up id)."""

    profile: Row
    invitations: list[Values]
    responses: list[tuple[Values, Values | None, uuid.UUID | None]]
    feedback: list[Values]
    followups: list[Values]
    suppressions: list[Values]
    visits: list[Values]
    totals: Values | None
    latest_nps: Values | None


def _response(values: Values) -> tuple[Values, Values | None, uuid.UUID | None]:
    score = None
    if values[SCORE + "response_id"] is not None:
        score = {k.removeprefix(SCORE): v for k, v in values.items() if k.startswith(SCORE)}
    return values, score, values["followup_id"]


async def read_experience(conn: asyncpg.Connection, customer_id: uuid.UUID, limit: int) -> ExperienceRows | None:
    """The profile, every list of the view (`limit` rows each), the kept totals and the latest
    NPS answer, in one statement; None when the customer is not known here."""
    record = await EXPERIENCE.fetchrow(conn, customer_id=customer_id, limit=limit)
    if record is None:
        return None
    totals = None
    if record[TOTALS + "customer_id"] is not None:
        totals = {k.removeprefix(TOTALS): v for k, v in record.items() if k.startswith(TOTALS)}
    return ExperienceRows(
        profile=Row(record),
        invitations=INVITATIONS.rows(record),
        responses=[_response(r) for r in RESPONSES.rows(record)],
        feedback=FEEDBACK.rows(record),
        followups=FOLLOWUPS.rows(record),
        suppressions=SUPPRESSIONS.rows(record),
        visits=VISITS.rows(record),
        totals=totals,
        latest_nps=LATEST_NPS.row(record),
    )
