"""Every feedback query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, update

from cem.customers.lifecycle import CustomerErasure
from cem.customers.repository import announced_customer_with
from cem.feedback.models import Feedback
from cxkit import keyset
from cxkit.db import any_of, equal_to_given, window_conditions
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

NEWEST_FIRST = keyset.Sort(keyset.SortKey("received_at", Feedback.received_at, "datetime"), descending=True)


@dataclass(frozen=True, slots=True)
class FeedbackFilters:
    customer_id: uuid.UUID | None = None
    touchpoint: str | None = None
    channel: str | None = None
    sentiment: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def matching(filters: FeedbackFilters) -> list[ColumnElement[bool]]:
    """The WHERE of the feedback a list (or an export) with these filters shows; the window is
    [since, until) on `received_at`."""
    given = (
        (Feedback.customer_id, filters.customer_id),
        (Feedback.touchpoint, filters.touchpoint),
        (Feedback.channel, filters.channel),
        (Feedback.sentiment_label, filters.sentiment),
    )
    return equal_to_given(given) + window_conditions(Feedback.received_at, filters.since, filters.until)


# One line of a feedback export: the feedback as a read shows it (the sentiment as two cells).
EXPORT_COLUMNS = (
    Feedback.id,
    Feedback.received_at,
    Feedback.customer_id,
    Feedback.email,
    Feedback.touchpoint,
    Feedback.channel,
    Feedback.text,
    Feedback.rating,
    Feedback.rating_scale_min,
    Feedback.rating_scale_max,
    Feedback.sentiment_label,
    Feedback.sentiment_score,
    Feedback.external_ref,
    Feedback.recorded_at,
)
EXPORT_HEADER = ("feedback_id", *(column.key for column in EXPORT_COLUMNS[1:]))


def export_query(filters: FeedbackFilters) -> CompiledQuery:
    """Every piece of feedback the list shows with these filters, newest first, unpaged, for a
    CSV export through a cursor on the pool."""
    return CompiledQuery(keyset.ordered(select(*EXPORT_COLUMNS).where(*matching(filters)), NEWEST_FIRST, Feedback.id))


class FeedbackRepository(Repository[Feedback]):
    model = Feedback

    async def get_by_external_ref(self, channel: str, external_ref: str) -> Feedback | None:
        return await self.session.scalar(
            select(Feedback).where(Feedback.channel == channel, Feedback.external_ref == external_ref)
        )

    async def list_page(self, filters: FeedbackFilters, page: PageParams) -> list[Feedback]:
        """Newest first, keyset on (received_at, id); one row more than a page."""
        stmt = keyset.apply(select(Feedback).where(*matching(filters)), NEWEST_FIRST, Feedback.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Feedback)
            .where(Feedback.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )

    async def link_by_address(self, emails_lower: Collection[str]) -> list[Feedback]:
        """Feedback given under these addresses without a customer goes to the customer now
        announced with each (`emails_lower`: `email_key`s); returns it, oldest first. The
        addresses are found through the partial index of the feedback without a customer."""
        if not emails_lower:
            return []
        linked = (
            await self.session.scalars(
                update(Feedback)
                .where(Feedback.customer_id.is_(None), any_of(Feedback.email_lower, set(emails_lower)))
                .values(customer_id=announced_customer_with(Feedback.email_lower))
                .returning(Feedback.id)
                .execution_options(synchronize_session=False)
            )
        ).all()
        if not linked:
            return []
        rows = await self.session.scalars(
            select(Feedback)
            .where(Feedback.id.in_(linked), Feedback.customer_id.is_not(None))
            .order_by(Feedback.received_at, Feedback.id)
            .execution_options(populate_existing=True)
        )
        return list(rows.all())

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """The customer's feedback keeps its sentiment, rating and times; its text and address go.
        Feedback given under their address without a customer is theirs too. Feedback with an
        address may have been given before the CRM announced the customer (linked now, or when
        it did): its first event carries no key, and its id joins `erasure.unkeyed_ids`."""
        if erasure.email_lower:
            await self.session.execute(
                update(Feedback)
                .where(Feedback.customer_id.is_(None), Feedback.email_lower == erasure.email_lower)
                .values(customer_id=erasure.customer_id)
                .execution_options(synchronize_session=False)
            )
        result = await self.session.execute(
            update(Feedback)
            .where(Feedback.customer_id == erasure.customer_id, Feedback.email.is_not(None))
            .values(text=None, email=None, email_lower=None)
            .returning(Feedback.id)
            .execution_options(synchronize_session=False)
        )
        erasure.unkeyed_ids.extend(result.scalars().all())
        await self.session.execute(
            update(Feedback)
            .where(Feedback.customer_id == erasure.customer_id, Feedback.text.is_not(None))
            .values(text=None)
            .execution_options(synchronize_session=False)
        )
