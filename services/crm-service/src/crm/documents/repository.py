"""Every document query."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select, update

from crm.customers.lifecycle import CustomerErasure
from crm.documents.models import Document
from cxkit import keyset
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository

SORT_KEYS = (keyset.SortKey("created_at", Document.created_at, "datetime"),)


class DocumentRepository(Repository[Document]):
    model = Document

    async def list_page(
        self, customer_id: uuid.UUID | None, deal_id: uuid.UUID | None, sort: keyset.Sort, page: PageParams
    ) -> list[Document]:
        stmt = select(Document)
        if customer_id is not None:
            stmt = stmt.where(Document.customer_id == customer_id)
        if deal_id is not None:
            stmt = stmt.where(Document.deal_id == deal_id)
        return list((await self.session.scalars(keyset.apply(stmt, sort, Document.id, page))).all())

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(update(Document).where(Document.customer_id == duplicate_id).values(customer_id=survivor_id))

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """Delete the customer's document rows; their storage paths go to `erasure.files`, for the
        files to be deleted once the rows are flushed."""
        result = await self.session.execute(
            delete(Document).where(Document.customer_id == erasure.customer_id).returning(Document.storage_path)
        )
        erasure.files += [row[0] for row in result]
