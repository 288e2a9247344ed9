"""Every query of the suppressions: stored, listed, counted, linked, re-pointed and erased."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from cem.customers.lifecycle import CustomerErasure
from cem.customers.models import CustomerProfile
from cem.customers.repository import announced_customer_with
from cem.invitations.models import Invitation
from cem.report_filters import ReportFilters
from cem.suppressions.models import OptOut, Suppression, address_hash, throttled_event_id
from cxkit import keyset
from cxkit.db import any_of, insert_new
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository, SessionRepository

NEWEST_FIRST = keyset.Sort(keyset.SortKey("created_at", Suppression.created_at, "datetime"), descending=True)
NEWEST_OPT_OUTS_FIRST = keyset.Sort(keyset.SortKey("created_at", OptOut.created_at, "datetime"), descending=True)


def _sql_address_hash(email_lower: Any) -> Any:
    """`address_hash` in SQL, of a stored `email_key` (the hash of the key as Python made it;
    never of an address SQL lower-cases)."""
    return func.encode(func.sha256(func.convert_to(email_lower, "UTF8")), "hex")


class SuppressionRepository(Repository[Suppression]):
    model = Suppression

    async def insert_new(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert suppressions, skipping any whose (survey, interaction) was judged already; returns the ids inserted."""
        return await insert_new(self.session, Suppression.__table__, rows, "id")

    async def recent(
        self, customer_ids: Collection[uuid.UUID], emails_lower: Collection[str], since: dt.datetime
    ) -> list[tuple[uuid.UUID, uuid.UUID | None, str | None, dt.datetime]]:
        """(survey_id, customer_id, email_lower, created_at) of suppressions of these recipients after `since`."""
        conditions = []
        if customer_ids:
            conditions.append(Suppression.customer_id.in_(set(customer_ids)))
        if emails_lower:
            conditions.append(Suppression.email_lower.in_(set(emails_lower)))
        if not conditions:
            return []
        stmt = select(Suppression.survey_id, Suppression.customer_id, Suppression.email_lower, Suppression.created_at).where(
            or_(*conditions), Suppression.created_at > since
        )
        return [(r[0], r[1], r[2], r[3]) for r in (await self.session.execute(stmt)).all()]

    async def list_page(
        self,
        *,
        survey_id: uuid.UUID | None,
        customer_id: uuid.UUID | None,
        reason: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        page: PageParams,
    ) -> list[Suppression]:
        """Newest first, keyset on (created_at, id); one row more than a page."""
        stmt = select(Suppression)
        if survey_id is not None:
            stmt = stmt.where(Suppression.survey_id == survey_id)
        if customer_id is not None:
            stmt = stmt.where(Suppression.customer_id == customer_id)
        if reason is not None:
            stmt = stmt.where(Suppression.reason == reason)
        stmt = keyset.apply(keyset.within(stmt, Suppression.created_at, since, until), NEWEST_FIRST, Suppression.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def counts_by_reason(self, filters: ReportFilters) -> dict[str, int]:
        stmt = (
            select(Suppression.reason, func.count())
            .where(*filters.where(survey=Suppression.survey_id, touchpoint=Suppression.touchpoint, at=Suppression.created_at))
            .group_by(Suppression.reason)
        )
        return {reason: int(n) for reason, n in (await self.session.execute(stmt)).all()}

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        if emails_lower:
            await self.session.execute(
                update(Suppression)
                .where(Suppression.customer_id.is_(None), any_of(Suppression.email_lower, set(emails_lower)))
                .values(customer_id=announced_customer_with(Suppression.email_lower))
                .execution_options(synchronize_session=False)
            )
            # An address that opted out before its customer was announced: the customer did.
            await self.session.execute(
                update(CustomerProfile)
                .where(
                    any_of(CustomerProfile.email_lower, set(emails_lower)),
                    CustomerProfile.opted_out_at.is_(None),
                    OptOut.address_hash == _sql_address_hash(CustomerProfile.email_lower),
                )
                .values(survey_opt_out=True, opted_out_at=OptOut.created_at)
                .execution_options(synchronize_session=False)
            )

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Suppression)
            .where(Suppression.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            update(OptOut)
            .where(OptOut.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """An erased customer's suppressions keep their survey, reason and time; the address goes.
        Those that have one were made under it before the CRM announced the customer (linked
        now, or when it did): their events carry it and no key, and join `erasure.unkeyed_ids`
        by their event ids. Opt-outs stay: they keep the address only as its hash, and the
        address must never be invited again."""
        if erasure.email_lower:
            await self.session.execute(
                update(Suppression)
                .where(Suppression.customer_id.is_(None), Suppression.email_lower == erasure.email_lower)
                .values(customer_id=erasure.customer_id)
                .execution_options(synchronize_session=False)
            )
        result = await self.session.execute(
            update(Suppression)
            .where(Suppression.customer_id == erasure.customer_id, Suppression.email.is_not(None))
            .values(email=None, email_lower=None)
            .returning(Suppression.id)
            .execution_options(synchronize_session=False)
        )
        erasure.unkeyed_ids.extend(throttled_event_id(i) for i in result.scalars().all())


class OptOutRepository(SessionRepository):
    """The recipients who asked, from a survey link, for no more surveys."""

    async def record(
        self,
        *,
        email: str | None,
        customer_id: uuid.UUID | None,
        survey_id: uuid.UUID,
        invitation_id: uuid.UUID,
        now: dt.datetime,
    ) -> bool:
        """Keep the request; False when the address had opted out already (nothing kept)."""
        stmt = (
            insert(OptOut)
            .values(
                address_hash=address_hash(email) if email else None,
                customer_id=customer_id,
                survey_id=survey_id,
                invitation_id=invitation_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["address_hash"], index_where=OptOut.address_hash.is_not(None))
            .returning(OptOut.id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def remove(self, *, email: str | None, customer_id: uuid.UUID | None) -> bool:
        """Forget the opt-outs of the address and of the customer; whether there were any."""
        conditions = []
        if email:
            conditions.append(OptOut.address_hash == address_hash(email))
        if customer_id is not None:
            conditions.append(OptOut.customer_id == customer_id)
        if not conditions:
            return False
        result = await self.session.execute(delete(OptOut).where(or_(*conditions)).returning(OptOut.id))
        return bool(result.all())

    async def list_page(
        self,
        *,
        email: str | None,
        customer_id: uuid.UUID | None,
        survey_id: uuid.UUID | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        page: PageParams,
    ) -> list[OptOut]:
        """Newest first, keyset on (created_at, id); one row more than a page. An address is
        found through its hash (the address itself is not kept)."""
        stmt = select(OptOut)
        if email is not None:
            stmt = stmt.where(OptOut.address_hash == address_hash(email))
        if customer_id is not None:
            stmt = stmt.where(OptOut.customer_id == customer_id)
        if survey_id is not None:
            stmt = stmt.where(OptOut.survey_id == survey_id)
        stmt = keyset.apply(keyset.within(stmt, OptOut.created_at, since, until), NEWEST_OPT_OUTS_FIRST, OptOut.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def count(self, filters: ReportFilters) -> int:
        """Opt-outs made in the filters' window from links of invitations to their survey, at
        their touchpoint (the invitation's); undone ones are gone."""
        stmt = (
            select(func.count())
            .select_from(OptOut)
            .outerjoin(Invitation, Invitation.id == OptOut.invitation_id)
            .where(*filters.where(survey=OptOut.survey_id, touchpoint=Invitation.touchpoint, at=OptOut.created_at))
        )
        return int(await self.session.scalar(stmt) or 0)

    async def opted_out(self, emails_lower: Collection[str]) -> set[str]:
        """Those of the (lower-cased) addresses that opted out."""
        if not emails_lower:
            return set()
        hashes = {address_hash(e): e for e in emails_lower}
        found = await self.session.scalars(select(OptOut.address_hash).where(any_of(OptOut.address_hash, set(hashes))))
        return {hashes[h] for h in found.all() if h is not None}
