"""ETags from a resource's version, and `If-Match` checks (412 on a stale version)."""

from __future__ import annotations

from cxkit.http.problems import PreconditionFailed


def etag_for(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, current_version: int) -> None:
    """No header: the write goes ahead. `*` or a matching tag: ok. Otherwise 412."""
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",") if t.strip()]
    if "*" in tags:
        return
    current = etag_for(current_version)
    if not any(t.removeprefix("W/") == current for t in tags):
        raise PreconditionFailed(
            f"the resource is at version {current_version} (ETag {current}); fetch it again and retry",
            headers={"ETag": current},
        )
