"""Rate limits (cxkit.http.ratelimit) on the `limits` storages: in process, and on the Redis
server at 127.0.0.1:6379 shared by two limiters as two replicas would share it."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from cxkit.dev_broker import free_port
from cxkit.http.ratelimit import SCOPE_KEY, RateLimits, TooManyRequests, storage_for
from cxkit.settings import ServiceSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
FIELD = re.compile(r'^"(?P<name>[a-z-]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def fields(scope: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """(RateLimit-Policy value, parsed RateLimit value) a request's answer will carry."""
    headers = dict(scope[SCOPE_KEY])
    match = FIELD.match(headers[b"ratelimit"].decode())
    assert match, headers
    return headers[b"ratelimit-policy"].decode(), {"r": int(match["r"]), "t": int(match["t"])}


async def spend(limits: RateLimits, key_id: str, n: int) -> list[int]:
    remaining = []
    for _ in range(n):
        scope: dict[str, Any] = {}
        await limits.check_key(scope, key_id)
        remaining.append(fields(scope)[1]["r"])
    return remaining


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
async def test_a_key_gets_its_quota_then_429_with_retry_after(strategy: str) -> None:
    limits = RateLimits(per_key="3/minute", failed_auth="2/minute", strategy=strategy)
    assert await spend(limits, "key-a", 3) == [2, 1, 0]
    scope: dict[str, Any] = {}
    with pytest.raises(TooManyRequests) as info:
        await limits.check_key(scope, "key-a")
    policy, current = fields(scope)
    assert policy == '"key";q=3;w=60'
    assert current["r"] == 0 and 1 <= current["t"] <= 60
    assert info.value.status == 429 and info.value.headers == {"Retry-After": str(current["t"])}
    assert await spend(limits, "key-b", 1) == [2]  # every key has its own count


async def test_failed_authentications_are_counted_per_client_address() -> None:
    limits = RateLimits(per_key="100/minute", failed_auth="2/10 seconds")
    first: dict[str, Any] = {"client": ("192.0.2.7", 50000)}
    await limits.check_failed_auth(first)
    await limits.check_failed_auth({"client": ("192.0.2.7", 50001)})
    assert fields(first) == ('"failed-auth";q=2;w=10', {"r": 1, "t": fields(first)[1]["t"]})
    with pytest.raises(TooManyRequests):
        await limits.check_failed_auth({"client": ("192.0.2.7", 50002)})
    await limits.check_failed_auth({"client": ("192.0.2.8", 50000)})  # another address is not blocked


def test_settings_refuse_a_limit_that_limits_cannot_parse() -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        ServiceSettings(rate_limit_per_key="plenty")
    defaults = ServiceSettings()
    assert defaults.rate_limit_storage_url is None and defaults.max_body_bytes == 1_048_576
    assert RateLimits.from_settings(ServiceSettings(rate_limit_enabled=False)) is None


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    prefix = f"cx-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_replicas_on_redis_share_one_count(redis_prefix: str) -> None:
    settings = ServiceSettings(
        rate_limit_per_key="5/minute", rate_limit_storage_url=REDIS_URL, rate_limit_key_prefix=redis_prefix
    )
    replica_a, replica_b = RateLimits.from_settings(settings), RateLimits.from_settings(settings)
    assert replica_a is not None and replica_b is not None
    try:
        assert await spend(replica_a, "shared-key", 3) == [4, 3, 2]
        scope: dict[str, Any] = {}
        await replica_b.check_key(scope, "shared-key")  # B learns the window A opened
        assert fields(scope)[1]["r"] == 1 and 55 <= fields(scope)[1]["t"] <= 60
        await replica_a.check_key({}, "shared-key")
        with pytest.raises(TooManyRequests):
            await replica_b.check_key({}, "shared-key")
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            stored = [k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")]
        finally:
            await client.aclose()
        assert len(stored) == 1 and "shared-key" in stored[0]
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_an_unreachable_redis_lets_requests_through_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    limits = RateLimits(
        per_key="1/minute", failed_auth="1/minute", storage=storage_for(f"redis://127.0.0.1:{free_port()}/0", "cx-test")
    )
    with caplog.at_level(logging.WARNING, logger="cxkit.http.ratelimit"):
        for _ in range(3):
            scope: dict[str, Any] = {}
            await limits.check_key(scope, "k")
            assert SCOPE_KEY not in scope  # no count known: no fields rather than wrong ones
    warnings = [r for r in caplog.records if r.name == "cxkit.http.ratelimit"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    await limits.close()
