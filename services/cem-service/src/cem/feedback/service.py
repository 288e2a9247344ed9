"""Feedback rules: linked to a customer when we know them, scored for sentiment locally, announced."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.models import email_key
from cem.db import SOURCE, OutboxMessage
from cem.feedback import repository
from cem.feedback.models import Feedback
from cem.feedback.repository import NEWEST_FIRST, FeedbackFilters, FeedbackRepository
from cem.feedback.schemas import FeedbackCreate, FeedbackRead, SentimentRead
from cem.feedback.sentiment import sentiment_of
from cem.fields import CLOCK_SKEW
from cem.invitations.service import resolve_recipient
from cem.touchpoints.repository import TouchpointRepository
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.events.payloads import FeedbackReceived
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, field_problem
from cxkit.kafka.outbox import add_event
from cxkit.pg_pool import CompiledQuery


def to_read(feedback: Feedback) -> FeedbackRead:
    return FeedbackRead(
        id=feedback.id,
        customer_id=feedback.customer_id,
        email=feedback.email,
        touchpoint=feedback.touchpoint,
        channel=feedback.channel,
        text=feedback.text,
        rating=feedback.rating,
        rating_scale_min=feedback.rating_scale_min,
        rating_scale_max=feedback.rating_scale_max,
        sentiment=SentimentRead(label=feedback.sentiment_label, score=feedback.sentiment_score),  # type: ignore[arg-type]
        external_ref=feedback.external_ref,
        received_at=feedback.received_at,
        recorded_at=feedback.recorded_at,
    )


async def record_feedback(session: AsyncSession, data: FeedbackCreate) -> Feedback:
    now = utcnow()
    if data.received_at is not None and data.received_at > now + CLOCK_SKEW:
        raise field_problem(["body", "received_at"], "received_at is in the future")
    if data.touchpoint and not await TouchpointRepository(session).existing_keys([data.touchpoint]):
        raise field_problem(["body", "touchpoint"], f"no touchpoint with key {data.touchpoint!r}")
    repo = FeedbackRepository(session)
    duplicate = f"feedback {data.external_ref!r} from {data.channel} was already recorded"
    if data.external_ref and await repo.get_by_external_ref(data.channel, data.external_ref):
        raise Conflict(duplicate)
    profile, email = await resolve_recipient(session, data.customer_id, str(data.email) if data.email else None)
    sentiment = sentiment_of(data.text)
    has_rating = data.rating is not None
    # An erased customer's feedback still counts (sentiment, rating), without its text or address.
    erased = profile is not None and profile.erased_at is not None
    kept_email = None if erased else email
    feedback = Feedback(
        id=new_id(),
        customer_id=profile.id if profile else None,
        email=kept_email,
        email_lower=email_key(kept_email) if kept_email else None,
        touchpoint=data.touchpoint,
        channel=data.channel,
        text=None if erased else data.text,
        rating=data.rating,
        rating_scale_min=data.rating_scale_min if has_rating else None,
        rating_scale_max=data.rating_scale_max if has_rating else None,
        sentiment_label=sentiment.label,
        sentiment_score=sentiment.score,
        external_ref=data.external_ref,
        received_at=data.received_at or now,
        recorded_at=now,
    )
    repo.add(feedback)
    try:
        await repo.flush()
    except IntegrityError:
        raise Conflict(duplicate) from None
    _announce(session, feedback)
    return feedback


def _announce(session: AsyncSession, feedback: Feedback) -> None:
    """`feedback.received`, keyed by the feedback's customer (none when it was given under an
    address no customer was known by)."""
    add_event(
        session,
        OutboxMessage,
        "feedback.received",
        source=SOURCE,
        subject=feedback.customer_id,
        data=FeedbackReceived(
            feedback_id=feedback.id,
            customer_id=feedback.customer_id,
            touchpoint=feedback.touchpoint,
            channel=feedback.channel,
            text=feedback.text,
            rating=feedback.rating,
            sentiment_label=feedback.sentiment_label,
            sentiment_score=feedback.sentiment_score,
            received_at=feedback.received_at,
            rating_scale_min=feedback.rating_scale_min,
            rating_scale_max=feedback.rating_scale_max,
        ),
    )


class FeedbackData(FeedbackRepository):
    """The feedback's part of a customer's data (`cem.customer_data`): the repository's merge and
    erasure, and feedback given under an address no customer was known by, which goes to the
    customer the CRM announces with that address. Each is announced again then, as
    `feedback.received` keyed by its customer (the same `feedback_id`), so the CRM's view of the
    customer shows it too."""

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        for feedback in await self.link_by_address(emails_lower):
            _announce(self.session, feedback)


async def get_feedback(session: AsyncSession, feedback_id: uuid.UUID) -> Feedback:
    feedback = await FeedbackRepository(session).get(feedback_id)
    if feedback is None:
        raise NotFound(f"feedback {feedback_id} does not exist")
    return feedback


async def list_feedback(session: AsyncSession, page: PageParams, filters: FeedbackFilters) -> tuple[list[Feedback], str | None]:
    rows = await FeedbackRepository(session).list_page(filters, page)
    return keyset.cut(rows, NEWEST_FIRST, page)


def export_query(filters: FeedbackFilters) -> CompiledQuery:
    """The statement of a feedback export: what `list_feedback` shows, unpaged."""
    return repository.export_query(filters)
