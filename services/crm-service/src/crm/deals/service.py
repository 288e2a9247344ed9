"""Deal rules: a deal sits in one stage of one pipeline; its status follows the stage; every
move is appended to its history and announced as `deal.stage_changed`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers import service as customers
from crm.db import SOURCE, OutboxMessage
from crm.deals import repository
from crm.deals.models import Deal, DealStageChange
from crm.deals.repository import HISTORY_ORDER, SORT_KEYS, DealFilters, DealRepository, open_value_query
from crm.deals.schemas import DealCreate, DealUpdate
from crm.pipelines.models import Pipeline, PipelineStage
from crm.pipelines.repository import PipelineRepository
from crm.pipelines.service import resolve_pipeline
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.events.payloads import DealStageChanged
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import NotFound, Unprocessable, field_problem
from cxkit.kafka.outbox import add_event
from cxkit.pg_pool import CompiledQuery


def _status_of(stage: PipelineStage) -> str:
    return "won" if stage.is_won else "lost" if stage.is_lost else "open"


def _body_error(field: str, msg: str) -> Unprocessable:
    """A 422 naming the body field at fault, worded like a request-validation error (`body.<field>: <msg>`)."""
    return field_problem(["body", field], msg, "value_error")


def _stage_named(stages: list[PipelineStage], name: str, pipeline: Pipeline) -> PipelineStage:
    wanted = name.strip().lower()
    for stage in stages:
        if stage.name.lower() == wanted:
            return stage
    raise _body_error("stage", f"{name!r} is not a stage of pipeline {pipeline.name!r} ({', '.join(s.name for s in stages)})")


def _stage_for_status(stages: list[PipelineStage], status: str) -> PipelineStage:
    return next(s for s in stages if (s.is_won if status == "won" else s.is_lost))


async def _record_move(
    session: AsyncSession, deal: Deal, pipeline: Pipeline, previous: PipelineStage | None, stage: PipelineStage, actor: str | None
) -> None:
    """Append the move to the history and announce it (with the customer's new open value)."""
    repo = DealRepository(session)
    now = utcnow()
    repo.add(
        DealStageChange(
            id=new_id(),
            deal_id=deal.id,
            seq=await repo.next_seq(deal.id),
            pipeline_id=pipeline.id,
            from_stage_id=previous.id if previous else None,
            from_stage=previous.name if previous else None,
            to_stage_id=stage.id,
            to_stage=stage.name,
            to_status=deal.status,
            amount=deal.amount,
            changed_by=actor,
            changed_at=now,
        )
    )
    await repo.flush()
    add_event(
        session,
        OutboxMessage,
        "deal.stage_changed",
        source=SOURCE,
        subject=deal.customer_id,
        data=DealStageChanged(
            deal_id=deal.id,
            customer_id=deal.customer_id,
            pipeline_id=pipeline.id,
            title=deal.title,
            from_stage=previous.name if previous else None,
            to_stage=stage.name,
            status=deal.status,  # type: ignore[arg-type]
            amount=deal.amount,
            currency=deal.currency,
            changed_by=actor,
            changed_at=now,
            customer_open_deal_value=await repo.open_value(deal.customer_id),
        ),
    )


def _enter_stage(deal: Deal, stage: PipelineStage, lost_reason: str | None) -> None:
    status = _status_of(stage)
    if status == "lost" and not (lost_reason or deal.lost_reason):
        raise _body_error("lost_reason", "required when a deal is lost")
    now = utcnow()
    deal.stage_id = stage.id
    deal.status = status
    deal.stage_entered_at = now
    deal.closed_at = now if status != "open" else None
    deal.lost_reason = (lost_reason or deal.lost_reason) if status == "lost" else None


async def create_deal(
    session: AsyncSession, data: DealCreate, actor: str | None, default_currency: str, *, advance_customer: bool = True
) -> tuple[Deal, PipelineStage]:
    """Open the deal in its stage and announce it. With `advance_customer` (unless the caller has
    set the customer's stage itself, as a lead conversion asked for a `lifecycle_stage` does),
    the customer moves forward to `opportunity`, or `customer` for a won deal."""
    customer = await customers.resolve_reference(session, data.customer_id)
    pipeline, stages = await resolve_pipeline(session, data.pipeline_id, for_deal=True)
    stage = _stage_named(stages, data.stage, pipeline) if data.stage else stages[0]
    now = utcnow()
    deal = Deal(
        id=new_id(),
        customer_id=customer.id,
        title=data.title,
        amount=data.amount,
        currency=data.currency or default_currency,
        pipeline_id=pipeline.id,
        expected_close_date=data.expected_close_date,
        owner=data.owner if "owner" in data.model_fields_set else customer.owner,
        version=1,
        created_at=now,
        updated_at=now,
    )
    _enter_stage(deal, stage, data.lost_reason)
    DealRepository(session).add(deal)
    await DealRepository(session).flush()
    await _record_move(session, deal, pipeline, None, stage, actor)
    # As in HubSpot: a deal makes its contact an opportunity, a won deal makes them a customer.
    if advance_customer:
        await customers.advance_lifecycle(
            session, customer, "customer" if deal.status == "won" else "opportunity", open_value_query
        )
    return deal, stage


async def get_deal(session: AsyncSession, deal_id: uuid.UUID) -> tuple[Deal, PipelineStage]:
    found = await DealRepository(session).get_with_stage(deal_id)
    if found is None:
        raise NotFound(f"deal {deal_id} does not exist")
    return found


async def _lock_customer_of(session: AsyncSession, deal_id: uuid.UUID) -> None:
    """Lock the deal's customer (`customers.lock_owner`) before the deal: an erase or a merge
    locks the customer, then its deals, and a change of the deal may go on to its customer
    (`_locked_deal`). The customer a merge that committed meanwhile moved the deal to is the one
    left locked; once it is locked, no merge moves the deal again before this transaction ends."""
    repo = DealRepository(session)
    customer_id = await repo.customer_id_of(deal_id)
    while customer_id is not None:
        await customers.lock_owner(session, customer_id)
        moved_to = await repo.customer_id_of(deal_id)
        if moved_to == customer_id:
            return
        customer_id = moved_to


async def _locked_deal(session: AsyncSession, deal_id: uuid.UUID) -> Deal:
    """The deal locked for a change, after its customer (`_lock_customer_of`; a moving deal's
    pipeline comes in between, see `update_deal`)."""
    deal = await DealRepository(session).get(deal_id, for_update=True)
    if deal is None:
        raise NotFound(f"deal {deal_id} does not exist")
    return deal


async def update_deal(
    session: AsyncSession, deal_id: uuid.UUID, data: DealUpdate, if_match: str | None, actor: str | None
) -> tuple[Deal, PipelineStage]:
    repo = DealRepository(session)
    # Locks in the order an erase or a merge takes them (the customer, then its deals): this
    # change may go on to the customer (its stage, its open deal value).
    await _lock_customer_of(session, deal_id)
    # Set for a move (to `stage`, or to the won/lost stage of `status`): the pipeline it goes to.
    pipeline: Pipeline | None = None
    stages: list[PipelineStage] = []
    if data.stage is not None or data.status is not None:
        # The pipeline first, then the deal: an edit of its stages holds the pipeline and then
        # gives its deals a new version, so the other order would deadlock with it.
        seen = await repo.get(deal_id)
        if seen is None:
            raise NotFound(f"deal {deal_id} does not exist")
        pipeline, stages = await resolve_pipeline(session, data.pipeline_id or seen.pipeline_id, for_deal=True)
    deal = await _locked_deal(session, deal_id)
    check_if_match(if_match, deal.version)
    if pipeline is not None and pipeline.id != (data.pipeline_id or deal.pipeline_id):
        # Moved to another pipeline since it was read: that one's stages are the ones to go to.
        pipeline, stages = await resolve_pipeline(session, deal.pipeline_id, for_deal=True)
    current_stage = await PipelineRepository(session).stage(deal.stage_id)
    assert current_stage is not None
    open_amount_before = deal.amount if deal.status == "open" else None

    target = current_stage
    if pipeline is not None and data.stage is not None:
        target = _stage_named(stages, data.stage, pipeline)
        if data.status is not None and data.status != _status_of(target):
            raise _body_error("status", f"stage {target.name!r} means status {_status_of(target)!r}")
    elif pipeline is not None and data.status is not None and data.status != deal.status:
        if data.status == "open":
            raise _body_error("stage", "reopening a deal needs the open stage it goes back to")
        target = _stage_for_status(stages, data.status)

    changed = False
    for field in ("title", "amount", "currency", "expected_close_date", "owner"):
        if field in data.model_fields_set and getattr(data, field) != getattr(deal, field):
            setattr(deal, field, getattr(data, field))
            changed = True
    moved = target.id != deal.stage_id
    if moved:
        assert pipeline is not None  # only a move changes the stage
        deal.pipeline_id = pipeline.id
        _enter_stage(deal, target, data.lost_reason)
        changed = True
    elif data.lost_reason is not None and data.lost_reason != deal.lost_reason:
        if deal.status != "lost":
            raise _body_error("lost_reason", "only a lost deal has a lost reason")
        deal.lost_reason = data.lost_reason
        changed = True
    if not changed:
        return deal, current_stage
    deal.version += 1
    deal.updated_at = utcnow()
    await repo.flush()
    if moved:
        assert pipeline is not None
        await _record_move(session, deal, pipeline, current_stage, target, actor)
        if deal.status == "won":
            customer = await customers.live_customer_or_none(session, deal.customer_id)
            if customer is not None:
                await customers.advance_lifecycle(session, customer, "customer", open_value_query)
    elif deal.status == "open" and deal.amount != open_amount_before:
        await customers.announce_open_deal_value(session, deal.customer_id, open_value_query)
    return deal, target


async def delete_deal(session: AsyncSession, deal_id: uuid.UUID, if_match: str | None) -> None:
    repo = DealRepository(session)
    await _lock_customer_of(session, deal_id)  # the customer, then the deal (see `update_deal`)
    deal = await _locked_deal(session, deal_id)
    check_if_match(if_match, deal.version)
    was_open_value = deal.status == "open" and (deal.amount or Decimal(0)) > 0
    customer_id = deal.customer_id
    await repo.delete(deal)
    await repo.flush()
    if was_open_value:
        await customers.announce_open_deal_value(session, customer_id, open_value_query)


async def list_deals(
    session: AsyncSession, filters: DealFilters, sort_token: str, page: PageParams
) -> tuple[list[tuple[Deal, PipelineStage]], str | None]:
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    rows = await DealRepository(session).list_page(filters, sort, page)
    return keyset.cut(rows, sort, page, lambda row: (getattr(row[0], sort.key.column.key), row[0].id))


def export_query(filters: DealFilters, sort_token: str, columns: Sequence[str]) -> CompiledQuery:
    """The statement of a deal export: what `list_deals` shows, unpaged."""
    return repository.export_query(filters, keyset.parse_sort(sort_token, SORT_KEYS), columns)


async def deal_history(session: AsyncSession, deal_id: uuid.UUID, page: PageParams) -> tuple[list[DealStageChange], str | None]:
    repo = DealRepository(session)
    if await repo.get(deal_id) is None:
        raise NotFound(f"deal {deal_id} does not exist")
    return keyset.cut(await repo.history_page(deal_id, page), HISTORY_ORDER, page)


async def stage_id_for_filter(session: AsyncSession, pipeline_id: uuid.UUID | None, stage: str) -> uuid.UUID:
    """The id of a stage named in a list filter (stage names are per pipeline)."""
    if pipeline_id is None:
        raise field_problem(["query", "pipeline_id"], "filtering by stage needs pipeline_id (stage names are per pipeline)")
    for candidate in await PipelineRepository(session).stages(pipeline_id):
        if candidate.name.lower() == stage.strip().lower():
            return candidate.id
    raise field_problem(["query", "stage"], f"pipeline {pipeline_id} has no stage named {stage!r}")
