"""A 422 for a rule the schema cannot state names its field as a request-validation error does:
`errors[].loc` (`["query", "created_to"]`, `["body", "end_date"]`) and a detail that begins
with that path, so a client can show it beside the field."""

from __future__ import annotations

from typing import Any

import httpx

PDF = b"%PDF-1.4 rule errors"


def assert_names(response: httpx.Response, loc: list[str], msg_part: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["loc"] for e in problem["errors"]] == [loc], problem
    assert msg_part in problem["errors"][0]["msg"]
    assert problem["detail"].startswith(".".join(loc) + ": "), problem["detail"]


async def test_rule_errors_of_queries_and_bodies_name_the_field(client: httpx.AsyncClient, make: Any) -> None:
    window = {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    funnel = await client.get("/v1/funnel", params={"created_from": window["from"], "created_to": window["to"]})
    assert_names(funnel, ["query", "created_to"], "must be before")
    interactions = await client.get("/v1/interactions", params={"occurred_from": window["from"], "occurred_to": window["to"]})
    assert_names(interactions, ["query", "occurred_to"], "must be before")

    assert_names(await client.get("/v1/deals", params={"stage": "Proposal"}), ["query", "pipeline_id"], "needs pipeline_id")
    pipeline = await make.pipeline()
    unknown_stage = await client.get("/v1/deals", params={"stage": "Nope", "pipeline_id": pipeline["id"]})
    assert_names(unknown_stage, ["query", "stage"], "has no stage named 'Nope'")

    stages = [
        {"name": "Open", "probability": 0.1},
        {"name": "Won", "probability": 1, "is_won": True},
        {"name": "Lost", "probability": 0, "is_lost": True},
    ]
    with_ids = [{**stage, "id": f"0190a6f0-0000-7000-8000-00000000000{n}"} for n, stage in enumerate(stages)]
    assert_names(await client.post("/v1/pipelines", json={"name": "Ids", "stages": with_ids}), ["body", "stages"], "no id")

    campaign = await make.campaign(start_date="2026-03-01")
    ends_early = await client.patch(f"/v1/campaigns/{campaign['id']}", json={"end_date": "2026-02-01"})
    assert_names(ends_early, ["body", "end_date"], "before start_date")

    customer = await make.customer()
    other_deal = await make.deal()
    files = {"file": ("offer.pdf", PDF, "application/pdf")}
    mixed = await client.post("/v1/documents", data={"customer_id": customer["id"], "deal_id": other_deal["id"]}, files=files)
    assert_names(mixed, ["body", "deal_id"], "belongs to another customer")
    document = (await client.post("/v1/documents", data={"customer_id": customer["id"]}, files=files)).json()
    too_long = await client.post(f"/v1/documents/{document['id']}/share", json={"expires_in": 10**9})
    assert_names(too_long, ["body", "expires_in"], "at most")
