"""The request body cap (`max_body_bytes`, SPEC §7): 413 problem+json without reading the rest.

RequestContextMiddleware applies it from the headers it already reads: a declared
Content-Length over the cap is answered before the app runs (nothing of the body is read); a
body without Content-Length (chunked) is counted as it arrives, and the first chunk past the
cap raises BodyTooLarge from `receive`, which stops the read and renders as 413.

Uploads keep their own limit: a multipart body is counted too, but a route that takes uploads
(a form body, or one that documents a multipart/form-data request body, like the CRM's
document upload) reads it uncapped and applies its own, larger limit while streaming. Only
the routes decide: a multipart Content-Type sent to a JSON route is capped like JSON.
"""

from __future__ import annotations

from typing import Any

from fastapi import params
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope

from cxkit.http.problems import PayloadTooLarge, problem_response
from cxkit.http.responses import JSONBytesResponse


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes the cap. An HTTPException, so FastAPI's body
    parsing lets it through (it turns other errors into a 400) and the problem handler renders
    it as 413 problem+json."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=too_large_detail(max_bytes))


def too_large_detail(max_bytes: int) -> str:
    return f"request bodies are at most {max_bytes} bytes (multipart uploads have their own limit)"


def too_large_response(max_bytes: int) -> JSONBytesResponse:
    return problem_response(
        413, PayloadTooLarge.title, slug=PayloadTooLarge.slug, detail=too_large_detail(max_bytes), headers={"Connection": "close"}
    )


def capped_receive(receive: Receive, max_bytes: int, upload_scope: Scope | None = None) -> Receive:
    """`receive` that raises BodyTooLarge as soon as more than `max_bytes` of body arrived.
    With `upload_scope` (a multipart body), the cap is lifted if the matched route takes
    uploads (routing is done by the time the body is read)."""
    received = 0

    async def receive_capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request" and received >= 0:
            received += len(message.get("body", b""))
            if received > max_bytes:
                if upload_scope is not None and takes_uploads(upload_scope.get("route")):
                    received = -1  # the route's own limit applies from here on
                else:
                    raise BodyTooLarge(max_bytes)
        return message

    return receive_capped


def takes_uploads(route: Any) -> bool:
    """The route reads multipart uploads: its body is a form (File/Form parameters), or it
    documents a multipart request body (a route that streams and parses the upload itself).
    Asked only when a multipart body passes the cap."""
    if route is None:
        return False
    body_field = getattr(route, "body_field", None)
    if body_field is not None and isinstance(body_field.field_info, params.Form):
        return True
    documented = ((getattr(route, "openapi_extra", None) or {}).get("requestBody") or {}).get("content") or {}
    return any(str(media_type).startswith("multipart/") for media_type in documented)
