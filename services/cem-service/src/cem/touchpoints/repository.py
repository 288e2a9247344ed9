"""Every touchpoint query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import delete, or_, select, update

from cem.customers.lifecycle import CustomerErasure
from cem.customers.models import CustomerProfile
from cem.customers.repository import announced_customer_with
from cem.journeys.models import Journey, JourneyStep
from cem.surveys.models import Survey
from cem.touchpoints.models import Touchpoint, TouchpointInteraction
from cxkit import keyset
from cxkit.db import any_of, locking, next_version
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import UnnestInsert
from cxkit.repository import Repository

BY_KEY = keyset.Sort(keyset.SortKey("key", Touchpoint.key, "str"), descending=False)


class TouchpointRepository(Repository[Touchpoint]):
    model = Touchpoint

    async def get_by_key(self, key: str) -> Touchpoint | None:
        return await self.session.scalar(select(Touchpoint).where(Touchpoint.key == key))

    async def existing_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        return set((await self.session.scalars(select(Touchpoint.key).where(Touchpoint.key.in_(set(keys))))).all())

    async def hold_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys of `keys` that exist, their rows locked FOR KEY SHARE until the transaction
        ends, as a foreign key would hold them: for a write that stores these keys (a survey's
        touchpoints). A delete (which locks the row FOR UPDATE, which conflicts with it) waits
        for that write's commit and then sees what it wrote; a write that comes second waits for
        the delete's commit and then finds no row. Updates that keep the key are not held up."""
        if not keys:
            return set()
        stmt = locking(select(Touchpoint.key).where(Touchpoint.key.in_(set(keys))), "key share")
        return set((await self.session.scalars(stmt)).all())

    async def by_keys_or_ids(self, keys: Sequence[str], ids: Sequence[uuid.UUID]) -> list[Touchpoint]:
        conditions = []
        if keys:
            conditions.append(Touchpoint.key.in_(set(keys)))
        if ids:
            conditions.append(Touchpoint.id.in_(set(ids)))
        if not conditions:
            return []
        return list((await self.session.scalars(select(Touchpoint).where(or_(*conditions)))).all())

    async def by_ids(self, ids: Sequence[uuid.UUID]) -> list[Touchpoint]:
        if not ids:
            return []
        return list((await self.session.scalars(select(Touchpoint).where(Touchpoint.id.in_(set(ids))))).all())

    async def list_page(
        self,
        *,
        page: PageParams,
        channel: str | None = None,
        journey_stage: str | None = None,
    ) -> list[Touchpoint]:
        """Ordered by key, keyset on (key, id); one row more than a page."""
        stmt = select(Touchpoint)
        if channel is not None:
            stmt = stmt.where(Touchpoint.channel == channel)
        if journey_stage is not None:
            stmt = stmt.where(Touchpoint.journey_stage == journey_stage)
        return list((await self.session.scalars(keyset.apply(stmt, BY_KEY, Touchpoint.id, page))).all())

    async def touch_journeys_using(self, touchpoint_id: uuid.UUID) -> None:
        """A new version for every journey that shows the touchpoint (a journey serves its
        touchpoints' names, channels and targets, so their copies are no longer current)."""
        await self.session.execute(
            update(Journey)
            .where(Journey.id.in_(select(JourneyStep.journey_id).where(JourneyStep.touchpoint_id == touchpoint_id)))
            .values(**next_version(Journey))
            .execution_options(synchronize_session=False)
        )

    async def journeys_using(self, touchpoint_id: uuid.UUID) -> list[str]:
        stmt = (
            select(Journey.name)
            .join(JourneyStep, JourneyStep.journey_id == Journey.id)
            .where(JourneyStep.touchpoint_id == touchpoint_id)
            .order_by(Journey.name)
            .limit(10)
        )
        return list((await self.session.scalars(stmt)).all())

    async def surveys_using(self, key: str) -> list[str]:
        stmt = (
            select(Survey.name)
            .where(or_(Survey.touchpoint == key, Survey.trigger_touchpoint == key))
            .order_by(Survey.name)
            .limit(10)
        )
        return list((await self.session.scalars(stmt)).all())

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        """Interactions kept under an address go to the customer now announced with it."""
        if emails_lower:
            await self.session.execute(
                update(TouchpointInteraction)
                .where(TouchpointInteraction.customer_id.is_(None), any_of(TouchpointInteraction.email_lower, set(emails_lower)))
                .values(customer_id=announced_customer_with(TouchpointInteraction.email_lower))
                .execution_options(synchronize_session=False)
            )

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(TouchpointInteraction)
            .where(TouchpointInteraction.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """An erased customer's interactions keep their type, touchpoint, time and amount; the
        summary, metadata and address go."""
        if erasure.email_lower:
            await self.session.execute(
                update(TouchpointInteraction)
                .where(TouchpointInteraction.customer_id.is_(None), TouchpointInteraction.email_lower == erasure.email_lower)
                .values(customer_id=erasure.customer_id)
                .execution_options(synchronize_session=False)
            )
        await self.session.execute(
            update(TouchpointInteraction)
            .where(TouchpointInteraction.customer_id == erasure.customer_id)
            .values(summary=None, details={}, email=None, email_lower=None)
            .execution_options(synchronize_session=False)
        )

    async def delete_rebuildable_interactions(self) -> None:
        """Before a replay: every interaction except an erased customer's (the topic still holds
        their personal data, so theirs are kept as they are and the replay skips them)."""
        erased = select(CustomerProfile.id).where(CustomerProfile.erased_at.is_not(None))
        await self.session.execute(
            delete(TouchpointInteraction).where(
                or_(TouchpointInteraction.customer_id.is_(None), TouchpointInteraction.customer_id.not_in(erased))
            )
        )


# --- a poll's worth of `interaction.recorded` events (the consumer's hot path) -----------------
# Statements on the consumer's asyncpg connection (`cxkit.db.session_connection`):
# one per poll whatever its size, each prepared once per connection.


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """The columns of a customer profile that storing an interaction and the survey rules read."""

    id: uuid.UUID
    email: str | None
    survey_opt_out: bool
    erased_at: dt.datetime | None
    merged_into: uuid.UUID | None


# Held as `CustomerProfileRepository.hold` holds one (FOR KEY SHARE, in id order), so that an
# erasure or a merge of a customer under way is waited for and seen, and one that comes later
# waits for the poll's rows.
_PROFILES = (
    "SELECT id, email, survey_opt_out, erased_at, merged_into FROM customer_profiles WHERE id = ANY($1::uuid[]) "
    "ORDER BY id FOR KEY SHARE"
)

# The columns of an interaction batch, in order; `recorded_at` is one value for the batch. Each
# row's own `id` is a new time-ordered one (`cxkit.ids.new_ids`), as every other table's: a
# poll's rows go in at the right edge of the primary key, not on a random page each.
BATCH_COLUMNS = (
    "id",
    "interaction_id",
    "customer_id",
    "email",
    "email_lower",
    "touchpoint",
    "type",
    "channel",
    "occurred_at",
    "summary",
    "amount",
    "currency",
    "metadata",
    "source",
)
_INSERT_BATCH = UnnestInsert(TouchpointInteraction.__table__, BATCH_COLUMNS, per_batch=["recorded_at"])


async def profiles_by_ids(conn: asyncpg.Connection, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, ProfileRow]:
    """The profiles with these ids, held until the transaction ends, in one query."""
    if not ids:
        return {}
    return {row[0]: ProfileRow(*row) for row in await conn.fetch(_PROFILES, list(ids))}


async def insert_interaction_batch(conn: asyncpg.Connection, columns: Sequence[Sequence[Any]], recorded_at: dt.datetime) -> int:
    """Insert interactions given column-wise (`BATCH_COLUMNS`; `metadata` as JSON text) in one
    statement; one already stored is skipped. Returns the number of rows inserted."""
    return await _INSERT_BATCH.execute(conn, columns, recorded_at)
