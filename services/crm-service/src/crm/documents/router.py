"""/v1/documents and the open /v1/shared/documents links"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from starlette.responses import FileResponse, Response

from crm.config import DEFAULT_DOCUMENT_TYPES
from crm.deps import SettingsDep
from crm.documents import service
from crm.documents.links import LinkSigner
from crm.documents.schemas import UPLOAD_EXAMPLE, UPLOAD_SCHEMA, DocumentPage, DocumentRead, ShareLink, ShareRequest
from crm.documents.storage import DocumentStore
from crm.documents.upload import receive_upload
from crm.fields import DocumentIdPath
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader, Writer
from cxkit.http.deps import SessionDep
from cxkit.http.idempotency import REPLAYED_HEADER, IdempotencyDep, idempotency_of
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/documents", tags=["documents"], route_class=TypedRoute)
shared_router = GatedRouter(prefix="/shared/documents", tags=["documents"], route_class=TypedRoute)


async def _store(settings: SettingsDep) -> DocumentStore:
    return DocumentStore(settings.documents_dir)


async def _signer(request: Request) -> LinkSigner:
    signer: LinkSigner = request.app.state.document_links
    return signer


StoreDep = Annotated[DocumentStore, Depends(_store)]
SignerDep = Annotated[LinkSigner, Depends(_signer)]


def _download(store: DocumentStore, document: object) -> FileResponse:
    path = service.stored_file(store, document)  # type: ignore[arg-type]
    return FileResponse(
        path,
        media_type=document.content_type,  # type: ignore[attr-defined]
        filename=document.filename,  # type: ignore[attr-defined]
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"},
    )


# A download answers with the Content-Type the file was stored with (one of the allowed types,
# which settings choose), so the document promises a file of any type rather than one.
FILE_RESPONSE = {
    200: {
        "description": "The file, with the Content-Type it was uploaded with.",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}, "example": "(binary)"}},
    }
}

# A share link's own problems: no API key is involved, so 403 and 410 are about the link.
SHARED_LINK_PROBLEMS = problem_responses(403, 404, 410, 422)
SHARED_LINK_PROBLEMS[403] = SHARED_LINK_PROBLEMS[403] | {
    "description": "The link's signature is not valid (tampered with, or signed for another document)."
}
SHARED_LINK_PROBLEMS[410] = SHARED_LINK_PROBLEMS[410] | {"description": "The link has expired; ask for a new one."}


@router.post(
    "",
    status_code=201,
    summary="Upload a document",
    description="`multipart/form-data` with a `file` part and `customer_id` or `deal_id` (a deal's document also belongs "
    "to its customer), optionally a `description`. The file is streamed to the document store; one larger than the "
    "configured limit is refused with 413 as soon as it passes it, a content type not on the allowed list with 415 "
    "(checked on the part's Content-Type, or its file name when that is `application/octet-stream`). "
    "`Idempotency-Key` works as for every write. Needs `write`.",
    responses=problem_responses(401, 403, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": UPLOAD_SCHEMA,
                    "example": UPLOAD_EXAMPLE,
                    # The default list (CRM_DOCUMENTS_ALLOWED_TYPES may change it).
                    "encoding": {"file": {"contentType": ", ".join(DEFAULT_DOCUMENT_TYPES)}},
                }
            },
        }
    },
)
async def upload_document(
    request: Request,
    session: SessionDep,
    principal: Writer,
    settings: SettingsDep,
    store: StoreDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", max_length=255, description="A retry with the same key and body returns the first answer."
        ),
    ] = None,
) -> ModelResponse[DocumentRead]:
    incoming = store.new_incoming()
    try:
        upload = await receive_upload(request, incoming, settings.documents_max_bytes, settings.documents_allowed_types)
        # Compared on the upload's fields and file hash, so the body is never buffered.
        idem = idempotency_of(request, idempotency_key, principal, upload.request_digest)

        async def operation() -> ModelResponse[DocumentRead]:
            document = await service.create_document(session, upload, store, principal.name)
            return json_response(DocumentRead.of(document), 201, headers={"Location": f"/v1/documents/{document.id}"})

        return await idem.execute(session, operation)
    finally:
        store.discard(incoming)


@router.get(
    "",
    summary="List documents",
    description="Newest first; filter by `customer_id` and/or `deal_id`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_documents(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    customer_id: uuid.UUID | None = None,
    deal_id: uuid.UUID | None = None,
) -> ModelResponse[DocumentPage]:
    rows, cursor = await service.list_documents(session, customer_id, deal_id, page)
    return json_response(DocumentPage(items=[DocumentRead.of(d) for d in rows], next_cursor=cursor))


@router.get(
    "/{document_id}",
    summary="Get a document's details",
    description="Name, content type, size, SHA-256 and where to download it. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_document(document_id: DocumentIdPath, session: SessionDep, _: Reader) -> ModelResponse[DocumentRead]:
    return json_response(DocumentRead.of(await service.get_document(session, document_id)))


@router.get(
    "/{document_id}/content",
    summary="Download a document",
    description="The file with its stored Content-Type and `Content-Disposition: attachment` carrying its name "
    "(RFC 6266, UTF-8 names encoded); byte ranges are supported. Needs `read`.",
    responses=FILE_RESPONSE | problem_responses(401, 403, 404, 422),
    response_class=FileResponse,
)
async def download_document(document_id: DocumentIdPath, session: SessionDep, _: Reader, store: StoreDep) -> Response:
    return _download(store, await service.get_document(session, document_id))


@router.delete(
    "/{document_id}",
    status_code=204,
    summary="Delete a document",
    description="Deletes the record and then its file. Needs `write`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_document(document_id: DocumentIdPath, session: SessionDep, idem: IdempotencyDep, store: StoreDep) -> Response:
    deleted: list[str] = []

    async def operation() -> Response:
        deleted.append(await service.delete_document(session, document_id))
        return Response(status_code=204)

    response = await idem.execute(session, operation)
    if REPLAYED_HEADER not in response.headers:
        for path in deleted:  # only after the commit: a failed delete keeps its file
            store.delete(path)
    return response


@router.post(
    "/{document_id}/share",
    summary="Share a document by link",
    description="A time-limited download link (HMAC-signed) that works without an API key until it expires (410 after; "
    "403 if tampered with). Deleting the document ends every link to it. Needs `write`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def share_document(
    document_id: DocumentIdPath, body: ShareRequest, session: SessionDep, _: Writer, settings: SettingsDep, signer: SignerDep
) -> ModelResponse[ShareLink]:
    document = await service.get_document(session, document_id)
    url, expires_at = service.share_link(
        document, signer, settings.public_base_url, body.expires_in, settings.documents_share_max_seconds
    )
    return json_response(ShareLink(url=url, expires_at=expires_at))


@shared_router.get(
    "/{document_id}",
    summary="Download a shared document",
    description="The target of a share link: no API key, the signature and expiry in the query do. 403 for a bad "
    "signature, 410 once expired, 404 once the document was deleted.",
    responses=FILE_RESPONSE | SHARED_LINK_PROBLEMS,
    response_class=FileResponse,
)
async def download_shared_document(
    document_id: DocumentIdPath,
    session: SessionDep,
    store: StoreDep,
    signer: SignerDep,
    expires: Annotated[int, Query(ge=0, le=2**40, description="Unix time the link expires.")],
    signature: Annotated[
        str, Query(min_length=43, max_length=43, pattern="^[A-Za-z0-9_-]{43}$", description="The link's signature.")
    ],
) -> Response:
    service.check_link(document_id, expires, signature, signer)
    return _download(store, await service.get_document(session, document_id))
