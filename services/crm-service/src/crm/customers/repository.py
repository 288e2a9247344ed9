"""Every customer query."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers.models import Customer


class CustomerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, customer_id: uuid.UUID) -> Customer | None:
        return await self.session.get(Customer, customer_id)

    async def get_by_email(self, email: str) -> Customer | None:
        return await self.session.scalar(select(Customer).where(Customer.email_normalized == email.strip().lower()))

    async def list_page(self, *, limit: int, after: tuple[dt.datetime, uuid.UUID] | None) -> list[Customer]:
        """Newest first, keyset on (created_at, id); one row more than asked tells if a next page exists."""
        stmt = select(Customer).where(Customer.merged_into_id.is_(None))
        if after is not None:
            created, cid = after
            stmt = stmt.where(or_(Customer.created_at < created, and_(Customer.created_at == created, Customer.id < cid)))
        stmt = stmt.order_by(Customer.created_at.desc(), Customer.id.desc()).limit(limit + 1)
        return list((await self.session.scalars(stmt)).all())

    def add(self, customer: Customer) -> None:
        self.session.add(customer)

    async def flush(self) -> None:
        await self.session.flush()

    async def exists(self, **filters: Any) -> bool:
        stmt = select(Customer.id).filter_by(**filters).limit(1)
        return (await self.session.scalar(stmt)) is not None
