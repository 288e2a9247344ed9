"""Cross-origin calls from browsers (CORS), for frontends served from another origin than the
API (`https://app.example.com` calling `https://crm.example.com`): off unless
`CORS_ALLOW_ORIGINS` names origins.

Starlette's `CORSMiddleware` answers the preflights (`OPTIONS` with
`Access-Control-Request-Method`) itself, before authentication, and adds the CORS headers to
every other answer for an allowed origin, problems included, so a page can read a 401, 409 or
422 as well as a 200. It sits outside every other middleware: even a 413 from the body cap
carries them. Requests without an `Origin` header (servers, the bench) pass straight through."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

# What the API's routes take and send beyond the CORS-safelisted headers (Accept, Content-Type
# and the like): a page may send these, and read those.
ALLOWED_METHODS = ("GET", "POST", "PATCH", "DELETE")
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "X-Request-ID",
    "traceparent",
    "tracestate",
)
EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Idempotent-Replayed",
    "X-Request-ID",
    "traceparent",
    "Content-Disposition",
    "Allow",
)


def install_cors(app: FastAPI, origins: Sequence[str], max_age_seconds: int) -> None:
    """Allow `origins` (`*` for any) to call the app from browsers; nothing when empty. Call it
    after the app's other middleware is added, so it wraps them all. No credentials mode: the
    API key travels in `Authorization`, never in a cookie."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        max_age=max_age_seconds,
    )
