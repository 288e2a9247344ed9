"""ETags from a resource's version, `If-Match` checks (412 on a stale version) and
`If-None-Match` checks (304 when the client's copy is current)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from cxkit.http.problems import PreconditionFailed


def etag_for(version: int) -> str:
    return f'"{version}"'


def _names(header: str, current_version: int) -> bool:
    """Whether the header's list of entity tags names the current version: `*`, or a tag equal
    to its ETag under the weak comparison (`W/"3"` names `"3"`)."""
    tags = [t.strip() for t in header.split(",") if t.strip()]
    current = etag_for(current_version)
    return "*" in tags or any(t.removeprefix("W/") == current for t in tags)


def check_if_match(if_match: str | None, current_version: int) -> None:
    """No header: the write goes ahead. `*` or a matching tag: ok. Otherwise 412."""
    if if_match is None:
        return
    current = etag_for(current_version)
    if not _names(if_match, current_version):
        raise PreconditionFailed(
            f"the resource is at version {current_version} (ETag {current}); fetch it again and retry",
            headers={"ETag": current},
        )


# Where `cxkit.http.app.RequestContextMiddleware` leaves a request's `If-None-Match`, read in
# the one pass it makes over the headers anyway: a header parameter cost the hot GET by id 4%.
IF_NONE_MATCH_SCOPE_KEY = "cx.if_none_match"


def is_current(scope: Mapping[str, Any], current_version: int) -> bool:
    """Whether the request's `If-None-Match` names the current version: the client's copy is
    current and the answer is 304 Not Modified (`not_modified`). Only for a resource whose
    every change bumps its version, so its version stands for every byte of its representation."""
    held: str | None = scope.get(IF_NONE_MATCH_SCOPE_KEY)
    return held is not None and _names(held, current_version)


def not_modified(current_version: int) -> Response:
    """304 Not Modified: no body, the current `ETag`."""
    return Response(status_code=304, headers={"ETag": etag_for(current_version)})


def unchanged(request: HTTPConnection, current_version: int) -> Response | None:
    """The 304 for a read whose `If-None-Match` names the current version, else None (the
    read answers in full): `return unchanged(request, row.version) or answer(row)`. The route
    declares `NOT_MODIFIED_RESPONSE` and `IF_NONE_MATCH_PARAMETER`, and says `NOT_MODIFIED_TEXT`."""
    return not_modified(current_version) if is_current(request.scope, current_version) else None


# What a route's description says of it (see `unchanged`).
NOT_MODIFIED_TEXT = "With `If-None-Match` naming the current `ETag` the answer is 304 with no body: the copy you hold is current."


NOT_MODIFIED_RESPONSE: dict[int | str, dict[str, str]] = {
    304: {"description": "Not modified: `If-None-Match` named the current `ETag`, so the copy you hold is current (no body)."}
}
# The header documented on a route that calls `is_current` (read by the middleware, so not a
# FastAPI parameter).
IF_NONE_MATCH_PARAMETER: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": 'The `ETag` of the copy you hold (e.g. `"3"`): if it is still current the answer is 304 with no body.',
            "example": '"1"',
        }
    ]
}
