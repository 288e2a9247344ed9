"""Document rules: a file belongs to a customer (and maybe one of their deals); the bytes
live in the document store, the row in the database; shared links expire."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers import service as customers
from crm.deals.repository import DealRepository
from crm.documents.links import LinkSigner
from crm.documents.models import Document
from crm.documents.repository import SORT_KEYS, DocumentRepository
from crm.documents.storage import DocumentStore
from crm.documents.upload import ParsedUpload
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Forbidden, NotFound, ProblemError, Unprocessable, field_problem


class LinkExpired(ProblemError):
    status, title, slug = 410, "Gone", "link-expired"


def _field_uuid(fields: dict[str, str], name: str) -> uuid.UUID | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Unprocessable(
            f"{name} is not a UUID",
            errors=[{"loc": ["body", name], "msg": "Input should be a valid UUID", "type": "uuid_parsing"}],
        ) from None


async def create_document(session: AsyncSession, upload: ParsedUpload, store: DocumentStore, actor: str | None) -> Document:
    """Store the upload's row and move its file into place (last, so a refused upload leaves
    no file behind)."""
    customer_id = _field_uuid(upload.fields, "customer_id")
    deal_id = _field_uuid(upload.fields, "deal_id")
    if customer_id is None and deal_id is None:
        raise Unprocessable(
            "give customer_id or deal_id", errors=[{"loc": ["body", "customer_id"], "msg": "Field required", "type": "missing"}]
        )
    deal = None
    if deal_id is not None:
        deal = await DealRepository(session).get(deal_id)
        if deal is None:
            raise Unprocessable(
                f"deal_id {deal_id} does not exist",
                errors=[{"loc": ["body", "deal_id"], "msg": "unknown id", "type": "reference"}],
            )
    customer = await customers.resolve_reference(session, customer_id or deal.customer_id)  # type: ignore[union-attr]
    if deal is not None and deal.customer_id != customer.id:
        raise field_problem(["body", "deal_id"], "the deal belongs to another customer", "reference")
    description = upload.fields.get("description") or None
    document_id = new_id()
    document = Document(
        id=document_id,
        customer_id=customer.id,
        deal_id=deal.id if deal else None,
        filename=upload.filename or "document",
        content_type=upload.content_type or "application/octet-stream",
        size_bytes=upload.size,
        sha256=upload.sha256,
        storage_path=DocumentStore.relative_path(document_id),
        description=description,
        uploaded_by=actor,
        created_at=utcnow(),
    )
    repo = DocumentRepository(session)
    repo.add(document)
    await repo.flush()
    store.move_in(upload.incoming, document.storage_path)
    return document


async def get_document(session: AsyncSession, document_id: uuid.UUID) -> Document:
    document = await DocumentRepository(session).get(document_id)
    if document is None:
        raise NotFound(f"document {document_id} does not exist")
    return document


def stored_file(store: DocumentStore, document: Document) -> Path:
    path = store.absolute(document.storage_path)
    if not path.is_file():
        raise NotFound(f"the file of document {document.id} is missing from storage")
    return path


async def list_documents(
    session: AsyncSession, customer_id: uuid.UUID | None, deal_id: uuid.UUID | None, page: PageParams
) -> tuple[list[Document], str | None]:
    sort = keyset.parse_sort("-created_at", SORT_KEYS)
    rows = await DocumentRepository(session).list_page(customer_id, deal_id, sort, page)
    return keyset.cut(rows, sort, page)


async def delete_document(session: AsyncSession, document_id: uuid.UUID) -> str:
    """Delete the row; returns the file's storage path, which the caller removes once the
    deletion is committed."""
    document = await get_document(session, document_id)
    await DocumentRepository(session).delete(document)
    await DocumentRepository(session).flush()
    return document.storage_path


def share_link(
    document: Document, signer: LinkSigner, base_url: str, expires_in: int, max_seconds: int
) -> tuple[str, dt.datetime]:
    if expires_in > max_seconds:
        raise field_problem(["body", "expires_in"], f"expires_in is at most {max_seconds} seconds")
    expires_at = utcnow().replace(microsecond=0) + dt.timedelta(seconds=expires_in)
    expires = int(expires_at.timestamp())
    signature = signer.signature(document.id, expires)
    return f"{base_url.rstrip('/')}/v1/shared/documents/{document.id}?expires={expires}&signature={signature}", expires_at


def check_link(document_id: uuid.UUID, expires: int, signature: str, signer: LinkSigner) -> None:
    if not signer.valid(document_id, expires, signature):
        raise Forbidden("this link is not valid")
    if expires < int(utcnow().timestamp()):
        raise LinkExpired("this link has expired; ask for a new one")
