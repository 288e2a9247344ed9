"""Feedback from any channel with a local sentiment score."""

from __future__ import annotations

from typing import Any

import httpx

from cem.feedback.sentiment import sentiment_of


def test_sentiment_labels_come_from_vader_compound_cutoffs() -> None:
    assert sentiment_of("The parcel came a day early and the driver was lovely.").label == "positive"
    assert sentiment_of("The app keeps logging me out. Annoying and useless!").label == "negative"
    neutral = sentiment_of("The store opens at nine.")
    assert neutral.label == "neutral" and neutral.score == 0.0


async def test_feedback_gets_sentiment_is_linked_and_announced(client: httpx.AsyncClient, make: Any, outbox: Any) -> None:
    await make.touchpoint("delivery")
    customer = await make.customer(email="ada@example.com")
    r = await client.post(
        "/v1/feedback",
        json={
            "email": "ADA@example.com",
            "touchpoint": "delivery",
            "channel": "chat",
            "text": "Terrible, the box was crushed.",
            "rating": 1,
        },
    )
    assert r.status_code == 201, r.text
    fb = r.json()
    assert fb["customer_id"] == str(customer) and fb["sentiment"]["label"] == "negative" and fb["sentiment"]["score"] < -0.05
    assert (fb["rating"], fb["rating_scale_min"], fb["rating_scale_max"]) == (1.0, 1, 5)
    assert (await client.get(f"/v1/feedback/{fb['id']}")).json() == fb
    (event,) = await outbox("feedback.received")
    assert event["subject"] == str(customer)
    assert event["data"]["sentiment_label"] == "negative" and event["data"]["rating_scale_max"] == 5
    anonymous = await client.post(
        "/v1/feedback", json={"channel": "app_store", "text": "Great app, love it", "rating": 9, "rating_scale_max": 10}
    )
    assert anonymous.status_code == 201 and anonymous.json()["customer_id"] is None
    assert anonymous.json()["sentiment"]["label"] == "positive" and anonymous.json()["rating_scale_max"] == 10


async def test_same_external_reference_twice_is_a_conflict(client: httpx.AsyncClient) -> None:
    body = {"channel": "app_store", "text": "Crashes on start", "external_ref": "review-1"}
    assert (await client.post("/v1/feedback", json=body)).status_code == 201
    assert (await client.post("/v1/feedback", json=body)).status_code == 409
    assert (await client.post("/v1/feedback", json={**body, "channel": "play_store"})).status_code == 201


async def test_feedback_validation(client: httpx.AsyncClient) -> None:
    customer = "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10"
    for body in [
        {"channel": "chat"},
        {"channel": "chat", "text": "   "},
        {"channel": "chat", "text": "x" * 10_001},
        {"channel": "Chat Room", "text": "x"},
        {"text": "x"},
        {"channel": "chat", "text": "x", "rating": 6},
        {"channel": "chat", "text": "x", "rating": 3, "rating_scale_min": 5, "rating_scale_max": 1},
        {"channel": "chat", "text": "x", "rating": "good"},
        {"channel": "chat", "text": "x", "customer_id": customer},  # not announced by the CRM
        {"channel": "chat", "text": "x", "customer_id": customer, "email": "a@example.com"},
        {"channel": "chat", "text": "x", "touchpoint": "nowhere"},
        {"channel": "chat", "text": "x", "received_at": "2999-01-01T00:00:00Z"},
        {"channel": "chat", "text": "bad \u0000 byte"},
        {"channel": "chat", "text": "x", "sentiment": "positive"},
    ]:
        r = await client.post("/v1/feedback", json=body)
        assert r.status_code == 422, (body, r.text)
    r = await client.post(
        "/v1/feedback", content=b'{"channel": "chat", "text": "x", "rating": NaN}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_list_feedback_with_filters(client: httpx.AsyncClient, make: Any) -> None:
    customer = str(await make.customer())
    items = [
        {
            "customer_id": customer,
            "channel": "chat",
            "text": "Wonderful service, thank you!",
            "received_at": "2026-11-01T09:00:00Z",
        },
        {"channel": "email", "text": "Awful, I want a refund.", "received_at": "2026-11-02T09:00:00Z"},
        {"channel": "chat", "text": "Where is my parcel?", "received_at": "2026-11-03T09:00:00Z"},
    ]
    ids = [(await client.post("/v1/feedback", json=i)).json()["id"] for i in items]

    async def found(**params: Any) -> list[str]:
        return [f["id"] for f in (await client.get("/v1/feedback", params=params)).json()["items"]]

    assert await found() == ids[::-1]
    assert await found(channel="chat") == [ids[2], ids[0]]
    assert await found(sentiment="negative") == [ids[1]]
    assert await found(customer_id=customer) == [ids[0]]
    assert await found(**{"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T00:00:00Z"}) == [ids[1]]
    page = (await client.get("/v1/feedback", params={"limit": 2})).json()
    rest = (await client.get("/v1/feedback", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [f["id"] for f in page["items"] + rest["items"]] == ids[::-1]
    assert (await client.get("/v1/feedback", params={"sentiment": "angry"})).status_code == 422
