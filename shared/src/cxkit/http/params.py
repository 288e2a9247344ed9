"""Request parameters every resource's routes declare the same way: its id in the path, the
`If-Match` header of a conditional write (checked by `cxkit.http.etag.check_if_match`) and the
`If-None-Match` header of a conditional read (`cxkit.http.etag.is_current`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path


def id_path(kind: str, example: str) -> Any:
    """A path id (`Annotated[uuid.UUID, id_path("survey", "2f4e...")]`) with its description and
    an example, so every operation's parameters carry one in the docs."""
    return Path(description=f"The {kind}'s id.", examples=[example])


def _etag_header(alias: str, description: str) -> Any:
    return Header(alias=alias, max_length=200, description=description, examples=['"1"'])


IfMatch = Annotated[
    str | None,
    _etag_header(
        "If-Match", 'The `ETag` you last read (e.g. `"3"`); the write is refused with 412 if the resource changed since.'
    ),
]
IfNoneMatch = Annotated[
    str | None,
    _etag_header(
        "If-None-Match", 'The `ETag` of the copy you hold (e.g. `"3"`): if it is still current the answer is 304 with no body.'
    ),
]
