"""Every follow-up query."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, not_, select, update

from cem.customers.lifecycle import CustomerErasure
from cem.customers.models import CustomerProfile
from cem.followups.models import Followup
from cem.surveys.models import Survey
from cxkit import keyset
from cxkit.db import equal_to_given, window_conditions
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

# `sort`: newest first by default; `due_at` puts the most urgent first (those without an SLA last).
SORT_KEYS = (
    keyset.SortKey("created_at", Followup.created_at, "datetime"),
    keyset.SortKey("due_at", Followup.due_at, "datetime", nullable=True),
)
DEFAULT_SORT = "-created_at"


@dataclass(frozen=True)
class FollowupFilters:
    """What `GET /v1/followups` narrows by; None is no filter."""

    status: str | None = None
    overdue: bool | None = None  # open and past its due time (announced overdue or not yet)
    survey_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    touchpoint: str | None = None
    metric: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def where(self, now: dt.datetime) -> list[Any]:
        """The WHERE of the follow-ups a list (or an export) with these filters shows, lateness
        judged at `now`; the window is [since, until) on `created_at`."""
        conditions: list[Any] = equal_to_given(
            (
                (Followup.status, self.status),
                (Followup.survey_id, self.survey_id),
                (Followup.customer_id, self.customer_id),
                (Followup.touchpoint, self.touchpoint),
                (Followup.metric, self.metric),
            )
        )
        if self.overdue is not None:
            conditions.append(overdue_at(now) if self.overdue else not_(overdue_at(now)))
        return conditions + window_conditions(Followup.created_at, self.since, self.until)


def overdue_at(now: dt.datetime) -> Any:
    """Open and past its due time at `now` (announced overdue or not yet)."""
    return and_(Followup.status == "open", Followup.due_at.is_not(None), Followup.due_at <= now)


# Who the follow-up is about, as the CEM knows them (none once erased or not announced yet).
CUSTOMER_COLUMNS = (CustomerProfile.name.label("customer_name"), CustomerProfile.email.label("customer_email"))


def _with_customer(stmt: Any) -> Any:
    """`stmt` (selecting from follow-ups) joined to the CEM's copy of each one's customer."""
    return stmt.outerjoin(CustomerProfile, CustomerProfile.id == Followup.customer_id)


# One line of a follow-up export: the follow-up as the list shows it.
EXPORT_COLUMNS = (
    Followup.id,
    Followup.created_at,
    Followup.customer_id,
    *CUSTOMER_COLUMNS,
    Followup.response_id,
    Followup.survey_id,
    Followup.metric,
    Followup.score,
    Followup.touchpoint,
    Followup.reason,
    Followup.status,
    Followup.due_at,
)
EXPORT_TAIL = (Followup.overdue_at, Followup.closed_at, Followup.closed_by, Followup.task_id)
EXPORT_HEADER = ("followup_id", *(c.key for c in EXPORT_COLUMNS[1:]), "overdue", *(c.key for c in EXPORT_TAIL))


def export_query(filters: FollowupFilters, sort: keyset.Sort, now: dt.datetime) -> CompiledQuery:
    """Every follow-up the list shows with these filters, in the list's order, unpaged, for a
    CSV export through a cursor on the pool; `overdue` judged at `now`."""
    columns = (*EXPORT_COLUMNS, overdue_at(now).label("overdue"), *EXPORT_TAIL)
    stmt = _with_customer(select(*columns)).where(*filters.where(now))
    return CompiledQuery(keyset.ordered(stmt, sort, Followup.id))


class FollowupRepository(Repository[Followup]):
    model = Followup

    async def list_page(self, filters: FollowupFilters, sort: keyset.Sort, now: dt.datetime, page: PageParams) -> list[Any]:
        """In `sort`'s order, keyset on (its key, id); one row more than a page. Each row is the
        follow-up (`Followup`) with its `customer_name` and `customer_email`."""
        stmt = _with_customer(select(Followup, *CUSTOMER_COLUMNS)).where(*filters.where(now))
        return await keyset.fetch(self.rows_of, stmt, sort, Followup.id, page)

    async def get_with_customer(self, followup_id: uuid.UUID) -> Any:
        """The follow-up with its `customer_name` and `customer_email`, or None."""
        stmt = _with_customer(select(Followup, *CUSTOMER_COLUMNS)).where(Followup.id == followup_id)
        return (await self.session.execute(stmt)).first()

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Followup)
            .where(Followup.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """The customer's open follow-ups are cancelled (`status` `cancelled`, never closed: nobody
        followed them up, so they count in no recovery and no re-survey, are never announced
        overdue, and a later completion of their CRM task leaves them alone). Their closed ones
        stay, as the scores do. No free text to scrub: a follow-up holds the score, a reason made
        of the score and the survey's name, and who at the company closed it, nothing personal of
        the customer (the answer's comment went only into the `followup.requested` event, whose
        personal fields the erasure blanks)."""
        await self.session.execute(
            update(Followup)
            .where(Followup.customer_id == erasure.customer_id, Followup.status == "open")
            .values(status="cancelled")
            .execution_options(synchronize_session=False)
        )

    async def close(self, followup_id: uuid.UUID, *, at: dt.datetime, by: str | None, task_id: uuid.UUID) -> bool:
        """Close an open follow-up; False when there is none open with this id. Closed while its
        survey's re-survey is off, its re-survey is judged at once (`resurveyed_at`: none), so
        turning re-survey on later asks only the follow-ups closed from then on."""
        resurvey_on = select(Survey.id).where(Survey.id == Followup.survey_id, Survey.resurvey_after_days.is_not(None)).exists()
        result = await self.session.execute(
            update(Followup)
            .where(Followup.id == followup_id, Followup.status == "open")
            .values(
                status="closed",
                closed_at=at,
                closed_by=by,
                task_id=task_id,
                resurveyed_at=case((resurvey_on, None), else_=at),
            )
            .returning(Followup.id)
            .execution_options(synchronize_session=False)
        )
        return result.first() is not None

    async def _claim(self, conditions: list[Any], order: list[Any], limit: int, **values: Any) -> list[Followup]:
        """Follow-ups matching `conditions`, the first `limit` in `order`, updated with `values` in
        the same statement; SKIP LOCKED, so two schedulers never take one twice."""
        taken = select(Followup.id).where(*conditions).order_by(*order).limit(limit).with_for_update(skip_locked=True)
        result = await self.session.scalars(
            update(Followup)
            .where(Followup.id.in_(taken.scalar_subquery()))
            .values(**values)
            .returning(Followup)
            .execution_options(synchronize_session=False)
        )
        return list(result.all())

    async def claim_overdue(self, now: dt.datetime, limit: int) -> list[Followup]:
        """Open follow-ups past their due time not announced yet, oldest due first, marked
        announced (`overdue_at`). An erased customer's are never announced (the erasure cancels
        them; one left open, say raised by a replay, is skipped too)."""
        erased = (
            select(CustomerProfile.id)
            .where(CustomerProfile.id == Followup.customer_id, CustomerProfile.erased_at.is_not(None))
            .exists()
        )
        rows = await self._claim(
            [Followup.status == "open", Followup.overdue_at.is_(None), Followup.due_at <= now, not_(erased)],
            [Followup.due_at, Followup.id],
            limit,
            overdue_at=now,
        )
        return sorted(rows, key=lambda f: (f.due_at, f.id))

    async def claim_to_resurvey(
        self, survey_id: uuid.UUID, closed_after: dt.datetime, closed_before: dt.datetime, now: dt.datetime, limit: int
    ) -> list[Followup]:
        """The survey's follow-ups closed in (`closed_after`, `closed_before`] whose re-survey is
        not judged yet, marked judged (`resurveyed_at`). Older ones are left alone: their re-survey
        is long past (a stopped scheduler, a survey paused, or follow-ups closed before re-survey was
        judged at close)."""
        rows = await self._claim(
            [
                Followup.survey_id == survey_id,
                Followup.status == "closed",
                Followup.resurveyed_at.is_(None),
                Followup.closed_at > closed_after,
                Followup.closed_at <= closed_before,
            ],
            [Followup.closed_at, Followup.id],
            limit,
            resurveyed_at=now,
        )
        return sorted(rows, key=lambda f: (f.closed_at, f.id))
