"""API keys: `Authorization: Bearer <key>`, scopes read < write < admin, keys stored hashed."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import utcnow
from cxkit.http.problems import Forbidden, Unauthorized
from cxkit.http.ratelimit import SCOPE_KEY

SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
KEY_PREFIX = "cx_"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID
    name: str
    scopes: frozenset[str]
    key_str: str = ""  # str(key_id), made once per verified key (rate-limit counts are keyed by it)

    def __post_init__(self) -> None:
        if not self.key_str:
            object.__setattr__(self, "key_str", str(self.key_id))

    def has(self, scope: str) -> bool:
        """admin implies write, write implies read."""
        need = _RANK[scope]
        return any(_RANK.get(s, -1) >= need for s in self.scopes)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession,
    model: type[Any],
    *,
    name: str,
    scopes: list[str],
    key: str | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[Any, str]:
    """Store a new key (or a given one, for dev set-ups) and return (row, plaintext key). A key
    with `expires_at` is refused from that time on."""
    bad = [s for s in scopes if s not in _RANK]
    if bad or not scopes:
        raise ValueError(f"scopes must be among {SCOPES}, got {scopes}")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise ValueError(f"the expiry {expires_at.isoformat()} is not in the future")
    plaintext = key or generate_key()
    row = model(
        name=name,
        prefix=plaintext[:10],
        key_hash=hash_key(plaintext),
        scopes=sorted(set(scopes)),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    return row, plaintext


class _Expiring:
    """Answers kept for `ttl_s` seconds (or less), at most about 10,000 of them (then it starts over)."""

    __slots__ = ("_entries", "ttl_s")

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def get(self, key: str) -> tuple[bool, Principal | None, float]:
        """(found, the answer, until when it is kept: a `time.monotonic()`)."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1], hit[0]
        return False, None, 0.0

    def put(self, key: str, principal: Principal | None, until: float | None = None) -> float:
        """Keep the answer for `ttl_s`, or only `until` (a `time.monotonic()`) if that is sooner;
        returns until when it is kept."""
        if len(self._entries) > 10_000:
            self._entries.clear()
        kept = time.monotonic() + self.ttl_s
        if until is not None and until < kept:
            kept = until
        self._entries[key] = (kept, principal)
        return kept

    def clear(self) -> None:
        self._entries.clear()


class ApiKeyAuth:
    """Verifies keys against the service's api_keys table, with a short in-process cache
    (`api_key_cache_seconds`, default 5 s) so a hot path does not pay a query per request. A
    revoked key is refused by every process within that time; an expiring key from its expiry
    on (its answer is never kept past it).

    When an answer expires, the requests that ask for it meanwhile share one lookup: under load
    every request in flight carries the same few keys, and each running its own query stalled
    the event loop for all of them every time the cache ran out (32 concurrent lookups, about
    20 ms, every 5 s: most of the GET by id's 99th percentile in `make bench`)."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], model: type[Any], ttl_s: float = 5.0) -> None:
        self.session_factory = session_factory
        self.model = model
        self._by_digest = _Expiring(ttl_s)
        # By the key as sent, so a cached request skips hashing it too. Apart from the digests: a
        # client must not get a cached answer by sending a digest as its key.
        self._by_key = _Expiring(ttl_s)
        self._looking_up: dict[str, asyncio.Future[tuple[Principal | None, float]]] = {}

    async def verify(self, key: str) -> Principal | None:
        found, principal, _ = self._by_key.get(key)
        if not found:
            principal, until = await self._by_digest_checked(hash_key(key))
            self._by_key.put(key, principal, until)
        return principal

    async def verify_digest(self, digest: str) -> Principal | None:
        """The same check by the key's stored digest (a dashboard session keeps the digest, never
        the key itself)."""
        return (await self._by_digest_checked(digest))[0]

    async def _by_digest_checked(self, digest: str) -> tuple[Principal | None, float]:
        """The key's principal (None: unknown, revoked or expired), and until when that answer
        may be kept (a `time.monotonic()`)."""
        found, principal, until = self._by_digest.get(digest)
        if found:
            return principal, until
        lookup = self._looking_up.get(digest)
        if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():  # (one left by a loop that ended)
            lookup = asyncio.ensure_future(self._look_up(digest))
            self._looking_up[digest] = lookup
            lookup.add_done_callback(lambda done: self._forget_lookup(digest, done))
        # Shielded: a request that goes away (its client disconnected) does not cancel the
        # lookup the others wait for.
        return await asyncio.shield(lookup)

    def _forget_lookup(self, digest: str, done: asyncio.Future[Any]) -> None:
        if self._looking_up.get(digest) is done:
            del self._looking_up[digest]
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody waits for any more is not reported as lost

    async def _look_up(self, digest: str) -> tuple[Principal | None, float]:
        principal: Principal | None = None
        async with self.session_factory() as session:
            row = await session.scalar(select(self.model).where(self.model.key_hash == digest))
        expires: float | None = None
        if row is not None and row.revoked_at is None:
            left = None if row.expires_at is None else (row.expires_at - utcnow()).total_seconds()
            if left is None or left > 0:
                principal = Principal(row.id, row.name, frozenset(row.scopes))
                expires = None if left is None else time.monotonic() + left
        return principal, self._by_digest.put(digest, principal, expires)

    def clear(self) -> None:
        """Forget every cached answer (as if the cache's few seconds had passed); the next
        request looks its key up again, even if a lookup is under way."""
        self._by_digest.clear()
        self._by_key.clear()
        self._looking_up.clear()


_BEARER_DESCRIPTION = "An API key: `Authorization: Bearer cx_...`."


class ApiKeyBearer(HTTPBearer):
    """The dependency that authenticates a request and checks its scope, documented in the
    OpenAPI as the `HTTPBearer` security scheme. It also applies the rate limits
    (app.state.rate_limits, see cxkit.http.ratelimit): a known key is counted against its own
    limit (429 past it), an unknown, revoked or expired one against its client address's
    failed-authentication limit (429 instead of 401 past it).

    One dependency that reads the header itself, rather than HTTPBearer nested under a
    function: FastAPI solves each dependency level with its own pass over the request (a
    measurable share of a GET by id)."""

    def __init__(self, scope: str) -> None:
        super().__init__(scheme_name="HTTPBearer", description=_BEARER_DESCRIPTION, auto_error=False)
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        scheme, key = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("send an API key as `Authorization: Bearer <key>`", headers={"WWW-Authenticate": "Bearer"})
        state = request.app.state
        principal = await state.auth.verify(key)
        limits = getattr(state, "rate_limits", None)
        if principal is None:
            if limits is not None:
                await limits.check_failed_auth(request.scope)
            raise Unauthorized("unknown, revoked or expired API key", headers={"WWW-Authenticate": "Bearer"})
        # Once per request, even where a route asks for the key twice (router and route).
        if limits is not None and SCOPE_KEY not in request.scope:
            await limits.check_key(request.scope, principal.key_str)
        if not principal.has(self.scope):
            raise Forbidden(f"this operation needs the `{self.scope}` scope")
        request.state.principal = principal
        return principal


def require_scope(scope: str) -> ApiKeyBearer:
    """The dependency for routes that need `scope` (see ApiKeyBearer)."""
    return ApiKeyBearer(scope)


Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
