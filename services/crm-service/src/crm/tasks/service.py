"""Task rules: follow-ups owned by someone (the customer's owner unless told), completed
once, and every completion announced as `task.completed`."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.customers import service as customers
from crm.customers.models import Customer
from crm.db import SOURCE, OutboxMessage
from crm.deals.models import Deal
from crm.deals.repository import DealRepository
from crm.tasks import repository
from crm.tasks.models import Task
from crm.tasks.repository import SORT_KEYS, TaskFilters, TaskRepository
from crm.tasks.schemas import TaskCreate, TaskUpdate
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.events.payloads import TaskCompleted, TaskOverdue
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, Unprocessable, field_problem
from cxkit.kafka.outbox import add_event
from cxkit.pg_pool import CompiledQuery

log = logging.getLogger(__name__)


def _body_error(field: str, msg: str) -> Unprocessable:
    """A 422 naming the body field at fault, worded like a request-validation error (`body.<field>: <msg>`)."""
    return field_problem(["body", field], msg, "reference")


def _missing_deal(deal_id: uuid.UUID | None) -> Unprocessable:
    return _body_error("deal_id", f"deal {deal_id} does not exist")


async def _deal(session: AsyncSession, deal_id: uuid.UUID) -> Deal:
    deal = await DealRepository(session).get(deal_id)
    if deal is None:
        raise _missing_deal(deal_id)
    return deal


# The rules a task write can break though its checks passed, by constraint name: its deal was
# deleted since `_deal` found it, or a concurrent write made the one `followup` task first.
_DEAL_REFERENCE = "fk_tasks_deal_id_deals"
_ONE_PER_FOLLOWUP = "uq_tasks_followup_origin_ref"


def _broken_rule(exc: IntegrityError) -> str | None:
    """The name of the constraint a flush broke, as PostgreSQL reported it."""
    return getattr(getattr(exc.orig, "driver_exception", None), "constraint_name", None)


async def _flush_task(session: AsyncSession, task: Task) -> None:
    """Write the task, answering a broken rule as its check answers."""
    # Read now: a failed flush expires the task, and its attributes can no longer be loaded.
    deal_id, origin, origin_ref = task.deal_id, task.origin, task.origin_ref
    try:
        await TaskRepository(session).flush()
    except IntegrityError as exc:
        rule = _broken_rule(exc)
        if rule == _DEAL_REFERENCE:
            raise _missing_deal(deal_id) from None
        if rule == _ONE_PER_FOLLOWUP:
            raise Conflict(f"a {origin} task for {origin_ref} already exists") from None
        raise


async def _live_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    """The customer a new task names (a merged duplicate's survivor), locked against an erase or
    a merge until the task is written (`resolve_reference` locks it)."""
    return await customers.resolve_reference(session, customer_id)


async def create_task(session: AsyncSession, data: TaskCreate) -> Task:
    deal = await _deal(session, data.deal_id) if data.deal_id is not None else None
    customer = await _live_customer(session, data.customer_id or deal.customer_id)  # type: ignore[union-attr]
    if deal is not None and deal.customer_id != customer.id:
        raise _body_error("deal_id", "the deal belongs to another customer")
    now = utcnow()
    task = Task(
        id=new_id(),
        customer_id=customer.id,
        deal_id=deal.id if deal else None,
        title=data.title,
        description=data.description,
        due_at=data.due_at,
        status="open",
        priority=data.priority,
        owner=data.owner if "owner" in data.model_fields_set else customer.owner,
        origin=data.origin,
        origin_ref=data.origin_ref,
        version=1,
        created_at=now,
        updated_at=now,
    )
    TaskRepository(session).add(task)
    await _flush_task(session, task)
    return task


async def get_task(session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False) -> Task:
    task = await TaskRepository(session).get(task_id, for_update=for_update)
    if task is None:
        raise NotFound(f"task {task_id} does not exist")
    return task


async def list_tasks(
    session: AsyncSession, filters: TaskFilters, sort_token: str, page: PageParams
) -> tuple[list[Task], str | None]:
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    rows = await TaskRepository(session).list_page(filters, sort, page)
    return keyset.cut(rows, sort, page)


def export_query(filters: TaskFilters, sort_token: str, columns: Sequence[str]) -> CompiledQuery:
    """The statement of a task export: what `list_tasks` shows, unpaged."""
    return repository.export_query(filters, keyset.parse_sort(sort_token, SORT_KEYS), columns)


async def update_task(
    session: AsyncSession, task_id: uuid.UUID, data: TaskUpdate, if_match: str | None, actor: str | None
) -> Task:
    task = await get_task(session, task_id, for_update=True)
    check_if_match(if_match, task.version)
    changed = False
    if "deal_id" in data.model_fields_set and data.deal_id != task.deal_id:
        if data.deal_id is not None and (await _deal(session, data.deal_id)).customer_id != task.customer_id:
            raise _body_error("deal_id", "the deal belongs to another customer")
        task.deal_id = data.deal_id
        changed = True
    for field in ("title", "description", "due_at", "priority", "owner"):
        if field in data.model_fields_set and getattr(data, field) != getattr(task, field):
            setattr(task, field, getattr(data, field))
            changed = True
            if field == "due_at":
                task.overdue_announced_at = None  # the new due time is announced when it passes
    completed_now = False
    if data.status is not None and data.status != task.status:
        now = utcnow()
        task.status = data.status
        task.completed_at = now if data.status == "completed" else None
        task.completed_by = actor if data.status == "completed" else None
        completed_now = data.status == "completed"
        if data.status == "open":
            task.overdue_announced_at = None  # reopened: announced again if still (or once) overdue
        changed = True
    if not changed:
        return task
    task.version += 1
    task.updated_at = utcnow()
    await _flush_task(session, task)
    if completed_now:
        assert task.completed_at is not None
        add_event(
            session,
            OutboxMessage,
            "task.completed",
            source=SOURCE,
            subject=task.customer_id,
            data=TaskCompleted(
                task_id=task.id,
                customer_id=task.customer_id,
                origin=task.origin,
                origin_ref=task.origin_ref,
                completed_at=task.completed_at,
                completed_by=actor,
            ),
        )
    return task


OVERDUE_BATCH = 500


async def announce_overdue(session: AsyncSession, *, now: dt.datetime | None = None, limit: int = OVERDUE_BATCH) -> int:
    """Announce `task.overdue` for up to `limit` open tasks whose due time has passed, each
    once per due time, in the caller's transaction; returns how many. Concurrent passes (other
    replicas) announce disjoint tasks."""
    now = now or utcnow()
    tasks = await TaskRepository(session).claim_overdue(now, limit)
    for task in tasks:
        assert task.due_at is not None
        task.overdue_announced_at = now
        add_event(
            session,
            OutboxMessage,
            "task.overdue",
            source=SOURCE,
            subject=task.customer_id,
            data=TaskOverdue(
                task_id=task.id,
                customer_id=task.customer_id,
                deal_id=task.deal_id,
                title=task.title,
                owner=task.owner,
                escalated_to=task.escalated_to,
                priority=task.priority,
                due_at=task.due_at,
                origin=task.origin,
                origin_ref=task.origin_ref,
            ),
        )
    return len(tasks)


async def run_reminders(session_factory: async_sessionmaker[AsyncSession], interval_s: float) -> None:
    """`announce_overdue` every `interval_s` (a full batch goes on at once) until cancelled; a
    failed pass is logged and tried again at the next."""
    while True:
        try:
            async with session_factory() as session, session.begin():
                announced = await announce_overdue(session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("task reminders failed", extra={"error": repr(exc)})
            announced = 0
        if announced:
            log.info("overdue tasks announced", extra={"tasks": announced})
        if announced < OVERDUE_BATCH:
            await asyncio.sleep(interval_s)


async def delete_task(session: AsyncSession, task_id: uuid.UUID, if_match: str | None) -> None:
    task = await get_task(session, task_id, for_update=True)
    check_if_match(if_match, task.version)
    await TaskRepository(session).delete(task)
    await TaskRepository(session).flush()
