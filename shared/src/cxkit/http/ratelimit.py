"""Rate limits on the `limits` library: one per API key (every request of the key), one per
client address for failed authentication (unknown, revoked or expired keys).

Answers carry the IETF httpapi fields (draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Policy: "key";q=600;w=60` (quota, window in seconds) and
`RateLimit: "key";r=599;t=42` (remaining, seconds until the window resets). A request over
its limit gets 429 problem+json with `Retry-After`.

Counts live in the process (`async+memory://`) unless `rate_limit_storage_url` points at a
shared store (`async+redis://host:6379/0`), so that replicas share them. If that store is
unreachable, requests are let through (without the two fields) and a warning is logged at
most every 30 s: an outage of the limiter must not become an outage of the API.

Cost per request, fixed-window (the default): one counter update in the storage (`incr`,
one round trip on Redis). Its reset time is remembered from the hit that opened the window;
only when another replica opened it is the storage asked once (`get_expiry`). The other
strategies use the `limits` limiter as documented: `hit` and then `get_window_stats`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.types import Scope

from cxkit.http.problems import ProblemError
from cxkit.settings import ServiceSettings

log = logging.getLogger(__name__)

# Where a request's RateLimit / RateLimit-Policy header pairs wait for the response start
# (RequestContextMiddleware adds them to whatever answer goes out).
SCOPE_KEY = "cx.ratelimit"
STRATEGIES: dict[str, type[RateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
_WARN_EVERY_S = 30.0
_REDIS_SCHEMES = ("async+redis://", "async+rediss://", "async+redis+unix://")


class TooManyRequests(ProblemError):
    status, title, slug = 429, "Too many requests", "rate-limited"


@dataclass(frozen=True, slots=True)
class Quota:
    """What one hit left: whether it was allowed, how many remain, seconds to the reset."""

    allowed: bool
    remaining: int
    reset_s: int


class Policy:
    """One named limit (`"key"`, `"failed-auth"`) and its `RateLimit-Policy` field value."""

    def __init__(self, name: str, limit: str) -> None:
        self.name = name
        self.item: RateLimitItem = parse(limit)
        self.window_s = int(self.item.get_expiry())
        self.policy_header = (b"ratelimit-policy", f'"{name}";q={self.item.amount};w={self.window_s}'.encode())
        self._field = f'"{name}";r=%d;t=%d'.encode()

    def headers(self, quota: Quota) -> list[tuple[bytes, bytes]]:
        return [self.policy_header, (b"ratelimit", self._field % (quota.remaining, quota.reset_s))]


def storage_for(url: str | None, key_prefix: str) -> Storage:
    """The `limits` async storage for a URL (None: in this process)."""
    if not url:
        return MemoryStorage()
    if not url.startswith("async+"):
        url = "async+" + url  # `redis://...` is accepted as it is usually written
    if url.startswith(_REDIS_SCHEMES):
        # redis-py's asyncio client; short timeouts so a lost Redis cannot hold requests up.
        storage = storage_from_string(
            url,
            implementation="redispy",
            key_prefix=key_prefix,
            wrap_exceptions=True,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
    else:
        storage = storage_from_string(url, wrap_exceptions=True)
    assert isinstance(storage, Storage), f"{url} is not an async storage"
    return storage


class RateLimits:
    """The service's two limits over one storage (see the module docstring)."""

    def __init__(
        self,
        *,
        per_key: str,
        failed_auth: str,
        storage: Storage | None = None,
        strategy: str = "fixed-window",
    ) -> None:
        self.key = Policy("key", per_key)
        self.failed_auth = Policy("failed-auth", failed_auth)
        self.storage = storage or MemoryStorage()
        self.limiter = STRATEGIES[strategy](self.storage)
        self._fixed_window = isinstance(self.limiter, FixedWindowRateLimiter)
        self._resets: dict[str, float] = {}
        self._warned_at = 0.0

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RateLimits | None:
        if not settings.rate_limit_enabled:
            return None
        prefix = settings.rate_limit_key_prefix or settings.service_name
        return cls(
            per_key=settings.rate_limit_per_key,
            failed_auth=settings.rate_limit_failed_auth,
            storage=storage_for(settings.rate_limit_storage_url, prefix),
            strategy=settings.rate_limit_strategy,
        )

    async def check_key(self, scope: Scope, key_id: str) -> None:
        """Count a request of an authenticated key; 429 past its limit. The answer (whatever
        it is) carries the key's RateLimit fields."""
        quota = await self._hit(self.key, "key", key_id)
        if quota is None:
            return
        headers = self.key.headers(quota)
        scope[SCOPE_KEY] = headers
        if not quota.allowed:
            raise TooManyRequests(
                f"this API key made more than {self.key.item.amount} requests in {self.key.window_s} s; "
                f"retry in {quota.reset_s} s",
                headers={"Retry-After": str(quota.reset_s)},
            )

    async def check_failed_auth(self, scope: Scope) -> None:
        """Count a failed authentication from the client's address; 429 (instead of the 401 the
        caller is about to send) past the limit."""
        client = scope.get("client")
        address = client[0] if client else "unknown"
        quota = await self._hit(self.failed_auth, "failed-auth", address)
        if quota is None:
            return
        scope[SCOPE_KEY] = self.failed_auth.headers(quota)
        if not quota.allowed:
            raise TooManyRequests(
                f"too many requests with an unknown, revoked or expired API key from this address; retry in {quota.reset_s} s",
                headers={"Retry-After": str(quota.reset_s)},
            )

    async def _hit(self, policy: Policy, *identifiers: str) -> Quota | None:
        item = policy.item
        try:
            if self._fixed_window:
                key = item.key_for(*identifiers)
                count = await self.storage.incr(key, item.get_expiry())
                now = time.time()
                reset_at = self._resets.get(key)
                if count == 1 or reset_at is None or reset_at <= now:
                    # This hit opened the window, or another process did: learn when it ends.
                    reset_at = now + item.get_expiry() if count == 1 else await self.storage.get_expiry(key)
                    if len(self._resets) > 50_000:
                        self._resets = {k: v for k, v in self._resets.items() if v > now}
                    self._resets[key] = reset_at
                allowed = count <= item.amount
                remaining = max(0, item.amount - count)
            else:
                allowed = await self.limiter.hit(item, *identifiers)
                reset_at, remaining = await self.limiter.get_window_stats(item, *identifiers)
                now = time.time()
        except (StorageError, OSError) as exc:
            self._warn(exc)
            return None
        return Quota(allowed, remaining, max(1, int(reset_at - now + 0.999)))

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            cause = exc.__cause__ or exc
            log.warning("rate limit storage unreachable; requests pass unlimited", extra={"error": repr(cause)[:300]})

    async def close(self) -> None:
        """Release the storage's connections (shared storage only)."""
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()
