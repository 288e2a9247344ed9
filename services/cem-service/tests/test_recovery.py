"""Close the loop: GET /v1/analytics/recovery against a hand-worked fixture, and the suppression
counts next to it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cem.followups.models import Followup
from cxkit.events.payloads import TaskCompleted

from .conftest import delivery, interaction

NOW = dt.datetime.now(dt.UTC)


def days_ago(n: float) -> str:
    return (NOW - dt.timedelta(days=n)).isoformat()


async def close_followup_of(session_factory: Any, apply: Any, customer: uuid.UUID, metric: str, days: float) -> None:
    """The CRM reports the customer's follow-up task (for `metric`) done, `days` ago."""
    async with session_factory() as session:
        followup = (
            await session.scalars(select(Followup).where(Followup.customer_id == customer, Followup.metric == metric))
        ).one()
    done = TaskCompleted(
        task_id=uuid.uuid4(),
        customer_id=customer,
        origin="followup",
        origin_ref=str(followup.id),
        completed_at=NOW - dt.timedelta(days=days),
    )
    await apply(delivery("task.completed", done))


@pytest.fixture
async def loop_fixture(make: Any, apply: Any, session_factory: Any) -> dict[str, Any]:
    """Six detractor follow-ups, worked out by hand:

    NPS (survey at checkout), detractor answers 10 days ago:
      c1: 3, followed up 5 days ago, next NPS 9 (2 days ago)           -> recovered
      c2: 5, answered 10 before the follow-up was closed (not counted), followed up 5 days ago,
          next NPS 6 (2 days ago)                                       -> answered again, not recovered
          and that 6 raises a new follow-up, still open                 -> detractor, not followed up
      c3: 0, followed up 5 days ago, no answer since                    -> followed up only
      c4: 2, not followed up, answers 10 later                          -> detractor only
    CSAT: c5: 1, followed up 5 days ago, next CSAT 3 (and NPS 9: another metric) -> recovered

    NPS: detractors 5, followed up 3, answered again 2, recovered 1.
    CSAT: 1, 1, 1, 1.  All: 6, 4, 3, 2; follow-up rate 4/6, recovery rate 2/4."""
    await make.touchpoint("checkout")
    nps = await make.survey("nps", touchpoint="checkout")
    csat = await make.survey("csat")
    c1, c2, c3, c4, c5 = [await make.customer() for _ in range(5)]

    async def answer(survey: dict[str, Any], customer: uuid.UUID, score: int, days: float) -> None:
        await make.answer(survey["id"], {survey["kind"]: score}, customer_id=str(customer), submitted_at=days_ago(days))

    for customer, score in ((c1, 3), (c2, 5), (c3, 0), (c4, 2)):
        await answer(nps, customer, score, 10)
    await answer(csat, c5, 1, 10)
    await answer(nps, c2, 10, 7)
    for customer, metric in ((c1, "nps"), (c2, "nps"), (c3, "nps"), (c5, "csat")):
        await close_followup_of(session_factory, apply, customer, metric, 5)
    await answer(nps, c1, 9, 2)
    await answer(nps, c2, 6, 2)
    await answer(nps, c4, 10, 2)
    await answer(csat, c5, 3, 2)
    await answer(nps, c5, 9, 1)
    return {"nps": nps, "csat": csat}


def counts(body: dict[str, Any]) -> tuple[int, int, int, int, float | None, float | None]:
    return (
        body["detractors"],
        body["followed_up"],
        body["answered_again"],
        body["recovered"],
        body["followup_rate"],
        body["recovery_rate"],
    )


async def test_recovery_rate_matches_the_hand_worked_fixture(client: httpx.AsyncClient, loop_fixture: dict[str, Any]) -> None:
    r = await client.get("/v1/analytics/recovery")
    assert r.status_code == 200, r.text
    body = r.json()
    assert counts(body) == (6, 4, 3, 2, 0.6667, 0.5)
    assert counts(body["by_metric"]["nps"]) == (5, 3, 2, 1, 0.6, 0.3333)
    assert counts(body["by_metric"]["csat"]) == (1, 1, 1, 1, 1.0, 1.0)
    assert set(body["by_metric"]) == {"nps", "csat"}


async def test_recovery_filters_by_survey_touchpoint_and_window(client: httpx.AsyncClient, loop_fixture: dict[str, Any]) -> None:
    by_survey = (await client.get("/v1/analytics/recovery", params={"survey_id": loop_fixture["csat"]["id"]})).json()
    assert counts(by_survey) == (1, 1, 1, 1, 1.0, 1.0)
    assert by_survey["filters"]["survey_id"] == loop_fixture["csat"]["id"]
    at_checkout = (await client.get("/v1/analytics/recovery", params={"touchpoint": "checkout"})).json()
    assert counts(at_checkout) == (5, 3, 2, 1, 0.6, 0.3333)
    # Follow-ups are raised when the answer is recorded (now): a window in the past holds none.
    past = (await client.get("/v1/analytics/recovery", params={"to": days_ago(1)})).json()
    assert counts(past) == (0, 0, 0, 0, None, None) and past["by_metric"] == {}


async def test_recovery_refuses_bad_filters(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/analytics/recovery", params={"survey_id": str(uuid.uuid4())})).status_code == 404
    assert (await client.get("/v1/analytics/recovery", params={"from": days_ago(1), "to": days_ago(2)})).status_code == 422
    assert (await client.get("/v1/analytics/recovery", params={"from": "yesterday"})).status_code == 422


async def test_suppressions_are_counted_per_reason_and_listed(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    await make.touchpoint("checkout")
    survey = await make.survey("nps", touchpoint="checkout", trigger={"interaction_type": "purchase"})
    other = await make.survey("csat", trigger={"interaction_type": "purchase", "throttle_days": 0})
    customer = await make.customer()
    opted_out = await make.customer(survey_opt_out=True)
    await apply(interaction(customer), interaction(customer), interaction(opted_out))
    # customer: nps invited, csat fatigue; then nps throttle, csat fatigue; opted_out: twice opted_out.
    report = (await client.get("/v1/analytics/suppressions")).json()
    assert report["total"] == 5
    assert report["reasons"] == {"opted_out": 2, "erased": 0, "survey_throttle": 1, "fatigue": 2}
    only_nps = (await client.get("/v1/analytics/suppressions", params={"survey_id": survey["id"]})).json()
    assert only_nps["reasons"] == {"opted_out": 1, "erased": 0, "survey_throttle": 1, "fatigue": 0}

    listed = (await client.get("/v1/suppressions", params={"survey_id": other["id"], "limit": 2})).json()
    rest = (await client.get("/v1/suppressions", params={"survey_id": other["id"], "cursor": listed["next_cursor"]})).json()
    assert len(listed["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    fatigue = (await client.get("/v1/suppressions", params={"reason": "fatigue", "customer_id": str(customer)})).json()
    assert [(s["survey_id"], s["origin"]) for s in fatigue["items"]] == [(other["id"], "trigger")] * 2
    assert (await client.get("/v1/suppressions", params={"reason": "bored"})).status_code == 422
