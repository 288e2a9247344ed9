"""The timeline's queries: one UNION ALL finds a page of (kind, id, time) across the
customer's history, then one query per kind on the page loads the details."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Select, literal, select, tuple_, type_coerce, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from crm.deals.models import Deal, DealStageChange
from crm.documents.models import Document
from crm.experience.models import EXPERIENCE_KINDS, ExperienceEvent
from crm.interactions.models import Interaction
from crm.tasks.models import Task
from cxkit.db import UTCDateTime

Cursor = tuple[dt.datetime, str, uuid.UUID]


def _branches(customer_id: uuid.UUID) -> dict[str, Select[Any]]:
    def row(kind: str, id_col: Any, at_col: Any) -> list[Any]:
        return [literal(kind).label("kind"), id_col.label("id"), at_col.label("at")]

    experience = {
        # One branch per kind, each answered by the (customer_id, kind, occurred_at) index.
        kind: select(*row(kind, ExperienceEvent.id, ExperienceEvent.occurred_at)).where(
            ExperienceEvent.customer_id == customer_id, ExperienceEvent.kind == kind
        )
        for kind in EXPERIENCE_KINDS
    }
    return experience | {
        "interaction": select(*row("interaction", Interaction.id, Interaction.occurred_at)).where(
            Interaction.customer_id == customer_id
        ),
        "deal_stage_changed": select(*row("deal_stage_changed", DealStageChange.id, DealStageChange.changed_at))
        .join(Deal, Deal.id == DealStageChange.deal_id)
        .where(Deal.customer_id == customer_id),
        "task_created": select(*row("task_created", Task.id, Task.created_at)).where(Task.customer_id == customer_id),
        "task_completed": select(*row("task_completed", Task.id, Task.completed_at)).where(
            Task.customer_id == customer_id, Task.completed_at.is_not(None)
        ),
        "document_added": select(*row("document_added", Document.id, Document.created_at)).where(
            Document.customer_id == customer_id
        ),
    }


class TimelineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, customer_id: uuid.UUID, kinds: list[str], before: Cursor | None, limit: int) -> list[Cursor]:
        """Newest first, keyset on (at, kind, id); one row more than asked."""
        branches = [b for kind, b in _branches(customer_id).items() if kind in kinds]
        entries = union_all(*branches).subquery("entries")
        at = type_coerce(entries.c.at, UTCDateTime)  # UTC handling on SQLite, no SQL cast
        stmt = select(entries.c.kind, entries.c.id, at)
        if before is not None:
            stmt = stmt.where(tuple_(entries.c.at, entries.c.kind, entries.c.id) < tuple_(*before))
        stmt = stmt.order_by(entries.c.at.desc(), entries.c.kind.desc(), entries.c.id.desc()).limit(limit + 1)
        return [(a, k, i) for k, i, a in await self.session.execute(stmt)]

    async def interactions(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Interaction]:
        return (
            {r.id: r for r in (await self.session.scalars(select(Interaction).where(Interaction.id.in_(ids)))).all()}
            if ids
            else {}
        )

    async def stage_changes(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[DealStageChange, str]]:
        if not ids:
            return {}
        stmt = (
            select(DealStageChange, Deal.title).join(Deal, Deal.id == DealStageChange.deal_id).where(DealStageChange.id.in_(ids))
        )
        return {h.id: (h, title) for h, title in await self.session.execute(stmt)}

    async def tasks(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Task]:
        return {r.id: r for r in (await self.session.scalars(select(Task).where(Task.id.in_(ids)))).all()} if ids else {}

    async def documents(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Document]:
        return {r.id: r for r in (await self.session.scalars(select(Document).where(Document.id.in_(ids)))).all()} if ids else {}
