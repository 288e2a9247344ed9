"""Fan-out and delivery of webhooks.

`WebhookFanout` is called by the outbox relay inside the transaction that marks a batch sent:
it queues one delivery per (event, enabled subscription whose `event_types` match), so a
request never waits for a webhook and no event is queued twice or lost. Subscriptions are
cached for `webhook_subscription_cache_seconds`; with none, a batch costs a dictionary lookup.

`WebhookWorker` sends the queue: per round it claims the due deliveries that head their
(subscription, customer) queue (`FOR UPDATE SKIP LOCKED`, so several replicas share the work and
never send one twice at once), sends them concurrently, signed, and records each attempt. A
customer's next delivery waits until the one before it succeeded or was given up, so a receiver
sees one customer's events in order.

Only a queue's head has a due time (`next_attempt_at`): the fan-out queues a delivery behind an
earlier pending one of its customer without one, and finishing a head gives the next its time.
So a round reads the due heads from their own index, however long the queues behind a failing
receiver grow (100,000 waiting took 235 ms a round to walk through). The claim still checks
that nothing earlier is pending, so order never rests on the due times. A delivery queued
while its customer's head is being sent is due at once (it could be finishing in a
transaction that does not see the new one); a periodic sweep (`SWEEP_INTERVAL_S`) gives a time
to any head still left without one.

An attempt has `webhook_timeout_seconds` in all, from connecting to the status line, and of
an answer only its status and the start of an error's body are read (`ERROR_BODY_READ`), so a
receiver that drips or floods its answer holds neither the round nor the worker's memory.

Timeouts, connection errors, a host that does not resolve, 408, 429 and 5xx are retried with exponential backoff and jitter
until `webhook_max_age_hours`; a 429 or 503 with `Retry-After` (seconds or an HTTP date) waits
at least that long, though never past the retry window; 410 disables the subscription; other
answers give the delivery up. Every attempt carries the same `webhook-id` (the event id)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import new_id, session_connection, utcnow
from cxkit.metrics import WEBHOOK_BACKLOG, WEBHOOK_DELIVERIES
from cxkit.settings import ServiceSettings
from cxkit.webhooks.models import FAILED, PENDING, PING, SUCCEEDED
from cxkit.webhooks.signing import signed_headers
from cxkit.webhooks.targets import TargetRefused, TargetUnresolved, check_target, guarded_transport

log = logging.getLogger(__name__)
RETRYABLE_STATUSES = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})  # the answers whose Retry-After is honoured (RFC 9110 §10.2.3)
ATTEMPT_LOG_KEPT = 50  # attempts kept in a delivery's log (the oldest are dropped)
SWEEP_INTERVAL_S = 30.0  # how often the worker gives a time to queue heads left without one
CONTENT_TYPE = "application/cloudevents+json"
ERROR_BODY_READ = 1024  # bytes of a failed answer's body read, for the first 200 characters of its error


def retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """The wait after the `attempts`-th failed attempt: base * 2^(attempts-1), capped, then
    jittered to between half and all of it (so receivers that come back are not hit by every
    retry at once)."""
    delay = min(cap, base * 2 ** min(attempts - 1, 40))
    return random.uniform(delay / 2, delay)


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """The wait a `Retry-After` value asks for: delay-seconds or an HTTP date (RFC 9110
    §10.2.3); None when absent or not understood, so the usual backoff applies."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class Webhooks:
    """A service's webhook set-up: its two tables, the event types it can deliver, and the
    state the relay, the worker and the API share in one process."""

    subscription_model: type[Any]
    delivery_model: type[Any]
    event_types: Sequence[str]
    settings: ServiceSettings
    # (monotonic expiry, [(subscription id, event types or None for all)])
    _cache: tuple[float, list[tuple[uuid.UUID, frozenset[str] | None]]] = field(default=(0.0, []), repr=False)
    _wakeups: dict[asyncio.AbstractEventLoop, asyncio.Event] = field(default_factory=dict, repr=False)

    @property
    def subscriptions_table(self) -> str:
        return str(self.subscription_model.__tablename__)

    @property
    def deliveries_table(self) -> str:
        return str(self.delivery_model.__tablename__)

    @property
    def retry_window(self) -> dt.timedelta:
        """How long a queued delivery is retried before it is given up."""
        return dt.timedelta(hours=self.settings.webhook_max_age_hours)

    def subscriptions_changed(self) -> None:
        """Drop the cached subscriptions (after a change through this process's API)."""
        self._cache = (0.0, [])

    def wakeup(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        event = self._wakeups.get(loop)
        if event is None:
            for stale in [lp for lp in self._wakeups if lp.is_closed()]:
                del self._wakeups[stale]
            event = self._wakeups[loop] = asyncio.Event()
        return event

    def wake_worker(self) -> None:
        """Have the worker look at once (new or re-queued deliveries were committed)."""
        with contextlib.suppress(RuntimeError):
            self.wakeup().set()

    async def subscriptions(self, conn: asyncpg.Connection) -> list[tuple[uuid.UUID, frozenset[str] | None]]:
        expires, subscriptions = self._cache
        now = time.monotonic()
        if expires > now:
            return subscriptions
        rows = await conn.fetch(f"SELECT id, event_types FROM {self.subscriptions_table} WHERE enabled")
        subscriptions = [(r["id"], frozenset(_json(r["event_types"])) or None) for r in rows]
        self._cache = (now + self.settings.webhook_subscription_cache_seconds, subscriptions)
        return subscriptions


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


class WebhookFanout:
    """Queues deliveries for the outbox rows a relay round sent (see the module docstring)."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks
        self.queued = False

    async def add(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> int:
        """In the relay's transaction: a delivery per (row, matching subscription). Rows need
        `event_id`, `event_type`, `key` and `value`."""
        if not rows:
            return 0
        subscriptions = await self.webhooks.subscriptions(conn)
        if not subscriptions:
            return 0
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        for row in rows:
            for subscription_id, types in subscriptions:
                if types is None or row["event_type"] in types:
                    for column, value in zip(
                        columns,
                        (new_id(), subscription_id, str(row["event_id"]), row["event_type"], row["key"] or "", row["value"]),
                        strict=True,
                    ):
                        column.append(value)
        if not columns[0]:
            return 0
        now = utcnow()
        expires = now + self.webhooks.retry_window
        # seq (an identity) follows the order of the unnested rows: the outbox order. A delivery
        # waits without a due time behind a pending one of its customer that is not being sent
        # (SKIP LOCKED passes over a claimed one, which may be finishing in a transaction that
        # would not see this one to release it; the one we find stays unclaimed until we commit).
        table = self.webhooks.deliveries_table
        await conn.execute(
            f"INSERT INTO {table} (id, subscription_id, webhook_id, event_type, ordering_key, "
            "payload, status, attempts, next_attempt_at, attempt_log, created_at, updated_at, expires_at) "
            "SELECT d.id, d.subscription_id, d.webhook_id, d.event_type, d.ordering_key, d.payload, "
            f"'{PENDING}', 0, CASE WHEN d.first AND NOT EXISTS (SELECT 1 FROM {table} p "
            "WHERE p.subscription_id = d.subscription_id AND p.ordering_key = d.ordering_key "
            f"AND p.status = '{PENDING}' FOR KEY SHARE SKIP LOCKED) THEN $7::timestamptz END, '[]'::jsonb, $7, $7, $8 "
            "FROM (SELECT u.*, row_number() OVER (PARTITION BY u.subscription_id, u.ordering_key ORDER BY u.n) = 1 "
            "AS first FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[]) "
            "WITH ORDINALITY AS u(id, subscription_id, webhook_id, event_type, ordering_key, payload, n)) d "
            "ORDER BY d.n ON CONFLICT (subscription_id, webhook_id) DO NOTHING",
            *columns,
            now,
            expires,
        )
        self.queued = True
        return len(columns[0])

    def committed(self) -> None:
        """After the relay's transaction committed: wake the worker if deliveries were queued."""
        if self.queued:
            self.queued = False
            self.webhooks.wake_worker()


@dataclass
class Attempt:
    """What one attempt of one delivery came to."""

    delivery: asyncpg.Record
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    refused: bool = False  # the SSRF guard stopped it
    retry_after_s: float | None = None  # what the receiver's Retry-After asked for

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def should_retry(self) -> bool:
        if self.refused:
            return False
        return self.status_code is None or retryable(self.status_code)


class WebhookWorker:
    """Sends queued deliveries until cancelled (see the module docstring)."""

    backlog_interval_s = 5.0

    def __init__(
        self,
        webhooks: Webhooks,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.webhooks = webhooks
        self.settings = webhooks.settings
        self.session_factory = session_factory
        self._client = httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_seconds,
            follow_redirects=False,  # a redirect could lead past the SSRF guard
            transport=transport
            or guarded_transport(
                allow_private=self.settings.webhook_allow_private_targets, proxy=self.settings.webhook_proxy_url
            ),
            # No compressed answers: only the start of an error's body is read, as it is.
            headers={"user-agent": f"{self.settings.service_name}-webhooks", "accept-encoding": "identity"},
        )
        self._sent = WEBHOOK_DELIVERIES.labels(self.settings.service_name, "succeeded")
        self._retried = WEBHOOK_DELIVERIES.labels(self.settings.service_name, "retried")
        self._failed = WEBHOOK_DELIVERIES.labels(self.settings.service_name, "failed")
        self._backlog = WEBHOOK_BACKLOG.labels(self.settings.service_name)
        self._backlog_measured = -float("inf")

    @property
    def claim_sql(self) -> str:
        """A round's claim ($1 now, $2 how many): the due deliveries, soonest first, read from
        the due index; of them only the heads of their customer's queue (nothing earlier
        pending), of enabled subscriptions, and not claimed by another worker."""
        deliveries, subscriptions = self.webhooks.deliveries_table, self.webhooks.subscriptions_table
        return (
            "SELECT d.id, d.subscription_id, d.ordering_key, d.webhook_id, d.event_type, d.payload, d.attempts, d.expires_at, "
            "s.url, s.secret, CASE WHEN s.previous_secret_expires_at > $1 THEN s.previous_secret END AS previous_secret "
            f"FROM {deliveries} d JOIN {subscriptions} s ON s.id = d.subscription_id "
            f"WHERE d.status = '{PENDING}' AND d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $1 AND s.enabled "
            f"AND NOT EXISTS ({self._earlier_pending}) "
            "ORDER BY d.next_attempt_at, d.seq LIMIT $2 FOR UPDATE OF d SKIP LOCKED"
        )

    @property
    def _earlier_pending(self) -> str:
        return (
            f"SELECT 1 FROM {self.webhooks.deliveries_table} p WHERE p.subscription_id = d.subscription_id "
            f"AND p.ordering_key = d.ordering_key AND p.status = '{PENDING}' AND p.seq < d.seq"
        )

    async def deliver_once(self) -> int:
        """One round: claim the due heads of their queues, send them, record the outcomes, and
        give the next delivery of each finished queue head its due time. Returns how many were
        attempted."""
        async with self.session_factory() as session, session.begin():
            conn = await session_connection(session)
            claimed = await conn.fetch(self.claim_sql, utcnow(), self.settings.webhook_batch_size)
            if claimed:
                attempts = await asyncio.gather(*(self._attempt(row) for row in claimed))
                finished = []
                for attempt in attempts:
                    still_pending = await self._record(conn, attempt)
                    if not still_pending:
                        finished.append(attempt.delivery)
                if finished:
                    await self._release_next(conn, finished)
        await self.measure_backlog()  # deliveries waiting for a retry count too
        return len(claimed)

    async def _release_next(self, conn: asyncpg.Connection, finished: list[asyncpg.Record]) -> None:
        """The next pending delivery of each finished one's queue is due now (if it was waiting)."""
        table = self.webhooks.deliveries_table
        await conn.execute(
            f"UPDATE {table} d SET next_attempt_at = $1 FROM (SELECT (SELECT p.id FROM {table} p "
            f"WHERE p.subscription_id = k.subscription_id AND p.ordering_key = k.ordering_key AND p.status = '{PENDING}' "
            "ORDER BY p.seq LIMIT 1) AS id FROM unnest($2::uuid[], $3::text[]) AS k(subscription_id, ordering_key)) n "
            "WHERE d.id = n.id AND d.next_attempt_at IS NULL",
            utcnow(),
            [d["subscription_id"] for d in finished],
            [d["ordering_key"] for d in finished],
        )

    async def sweep(self) -> int:
        """Give a due time to every pending delivery that heads its queue without one: one
        queued while its predecessor was finishing in another transaction (neither saw the
        other, so no one released it). Returns how many; the worker runs it every
        `SWEEP_INTERVAL_S`. It reads the waiting deliveries once, so it is not run per round.

        It also forgets the replaced secrets whose overlap is over: such a secret signs
        nothing more, and a secret kept for nothing is one more to leak (a backup, a dump).
        `previous_secret_expires_at` stays, so what a read shows does not change."""
        now = utcnow()
        async with self.session_factory() as session, session.begin():
            conn = await session_connection(session)
            status = await conn.execute(
                f"UPDATE {self.webhooks.deliveries_table} d SET next_attempt_at = $1 "
                f"WHERE d.status = '{PENDING}' AND d.next_attempt_at IS NULL AND NOT EXISTS ({self._earlier_pending})",
                now,
            )
            await conn.execute(
                f"UPDATE {self.webhooks.subscriptions_table} SET previous_secret = NULL "
                "WHERE previous_secret IS NOT NULL AND previous_secret_expires_at <= $1",
                now,
            )
        return int(status.split()[-1])

    async def _attempt(self, delivery: asyncpg.Record) -> Attempt:
        attempt = Attempt(delivery)
        started = time.perf_counter()
        try:
            await check_target(
                delivery["url"],
                allow_private=self.settings.webhook_allow_private_targets,
                resolve_names=not self.settings.webhook_proxy_resolves,
            )
            body = bytes(delivery["payload"])
            headers = signed_headers(delivery["secret"], delivery["webhook_id"], body, utcnow(), delivery["previous_secret"])
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                await self._send(attempt, body, {**headers, "content-type": CONTENT_TYPE})
        except TargetUnresolved as exc:
            attempt.error = str(exc)  # retried: DNS may answer next time
        except TargetRefused as exc:
            attempt.refused, attempt.error = True, str(exc)
        except (TimeoutError, httpx.TimeoutException):
            if attempt.status_code is None:
                attempt.error = f"no answer within {self.settings.webhook_timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # one delivery's surprise must not undo the round's other outcomes
            log.exception("webhook attempt failed", extra={"delivery_id": str(delivery["id"])})
            attempt.error = f"{type(exc).__name__}: {exc}"[:500]
        attempt.duration_ms = round((time.perf_counter() - started) * 1000)
        return attempt

    async def _send(self, attempt: Attempt, body: bytes, headers: dict[str, str]) -> None:
        """POST the delivery. The answer's status decides; of its body at most ERROR_BODY_READ
        bytes are read (all of a short one, so the connection is kept for the next delivery),
        and a failure's error holds its start, as much as arrived in time (the status is set
        before the body is read)."""
        async with self._client.stream("POST", attempt.delivery["url"], content=body, headers=headers) as response:
            attempt.status_code = response.status_code
            if response.status_code in RETRY_AFTER_STATUSES:
                attempt.retry_after_s = retry_after_seconds(response.headers.get("retry-after"), utcnow())
            start = bytearray()
            if not attempt.succeeded:
                attempt.error = f"HTTP {response.status_code}: "
            async for chunk in response.aiter_raw():
                start += chunk
                if not attempt.succeeded:
                    attempt.error = f"HTTP {response.status_code}: {start[:ERROR_BODY_READ].decode('utf-8', 'replace')[:200]}"
                if len(start) >= ERROR_BODY_READ:
                    break  # the rest is not read: the connection is closed with the answer

    async def _record(self, conn: asyncpg.Connection, attempt: Attempt) -> bool:
        """Store the attempt's outcome; True while the delivery stays pending (a retry)."""
        d = attempt.delivery
        now = utcnow()
        attempts = d["attempts"] + 1
        entry = {
            "at": now.isoformat().replace("+00:00", "Z"),
            "status_code": attempt.status_code,
            "duration_ms": attempt.duration_ms,
            "error": attempt.error,
        }
        status, next_at, delivered_at = PENDING, None, None
        if attempt.succeeded:
            status, delivered_at = SUCCEEDED, now
            self._sent.inc()
        elif attempt.should_retry and now < d["expires_at"]:
            wait = backoff_seconds(attempts, self.settings.webhook_retry_base_seconds, self.settings.webhook_retry_max_seconds)
            if attempt.retry_after_s is not None:
                wait = max(wait, attempt.retry_after_s)
            # Never past the window: a receiver asking for longer gets one last attempt at its end.
            wait = min(wait, (d["expires_at"] - now).total_seconds())
            next_at = now + dt.timedelta(seconds=wait)
            self._retried.inc()
        else:
            status = FAILED
            self._failed.inc()
        await conn.execute(
            f"UPDATE {self.webhooks.deliveries_table} SET status = $2, attempts = $3, next_attempt_at = $4, "
            "last_status_code = $5, last_error = $6, last_duration_ms = $7, delivered_at = COALESCE($8, delivered_at), "
            f"updated_at = $9, attempt_log = CASE WHEN jsonb_array_length(attempt_log) >= {ATTEMPT_LOG_KEPT} "
            "THEN (attempt_log - 0) || $10::jsonb ELSE attempt_log || $10::jsonb END WHERE id = $1",
            d["id"],
            status,
            attempts,
            next_at,
            attempt.status_code,
            attempt.error,
            attempt.duration_ms,
            delivered_at,
            now,
            orjson.dumps([entry]).decode(),
        )
        await self._count_on_subscription(conn, attempt, now)
        return status == PENDING

    async def _count_on_subscription(self, conn: asyncpg.Connection, attempt: Attempt, now: dt.datetime) -> None:
        if attempt.delivery["event_type"] == PING:
            return  # a test delivery tells whoever sent it, and nothing more
        table = self.webhooks.subscriptions_table
        subscription_id = attempt.delivery["subscription_id"]
        if attempt.succeeded:
            await conn.execute(
                f"UPDATE {table} SET consecutive_failures = 0 WHERE id = $1 AND consecutive_failures <> 0", subscription_id
            )
            return
        if attempt.status_code == 410:
            reason = "the receiver answered 410 Gone"
        else:
            reason = f"{self.settings.webhook_failures_before_disable} consecutive failed attempts"
        row = await conn.fetchrow(
            f"UPDATE {table} SET consecutive_failures = consecutive_failures + 1, "
            "enabled = CASE WHEN $2 OR consecutive_failures + 1 >= $3 THEN false ELSE enabled END, "
            "disabled_reason = CASE WHEN enabled AND ($2 OR consecutive_failures + 1 >= $3) THEN $4 "
            "ELSE disabled_reason END, "
            "version = version + CASE WHEN enabled AND ($2 OR consecutive_failures + 1 >= $3) THEN 1 ELSE 0 END, "
            "updated_at = CASE WHEN enabled AND ($2 OR consecutive_failures + 1 >= $3) THEN $5 ELSE updated_at END "
            "WHERE id = $1 RETURNING enabled",
            subscription_id,
            attempt.status_code == 410,
            self.settings.webhook_failures_before_disable,
            reason,
            now,
        )
        if row is not None and not row["enabled"]:
            self.webhooks.subscriptions_changed()

    async def backlog(self) -> int:
        async with self.session_factory() as session:
            conn = await session_connection(session)
            count = await conn.fetchval(f"SELECT count(*) FROM {self.webhooks.deliveries_table} WHERE status = '{PENDING}'")
        return int(count)

    async def measure_backlog(self, *, force: bool = False) -> None:
        """Count the backlog into `webhook_backlog`, at most every `backlog_interval_s`."""
        if force or time.monotonic() - self._backlog_measured >= self.backlog_interval_s:
            self._set_backlog(await self.backlog())

    def _set_backlog(self, count: int) -> None:
        self._backlog_measured = time.monotonic()
        self._backlog.set(count)

    async def run(self) -> None:
        """Deliver until cancelled; a failing round (the database away) is retried."""
        wakeup = self.webhooks.wakeup()
        poll = self.settings.webhook_poll_interval_ms / 1000
        backoff = 0.2
        swept = -float("inf")
        while True:
            try:
                wakeup.clear()
                if time.monotonic() - swept >= SWEEP_INTERVAL_S:
                    await self.sweep()
                    swept = time.monotonic()
                if await self.deliver_once():
                    backoff = 0.2
                    continue  # the next of each customer's queue may be due now
                backoff = 0.2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook round failed, retrying", extra={"error": repr(exc), "retry_in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stop(self) -> None:
        await self._client.aclose()
