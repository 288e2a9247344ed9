"""GET /v1/customers/{id}/experience: the customer as announced plus everything the CEM knows of them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx

from cem.touchpoints.models import TouchpointInteraction


async def test_experience_joins_invitations_answers_feedback_followups_and_touchpoints(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    await make.touchpoint("checkout")
    customer = await make.customer(name="Ada Lovelace", email="ada@example.com", lifecycle_stage="customer")
    other = await make.customer()
    cid = str(customer)
    nps = await make.survey("nps", touchpoint="checkout")
    csat = await make.survey("csat")
    first = await make.invitation(nps["id"], customer_id=cid)
    await client.post("/v1/responses", json={"token": first["token"], "answers": {"nps": 4, "reason": "Slow"}})
    await make.answer(nps["id"], {"nps": 10}, customer_id=cid)
    await make.answer(csat["id"], {"csat": 4}, customer_id=cid)
    await make.answer(csat["id"], {"csat": 5}, customer_id=cid)
    await make.answer(nps["id"], {"nps": 0}, customer_id=str(other))
    await client.post("/v1/feedback", json={"customer_id": cid, "channel": "chat", "text": "Lovely people!"})
    async with session_factory() as session:
        session.add(
            TouchpointInteraction(
                interaction_id=uuid.uuid4(),
                customer_id=customer,
                touchpoint="checkout",
                type="purchase",
                channel="web",
                occurred_at=dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
            )
        )
        await session.commit()

    r = await client.get(f"/v1/customers/{cid}/experience")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["customer"]["name"] == "Ada Lovelace" and view["customer"]["lifecycle_stage"] == "customer"
    summary = view["summary"]
    assert summary["responses"] == 4 and summary["feedback"] == 1 and summary["open_followups"] == 1
    assert summary["latest_nps"]["score"] == 10 and summary["latest_nps"]["category"] == "promoter"
    assert summary["nps_average"] == 7.0 and summary["csat_average"] == 4.5 and summary["ces_average"] is None
    assert [i["id"] for i in view["invitations"]] == [first["id"]] and view["invitations"][0]["status"] == "answered"
    assert len(view["responses"]) == 4 and {r["customer_id"] for r in view["responses"]} == {cid}
    assert view["feedback"][0]["sentiment"]["label"] == "positive"
    assert [(f["metric"], f["score"], f["status"]) for f in view["followups"]] == [("nps", 4, "open")]
    assert view["touchpoint_history"] == [
        {
            "interaction_id": view["touchpoint_history"][0]["interaction_id"],
            "touchpoint": "checkout",
            "type": "purchase",
            "channel": "web",
            "occurred_at": "2026-11-20T09:00:00Z",
            "summary": None,
            "amount": None,
            "currency": None,
        }
    ]
    limited = (await client.get(f"/v1/customers/{cid}/experience", params={"limit": 2})).json()
    assert len(limited["responses"]) == 2 and limited["summary"]["responses"] == 4


async def test_experience_of_an_unknown_customer_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/v1/customers/{uuid.uuid4()}/experience")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/customers/nope/experience")).status_code == 422
    assert (await client.get(f"/v1/customers/{uuid.uuid4()}/experience", params={"limit": 1000})).status_code == 422
