"""`/v1/webhooks`: subscriptions, their delivery log and manual redelivery. Both services
mount it (`webhooks_router(webhooks)`); every route needs the `admin` scope."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Path, Query
from starlette.responses import Response

from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import require_scope
from cxkit.http.deps import SessionDep
from cxkit.http.etag import etag_for
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter
from cxkit.webhooks import service
from cxkit.webhooks.delivery import Webhooks
from cxkit.webhooks.schemas import (
    EXAMPLE_DELIVERY_ID,
    EXAMPLE_ID,
    DeliveryPage,
    DeliveryRead,
    DeliveryStatus,
    WebhookCreate,
    WebhookPage,
    WebhookRead,
    WebhookSecretRotation,
    WebhookUpdate,
    WebhookWithSecret,
)

WebhookIdPath = Annotated[uuid.UUID, Path(description="The webhook subscription's id.", examples=[EXAMPLE_ID])]
DeliveryIdPath = Annotated[
    uuid.UUID, Path(description="The delivery's id (from the delivery log).", examples=[EXAMPLE_DELIVERY_ID])
]
IfMatch = Annotated[str | None, Header(alias="If-Match", description="The `ETag` last read; 412 if it changed since.")]

HOW_IT_WORKS = (
    "Each event this service announces on Kafka is POSTed to every enabled subscription whose `event_types` "
    "match, by a background worker (never on the request path), signed per Standard Webhooks: headers `webhook-id` "
    "(the event id, the same on every attempt: deduplicate on it), `webhook-timestamp` and `webhook-signature` "
    "(`v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the secret). The body is the CloudEvent exactly as on Kafka. "
    "A customer's events arrive in order: the next waits until the one before was received or given up. Timeouts, "
    "connection errors, a host that does not resolve, 408, 429 and 5xx are retried with exponential backoff and jitter "
    "for up to 24 h (`WEBHOOK_MAX_AGE_HOURS`), "
    "waiting at least as long as a 429's or 503's `Retry-After` asks (within those 24 h); 410 "
    "disables the subscription, as does a run of failed attempts (`WEBHOOK_FAILURES_BEFORE_DISABLE`)."
)


def webhooks_router(webhooks: Webhooks) -> GatedRouter:
    """The routes over this service's webhook tables."""
    router = GatedRouter(
        prefix="/webhooks", tags=["webhooks"], dependencies=[Depends(require_scope("admin"))], route_class=TypedRoute
    )

    def answer(subscription: object) -> ModelResponse[WebhookRead]:
        body = WebhookRead.model_validate(subscription)
        return json_response(body, headers={"ETag": etag_for(body.version)})

    def answer_with_secret(subscription: object, status: int = 200) -> ModelResponse[WebhookWithSecret]:
        body = WebhookWithSecret.model_validate(subscription)
        headers = {"ETag": etag_for(body.version)}
        if status == 201:
            headers["Location"] = f"/v1/webhooks/{body.id}"
        return json_response(body, status, headers=headers)

    @router.post(
        "",
        status_code=201,
        summary="Subscribe a webhook",
        description=f"Registers a receiver URL. The answer holds the signing `secret` (`whsec_<base64>`), shown this once. "
        f"An unknown event type, or a URL that is not http(s) or points at a private, loopback or link-local address "
        f"(unless the service allows them), is a 422. {HOW_IT_WORKS} Needs `admin`.",
        responses=problem_responses(401, 403, 422),
    )
    async def create_webhook(body: WebhookCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[WebhookWithSecret]:
        async def operation() -> ModelResponse[WebhookWithSecret]:
            return answer_with_secret(await service.create_subscription(session, webhooks, body), 201)

        response = await idem.execute(session, operation)
        webhooks.subscriptions_changed()
        return response

    @router.get(
        "",
        summary="List webhooks",
        description="Every subscription, oldest first (secrets are never listed). Needs `admin`.",
        responses=problem_responses(401, 403, 422),
    )
    async def list_webhooks(session: SessionDep, page: Annotated[PageParams, Depends(page_params)]) -> ModelResponse[WebhookPage]:
        rows, cursor = await service.list_subscriptions(session, webhooks, page)
        return json_response(WebhookPage(items=[WebhookRead.model_validate(r) for r in rows], next_cursor=cursor))

    @router.get(
        "/{webhook_id}",
        summary="Get a webhook",
        description="One subscription with its `ETag` (without its secret). Needs `admin`.",
        responses=problem_responses(401, 403, 404, 422),
    )
    async def get_webhook(webhook_id: WebhookIdPath, session: SessionDep) -> ModelResponse[WebhookRead]:
        return answer(await service.get_subscription(session, webhooks, webhook_id))

    @router.patch(
        "/{webhook_id}",
        summary="Change, enable or disable a webhook",
        description="Change the URL, the `event_types` or the description, or set `enabled`. Enabling a subscription "
        "that was disabled (by hand, by a 410 or by a run of failures) resets its failure count, and the events "
        "queued for it are sent again. Honours `If-Match`. Needs `admin`.",
        responses=problem_responses(401, 403, 404, 412, 422),
    )
    async def update_webhook(
        webhook_id: WebhookIdPath, body: WebhookUpdate, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
    ) -> ModelResponse[WebhookRead]:
        async def operation() -> ModelResponse[WebhookRead]:
            return answer(await service.update_subscription(session, webhooks, webhook_id, body, if_match))

        response = await idem.execute(session, operation)
        webhooks.subscriptions_changed()
        webhooks.wake_worker()
        return response

    @router.post(
        "/{webhook_id}/secret",
        summary="Rotate a webhook's secret",
        description="A new signing `secret`, shown this once; deliveries are signed with it from now on. The secret it "
        "replaces goes on signing them too, as a second `v1,` signature in `webhook-signature` (Standard Webhooks "
        "verifiers accept a delivery when any one matches), for `previous_secret_expires_in_seconds` (default a day; 0 "
        "stops it at once), so receivers switch to the new secret without refusing a delivery. The body is optional. "
        "Honours `If-Match`. Needs `admin`.",
        responses=problem_responses(401, 403, 404, 412, 422),
    )
    async def rotate_webhook_secret(
        webhook_id: WebhookIdPath,
        session: SessionDep,
        idem: IdempotencyDep,
        if_match: IfMatch = None,
        body: WebhookSecretRotation | None = None,
    ) -> ModelResponse[WebhookWithSecret]:
        rotation = body or WebhookSecretRotation()

        async def operation() -> ModelResponse[WebhookWithSecret]:
            return answer_with_secret(await service.rotate_secret(session, webhooks, webhook_id, if_match, rotation))

        return await idem.execute(session, operation)

    @router.delete(
        "/{webhook_id}",
        status_code=204,
        summary="Delete a webhook",
        description="Removes the subscription with its delivery log; nothing more is sent to it. Honours `If-Match`. "
        "Needs `admin`.",
        responses=problem_responses(401, 403, 404, 412, 422),
    )
    async def delete_webhook(
        webhook_id: WebhookIdPath, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
    ) -> Response:
        async def operation() -> Response:
            await service.delete_subscription(session, webhooks, webhook_id, if_match)
            return Response(status_code=204)

        response = await idem.execute(session, operation)
        webhooks.subscriptions_changed()
        return response

    @router.get(
        "/{webhook_id}/deliveries",
        summary="List a webhook's deliveries",
        description="The delivery log, newest first: per event its status (`pending`, `succeeded`, `failed` = given "
        "up), attempts, last response code, error and duration, when it is tried next, and every attempt. Filter by "
        "`status`. Needs `admin`.",
        responses=problem_responses(401, 403, 404, 422),
    )
    async def list_deliveries(
        webhook_id: WebhookIdPath,
        session: SessionDep,
        page: Annotated[PageParams, Depends(page_params)],
        status: Annotated[DeliveryStatus | None, Query(description="Only deliveries in this state.")] = None,
    ) -> ModelResponse[DeliveryPage]:
        rows, cursor = await service.list_deliveries(session, webhooks, webhook_id, status, page)
        return json_response(DeliveryPage(items=[DeliveryRead.model_validate(r) for r in rows], next_cursor=cursor))

    @router.get(
        "/{webhook_id}/deliveries/{delivery_id}",
        summary="Get a delivery",
        description="One delivery with its attempts. Needs `admin`.",
        responses=problem_responses(401, 403, 404, 422),
    )
    async def get_delivery(
        webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath, session: SessionDep
    ) -> ModelResponse[DeliveryRead]:
        return json_response(DeliveryRead.model_validate(await service.get_delivery(session, webhooks, webhook_id, delivery_id)))

    @router.post(
        "/{webhook_id}/deliveries/{delivery_id}/retry",
        status_code=202,
        summary="Deliver again",
        description="Queues the delivery again, due now, with a new 24 h retry window and the same `webhook-id` (a "
        "receiver that has it already can drop the repeat); works on failed, succeeded and pending deliveries. It "
        "keeps its place in its customer's order. 409 while the subscription is disabled. Needs `admin`.",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def retry_delivery(
        webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath, session: SessionDep, idem: IdempotencyDep
    ) -> ModelResponse[DeliveryRead]:
        async def operation() -> ModelResponse[DeliveryRead]:
            delivery = await service.retry_delivery(session, webhooks, webhook_id, delivery_id)
            return json_response(DeliveryRead.model_validate(delivery), 202)

        response = await idem.execute(session, operation)
        webhooks.wake_worker()
        return response

    @router.post(
        "/{webhook_id}/ping",
        status_code=202,
        summary="Send a test delivery",
        description="Queues a `webhook.ping` CloudEvent (`data`: `webhook`, the subscription's id, and a `message`) to the "
        "webhook's URL, due now and signed like every delivery, whatever its `event_types`: to check a receiver and "
        "its signature check before a real event comes. It waits for no customer's events and is attempted once: "
        "follow it in the delivery log (the answer is that delivery); it is not retried (`retry` sends it again) and "
        "its failure does not count towards disabling the webhook. 409 while the subscription is disabled. Needs `admin`.",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def ping_webhook(webhook_id: WebhookIdPath, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[DeliveryRead]:
        async def operation() -> ModelResponse[DeliveryRead]:
            return json_response(DeliveryRead.model_validate(await service.ping(session, webhooks, webhook_id)), 202)

        response = await idem.execute(session, operation)
        webhooks.wake_worker()
        return response

    return router
