"""Suppressions: announced when the invitation rules make one, listed for the API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.db import SOURCE, OutboxMessage
from cem.fields import check_window
from cem.suppressions.models import OptOut, Suppression, throttled_event_id
from cem.suppressions.repository import NEWEST_FIRST, NEWEST_OPT_OUTS_FIRST, OptOutRepository, SuppressionRepository
from cxkit import keyset
from cxkit.events.payloads import SurveyThrottled
from cxkit.http.pagination import PageParams
from cxkit.kafka.outbox import add_event


def announce_suppression(session: AsyncSession, row: dict[str, Any]) -> None:
    """`survey.throttled` for every suppression: a customer's, or a bare address's (with `email`)."""
    add_event(
        session,
        OutboxMessage,
        "survey.throttled",
        source=SOURCE,
        subject=row["customer_id"],
        event_id=throttled_event_id(row["id"]),
        data=SurveyThrottled(
            survey_id=row["survey_id"],
            customer_id=row["customer_id"],
            email=row.get("email") if row["customer_id"] is None else None,
            reason=row["reason"],
            touchpoint=row["touchpoint"],
            interaction_id=row["interaction_id"],
        ),
    )


async def list_suppressions(
    session: AsyncSession,
    page: PageParams,
    *,
    survey_id: uuid.UUID | None,
    customer_id: uuid.UUID | None,
    reason: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> tuple[list[Suppression], str | None]:
    check_window(since, until)
    rows = await SuppressionRepository(session).list_page(
        survey_id=survey_id,
        customer_id=customer_id,
        reason=reason,
        since=since,
        until=until,
        page=page,
    )
    return keyset.cut(rows, NEWEST_FIRST, page)


async def list_opt_outs(
    session: AsyncSession,
    page: PageParams,
    *,
    email: str | None,
    customer_id: uuid.UUID | None,
    survey_id: uuid.UUID | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> tuple[list[OptOut], str | None]:
    check_window(since, until)
    rows = await OptOutRepository(session).list_page(
        email=email, customer_id=customer_id, survey_id=survey_id, since=since, until=until, page=page
    )
    return keyset.cut(rows, NEWEST_OPT_OUTS_FIRST, page)
