"""`POST /v1/invitations/{id}/cancel`: a scheduled invitation is never sent; a sent one's links
(its own and its reminders') stop taking answers, it is reminded no more and its withdrawal is
announced (`survey.invitation_cancelled`); an answered one cannot be cancelled; cancelling
twice changes nothing. A sent one cancelled still counts for the throttle and fatigue rules (it
reached the customer); one cancelled before it went out does not."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from cem.config import CEMSettings
from cem.scheduler import InvitationScheduler
from cxkit.testing import bearer

from .conftest import interaction
from .test_reminders import REMINDERS, age, link_token, remind
from .test_scheduler import DELAYED, make_due


async def test_a_scheduled_invitation_cancelled_is_never_sent(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    await apply(interaction(await make.customer(email="ada@example.com")))
    (scheduled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations", params={"status": "scheduled"})).json()["items"]
    cancelled = await client.post(f"/v1/invitations/{scheduled['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == ("cancelled", "by_request")
    await make_due(session_factory)
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).sent == 0
    assert await outbox("survey.invited") == []
    assert await outbox("survey.invitation_cancelled") == []  # never announced, so not withdrawn either
    assert (await client.get(f"/v1/invitations/{scheduled['id']}")).json()["status"] == "cancelled"


async def test_a_sent_invitation_cancelled_takes_no_answer_by_any_link_and_is_reminded_no_more(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings, keys: dict[str, str]
) -> None:
    survey = await make.survey("nps", reminders=REMINDERS)
    invitation = await make.invitation(survey["id"])
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (1, 0)
    [reminded] = await outbox("survey.reminded")
    links = [invitation["token"], link_token(reminded, cem_settings)]

    assert (await client.post(f"/v1/invitations/{invitation['id']}/cancel", headers=bearer(keys["read"]))).status_code == 403
    first = await client.post(f"/v1/invitations/{invitation['id']}/cancel", headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    again = await client.post(f"/v1/invitations/{invitation['id']}/cancel")
    assert again.status_code == 200 and again.json() == first.json()  # changes nothing
    [withdrawn] = await outbox("survey.invitation_cancelled")  # announced once
    [invited] = await outbox("survey.invited")
    assert withdrawn["subject"] == invited["subject"] == invitation["customer_id"]
    data = withdrawn["data"]
    assert {k: data[k] for k in ("invitation_id", "survey_id", "customer_id", "email", "touchpoint", "channel")} == {
        k: invited["data"][k] for k in ("invitation_id", "survey_id", "customer_id", "email", "touchpoint", "channel")
    }
    assert (data["survey_name"], data["survey_kind"], data["reason"]) == (survey["name"], "nps", "by_request")
    assert data["email"] and data["email"] == invited["data"]["email"]
    assert data["sent_at"] == first.json()["sent_at"] and data["cancelled_at"] == first.json()["cancelled_at"]
    assert first.json()["cancelled_at"] is not None

    for token in links:
        page = await client.get(f"/r/{token}", headers={"Authorization": ""})
        assert page.status_code == 410 and "withdrawn" in page.text, token
        posted = await client.post(f"/r/{token}", data={"q_nps": "9"}, headers={"Authorization": ""})
        assert posted.status_code == 410 and "withdrawn" in posted.text, token
        api = await client.post("/v1/responses", json={"token": token, "answers": {"nps": 9}})
        assert api.status_code == 409 and api.json()["reason"] == "cancelled", api.text
    assert (await client.get("/v1/responses", params={"survey_id": survey["id"]})).json()["items"] == []

    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (0, 0)
    rate = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()["response_rate"]
    assert rate["invitations"] == 0  # withdrawn: not counted against the response rate


async def test_an_answered_invitation_cannot_be_cancelled_and_unknown_ones_are_404(
    client: httpx.AsyncClient, make: Any, outbox: Any
) -> None:
    survey = await make.survey("csat")
    invitation = await make.invitation(survey["id"])
    assert (await client.post("/v1/responses", json={"token": invitation["token"], "answers": {"csat": 5}})).status_code == 201
    refused = await client.post(f"/v1/invitations/{invitation['id']}/cancel")
    assert refused.status_code == 409 and refused.json()["reason"] == "already_answered"
    assert await outbox("survey.invitation_cancelled") == []
    assert (await client.get(f"/v1/invitations/{invitation['id']}")).json()["status"] == "answered"
    missing = await client.post(f"/v1/invitations/{uuid.uuid4()}/cancel")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


async def test_an_answer_and_a_cancel_at_once_leave_exactly_one_of_them(
    client: httpx.AsyncClient, make: Any, outbox: Any
) -> None:
    survey = await make.survey("nps")
    cancelled: list[str] = []
    for _ in range(5):
        invitation = await make.invitation(survey["id"])
        answer, cancel = await asyncio.gather(
            client.post("/v1/responses", json={"token": invitation["token"], "answers": {"nps": 7}}),
            client.post(f"/v1/invitations/{invitation['id']}/cancel"),
        )
        status = (await client.get(f"/v1/invitations/{invitation['id']}")).json()["status"]
        if answer.status_code == 201:
            assert cancel.status_code == 409 and status == "answered", (cancel.text, status)
        else:
            assert answer.status_code == 409 and answer.json()["reason"] == "cancelled", answer.text
            assert cancel.status_code == 200 and status == "cancelled"
            cancelled.append(invitation["id"])
    # A withdrawal is announced exactly for the invitations the cancel won.
    assert sorted(e["data"]["invitation_id"] for e in await outbox("survey.invitation_cancelled")) == sorted(cancelled)


async def test_a_sent_invitation_cancelled_still_counts_for_the_throttle_and_the_fatigue_rule(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    other = await make.survey("csat")
    triggered = await make.survey("nps", trigger={"interaction_type": "purchase", "throttle_days": 30})
    tired, throttled, spared = [await make.customer() for _ in range(3)]
    # `tired` was sent another survey's invitation, withdrawn afterwards: it reached them all the same.
    sent = await make.invitation(other["id"], customer_id=str(tired))
    assert (await client.post(f"/v1/invitations/{sent['id']}/cancel")).status_code == 200
    # `throttled` was sent this survey's invitation, then it was withdrawn.
    await apply(interaction(throttled))
    (first,) = (await client.get(f"/v1/surveys/{triggered['id']}/invitations")).json()["items"]
    assert (await client.post(f"/v1/invitations/{first['id']}/cancel")).status_code == 200
    # `spared` had one withdrawn before it went out: nothing reached them, so nothing counts.
    delayed = await make.survey("ces", trigger={**DELAYED, "interaction_type": "signup"})
    await apply(interaction(spared, type="signup"))
    (scheduled,) = (await client.get(f"/v1/surveys/{delayed['id']}/invitations", params={"status": "scheduled"})).json()["items"]
    assert (await client.post(f"/v1/invitations/{scheduled['id']}/cancel")).status_code == 200

    await apply(interaction(tired), interaction(throttled), interaction(spared))
    reasons = {s["customer_id"]: s["reason"] for s in (await client.get("/v1/suppressions")).json()["items"]}
    assert reasons == {str(tired): "fatigue", str(throttled): "survey_throttle"}
    invited = (await client.get(f"/v1/surveys/{triggered['id']}/invitations", params={"status": "sent"})).json()["items"]
    assert [i["customer_id"] for i in invited] == [str(spared)]


async def test_a_sent_invitation_cancelled_still_counts_for_the_fatigue_rule_of_reminders(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", reminders=REMINDERS)
    other = await make.survey("csat")
    customer = await make.customer()
    await make.invitation(survey["id"], customer_id=str(customer))
    withdrawn = await make.invitation(other["id"], customer_id=str(customer))
    assert (await client.post(f"/v1/invitations/{withdrawn['id']}/cancel")).status_code == 200
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (0, 1)  # the withdrawn one reached them 2.5 days ago
