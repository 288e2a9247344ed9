"""Every feedback query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection

from sqlalchemy import String, func, select, update

from cem.customers.lifecycle import CustomerErasure
from cem.customers.repository import announced_customer_with
from cem.feedback.models import Feedback
from cxkit import keyset
from cxkit.db import any_of
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository

NEWEST_FIRST = keyset.Sort(keyset.SortKey("received_at", Feedback.received_at, "datetime"), descending=True)


class FeedbackRepository(Repository[Feedback]):
    model = Feedback

    async def get_by_external_ref(self, channel: str, external_ref: str) -> Feedback | None:
        return await self.session.scalar(
            select(Feedback).where(Feedback.channel == channel, Feedback.external_ref == external_ref)
        )

    async def list_page(
        self,
        *,
        customer_id: uuid.UUID | None,
        touchpoint: str | None,
        channel: str | None,
        sentiment: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        page: PageParams,
    ) -> list[Feedback]:
        """Newest first, keyset on (received_at, id); one row more than a page."""
        stmt = select(Feedback)
        if customer_id is not None:
            stmt = stmt.where(Feedback.customer_id == customer_id)
        if touchpoint is not None:
            stmt = stmt.where(Feedback.touchpoint == touchpoint)
        if channel is not None:
            stmt = stmt.where(Feedback.channel == channel)
        if sentiment is not None:
            stmt = stmt.where(Feedback.sentiment_label == sentiment)
        stmt = keyset.apply(keyset.within(stmt, Feedback.received_at, since, until), NEWEST_FIRST, Feedback.id, page)
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
        announced with each; returns it, oldest first. The addresses are found through the
        partial index of the feedback without a customer."""
        if not emails_lower:
            return []
        linked = (
            await self.session.scalars(
                update(Feedback)
                .where(Feedback.customer_id.is_(None), any_of(func.lower(Feedback.email, type_=String), set(emails_lower)))
                .values(customer_id=announced_customer_with(func.lower(Feedback.email)))
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
                .where(Feedback.customer_id.is_(None), func.lower(Feedback.email) == erasure.email_lower)
                .values(customer_id=erasure.customer_id)
                .execution_options(synchronize_session=False)
            )
        result = await self.session.execute(
            update(Feedback)
            .where(Feedback.customer_id == erasure.customer_id, Feedback.email.is_not(None))
            .values(text=None, email=None)
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
