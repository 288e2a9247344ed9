"""Customer business rules."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers.models import Customer
from crm.customers.repository import CustomerRepository
from crm.customers.schemas import CustomerCreate
from crm.db import SOURCE, OutboxMessage
from cxkit.db import utcnow
from cxkit.events.payloads import CustomerCreated, CustomerSnapshot
from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import Conflict, NotFound, Unprocessable
from cxkit.kafka.outbox import add_event


def snapshot(customer: Customer) -> dict[str, object]:
    """The customer as announced on `crm.customers.v1`."""
    return CustomerSnapshot(
        id=customer.id,
        email=customer.email,
        name=customer.name,
        phone=customer.phone,
        company=customer.company,
        lifecycle_stage=customer.lifecycle_stage,
        owner=customer.owner,
        tags=list(customer.tags or []),
        source=customer.source,
        survey_opt_out=customer.survey_opt_out,
        version=customer.version,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    ).model_dump()


async def create_customer(session: AsyncSession, data: CustomerCreate) -> Customer:
    repo = CustomerRepository(session)
    email = str(data.email)
    if await repo.get_by_email(email):
        raise Conflict(f"a customer with email {email} already exists")
    now = utcnow()
    customer = Customer(
        id=uuid.uuid4(),
        email=email,
        email_normalized=email.lower(),
        name=data.name,
        phone=data.phone,
        company=data.company,
        lifecycle_stage=data.lifecycle_stage,
        owner=data.owner,
        tags=sorted(set(data.tags)),
        attributes=data.attributes,
        source=data.source,
        campaign_id=data.campaign_id,
        survey_opt_out=data.survey_opt_out,
        version=1,
        created_at=now,
        updated_at=now,
    )
    repo.add(customer)
    try:
        # Flushed here so a concurrent duplicate surfaces as 409, not at commit time.
        await repo.flush()
    except IntegrityError:
        raise Conflict(f"a customer with email {email} already exists") from None
    add_event(
        session,
        OutboxMessage,
        "customer.created",
        source=SOURCE,
        subject=customer.id,
        data=CustomerCreated(**snapshot(customer)),
    )
    return customer


async def get_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    customer = await CustomerRepository(session).get(customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} does not exist")
    return customer


async def list_customers(session: AsyncSession, page: PageParams) -> tuple[list[Customer], str | None]:
    after = None
    if page.cursor is not None:
        try:
            after = (dt.datetime.fromisoformat(page.cursor[0]), uuid.UUID(page.cursor[1]))
        except (ValueError, IndexError, TypeError):
            raise Unprocessable("cursor is not valid; use the next_cursor of a previous page") from None
    rows = await CustomerRepository(session).list_page(limit=page.limit, after=after)
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        last = rows[-1]
        next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return rows, next_cursor
