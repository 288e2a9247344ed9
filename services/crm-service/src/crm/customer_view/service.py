"""The joined customer view (record, open deals, interaction stats, open tasks) and the
customer's timeline, from the CRM's own tables."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from crm import keyset
from crm.customer_view.repository import Cursor, TimelineRepository
from crm.customer_view.schemas import (
    CustomerView,
    DealStageEntry,
    DocumentEntry,
    InteractionEntry,
    InteractionStats,
    TaskCompletedEntry,
    TaskCreatedEntry,
    Timeline,
)
from crm.customers import service as customers
from crm.customers.schemas import CustomerRead
from crm.deals.repository import DealRepository
from crm.deals.schemas import DealRead
from crm.interactions.repository import InteractionRepository
from crm.tasks.repository import TaskRepository
from crm.tasks.schemas import TaskRead
from cxkit.db import utcnow
from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import Unprocessable

OPEN_DEALS_SHOWN = 50
OPEN_TASKS_SHOWN = 20
_WINDOW_DAYS = 30


def purchase_frequency(purchases: int, first_purchase_at: dt.datetime | None, now: dt.datetime) -> float | None:
    """Purchases per 30 days, measured from the first purchase until now, over at least one
    30-day window (so one purchase yesterday is 1 per 30 days, not 30)."""
    if not purchases or first_purchase_at is None:
        return None
    days = max((now - first_purchase_at).total_seconds() / 86400, _WINDOW_DAYS)
    return round(purchases / days * _WINDOW_DAYS, 2)


async def customer_view(session: AsyncSession, customer_id: uuid.UUID) -> CustomerView:
    customer = await customers.get_customer(session, customer_id)
    deals = DealRepository(session)
    stats = await InteractionRepository(session).stats(customer.id)
    open_deals = await deals.open_deals(customer.id, OPEN_DEALS_SHOWN)
    open_value = await deals.open_value(customer.id)
    open_tasks = await TaskRepository(session).open_for_customer(customer.id, OPEN_TASKS_SHOWN)
    average = stats.average_order_value
    return CustomerView(
        customer=CustomerRead.model_validate(customer),
        open_deals=[DealRead.of(d, s) for d, s in open_deals],
        open_deal_value=open_value,
        interaction_stats=InteractionStats(
            count=stats.count,
            last_interaction_at=stats.last_interaction_at,
            last_contacted_at=stats.last_contacted_at,
            purchases=stats.purchases,
            first_purchase_at=stats.first_purchase_at,
            last_purchase_at=stats.last_purchase_at,
            purchase_total=stats.purchase_total,
            average_order_value=average.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) if average is not None else None,
            purchase_frequency_per_30d=purchase_frequency(stats.purchases, stats.first_purchase_at, utcnow()),
        ),
        open_tasks=[TaskRead.model_validate(t) for t in open_tasks],
        experience=None,
    )


def _decode_cursor(raw: list[object] | None) -> Cursor | None:
    if raw is None:
        return None
    try:
        at, kind, entry_id = raw
        parsed = dt.datetime.fromisoformat(str(at))
        if parsed.tzinfo is None or not isinstance(kind, str) or "\x00" in kind:
            raise ValueError("bad cursor")
        return parsed.astimezone(dt.UTC), kind, uuid.UUID(str(entry_id))
    except (ValueError, TypeError, OverflowError):
        raise Unprocessable(keyset.BAD_CURSOR) from None


async def customer_timeline(session: AsyncSession, customer_id: uuid.UUID, kinds: list[str], page: PageParams) -> Timeline:
    """Newest first. A page is found with one UNION ALL over the sources, then each kind's
    details with one query for the page."""
    customer = await customers.get_customer(session, customer_id)
    repo = TimelineRepository(session)
    keys = await repo.page(customer.id, kinds, _decode_cursor(page.cursor), page.limit)
    next_cursor = None
    if len(keys) > page.limit:
        keys = keys[: page.limit]
        at, kind, last_id = keys[-1]
        next_cursor = encode_cursor([at.isoformat(), kind, str(last_id)])

    def ids(kind: str) -> list[uuid.UUID]:
        return [i for _, k, i in keys if k == kind]

    interactions = await repo.interactions(ids("interaction"))
    changes = await repo.stage_changes(ids("deal_stage_changed"))
    tasks = await repo.tasks(ids("task_created") + ids("task_completed"))
    documents = await repo.documents(ids("document_added"))

    items: list[object] = []
    for at, kind, entry_id in keys:
        if kind == "interaction":
            i = interactions[entry_id]
            items.append(
                InteractionEntry(
                    at=at,
                    id=i.id,
                    type=i.type,
                    channel=i.channel,
                    touchpoint=i.touchpoint,
                    summary=i.summary,
                    amount=i.amount,
                    currency=i.currency,
                )
            )
        elif kind == "deal_stage_changed":
            change, title = changes[entry_id]
            items.append(
                DealStageEntry(
                    at=at,
                    id=change.id,
                    deal_id=change.deal_id,
                    deal_title=title,
                    from_stage=change.from_stage,
                    to_stage=change.to_stage,
                    status=change.to_status,
                    amount=change.amount,
                    changed_by=change.changed_by,
                )
            )
        elif kind == "task_created":
            t = tasks[entry_id]
            items.append(TaskCreatedEntry(at=at, id=t.id, title=t.title, due_at=t.due_at, owner=t.owner, origin=t.origin))
        elif kind == "task_completed":
            t = tasks[entry_id]
            items.append(
                TaskCompletedEntry(
                    at=at, id=t.id, title=t.title, completed_by=t.completed_by, origin=t.origin, origin_ref=t.origin_ref
                )
            )
        else:
            d = documents[entry_id]
            items.append(DocumentEntry(at=at, id=d.id, filename=d.filename, content_type=d.content_type, deal_id=d.deal_id))
    return Timeline(items=items, next_cursor=next_cursor)  # type: ignore[arg-type]
