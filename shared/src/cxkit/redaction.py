"""Secrets that travel in URLs, kept out of logs, trace attributes and metric labels.

A respondent's survey token is the path (`/r/<token>`: whoever has it answers for the
customer), a shared document link carries its HMAC in the query (`?expires=...&signature=...`),
and a client may put a key in a query parameter. What is written down keeps the shape of the
URL and drops the values: `/r/[redacted]`, `signature=[redacted]`.

Every function checks first, with plain substring tests, whether there is anything to redact:
almost every path has nothing, and costs one or two `in` tests.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

# A respondent page path segment: /r/<token> (the token is the rest of the segment).
_RESPONDENT_TOKEN = re.compile(r"/r/[^/?#\s\"'<>]+")
# `name=value` where the name says it holds a secret (or, for share links, the expiry that
# goes with the signature). Case-insensitive; the value runs to the next separator.
_SECRET_PARAMETER = re.compile(
    r"(?i)(?<![\w.\-])([\w.\-]*(?:token|signature|secret|key|password|passwd|expires)[\w.\-]*)=([^&;#\s\"'<>]*)"
)


def _respondent(match: re.Match[str]) -> str:
    return "/r/" + REDACTED


def _parameter(match: re.Match[str]) -> str:
    return f"{match.group(1)}={REDACTED}" if match.group(2) else match.group(0)


def redact_path(path: str) -> str:
    """A URL path (or path?query) with respondent tokens and secret parameters redacted."""
    if "/r/" in path:
        path = _RESPONDENT_TOKEN.sub(_respondent, path)
    if "=" in path:
        path = _SECRET_PARAMETER.sub(_parameter, path)
    return path


def redact_query(query: str) -> str:
    """A query string (`a=1&signature=...`) with the values of secret parameters redacted."""
    if "=" not in query:
        return query
    return _SECRET_PARAMETER.sub(_parameter, query)


def redact_text(text: str) -> str:
    """Free text (a log message, an exception and its traceback) that may quote URLs."""
    return redact_path(text)
