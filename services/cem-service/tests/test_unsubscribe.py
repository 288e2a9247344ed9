"""`/r/{token}/unsubscribe`: a recipient asks, from any link of theirs, for no more surveys. The
customer and the address are never invited again (by a request, a batch, a trigger), their open
invitations are withdrawn, `survey.opted_out` announces it once, and the CRM's snapshots cannot
undo it: only the recipient can (`/r/{token}/resubscribe`). GET only asks (mail scanners open
links); POST does it, whatever its body (RFC 8058)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select, update

from cem.customers.models import CustomerProfile
from cem.invitations.models import Invitation
from cem.suppressions.models import OptOut, address_hash
from cxkit.events.payloads import CustomerUpdated, SurveyInvitationCancelled, SurveyOptedIn, SurveyOptedOut

from .conftest import delivery, interaction, snapshot
from .test_scheduler import DELAYED


async def profile_of(session_factory: Any, customer_id: uuid.UUID) -> CustomerProfile:
    async with session_factory() as session:
        profile = await session.get(CustomerProfile, customer_id)
        assert profile is not None
        return profile


async def opt_out_rows(session_factory: Any) -> list[OptOut]:
    async with session_factory() as session:
        return list((await session.scalars(select(OptOut).order_by(OptOut.created_at))).all())


async def test_get_asks_and_changes_nothing_post_opts_the_customer_out_and_withdraws_their_open_invitations(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: Any
) -> None:
    nps = await make.survey("nps")
    csat = await make.survey("csat")
    await make.survey("ces", trigger=DELAYED)
    customer = await make.customer(email="Ada@Example.com")
    link = await make.invitation(nps["id"], customer_id=str(customer), channel="email")
    other = await make.invitation(csat["id"], customer_id=str(customer))
    to_address = await make.invitation(nps["id"], email="ADA@example.com")  # their address, their invitation
    answered = await make.invitation(csat["id"], customer_id=str(customer))
    assert (await client.post(f"/r/{answered['token']}", data={"q_csat": "4"})).status_code == 200
    no_fatigue = cem_settings.model_copy(update={"fatigue_days": 0})
    await apply(interaction(customer), settings=no_fatigue)  # the delayed trigger: a scheduled invitation
    stranger = await make.invitation(nps["id"], customer_id=str(await make.customer()))

    page = await client.get(f"/r/{link['token']}/unsubscribe")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "Send me no more surveys" in page.text and f'action="/r/{link["token"]}/unsubscribe"' in page.text
    assert await outbox("survey.opted_out") == [] and await opt_out_rows(session_factory) == []
    assert (await profile_of(session_factory, customer)).survey_opt_out is False

    done = await client.post(f"/r/{link['token']}/unsubscribe")
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    profile = await profile_of(session_factory, customer)
    assert profile.survey_opt_out is True and profile.opted_out_at is not None
    [row] = await opt_out_rows(session_factory)
    assert (row.customer_id, row.address_hash) == (customer, address_hash("ada@example.com"))
    assert row.invitation_id == uuid.UUID(link["id"])

    async with session_factory() as session:
        theirs = (await session.scalars(select(Invitation).where(Invitation.customer_id == customer))).all()
    reasons = {str(i.id): i.cancel_reason for i in theirs}
    assert len(theirs) == 5 and reasons[answered["id"]] is None
    scheduled = [str(i.id) for i in theirs if i.sent_at is None]
    assert len(scheduled) == 1  # the trigger's, never sent
    withdrawn_ids = {k for k, reason in reasons.items() if reason == "opted_out"}
    assert withdrawn_ids == {link["id"], other["id"], to_address["id"], *scheduled}
    assert (await client.get(f"/v1/invitations/{stranger['id']}")).json()["status"] == "sent"

    [event] = await outbox("survey.opted_out")
    data = SurveyOptedOut.model_validate(event["data"])
    assert event["subject"] == str(customer)
    assert (data.customer_id, data.email, data.invitation_id, data.survey_id) == (
        customer,
        "Ada@Example.com",
        uuid.UUID(link["id"]),
        uuid.UUID(nps["id"]),
    )
    assert (data.channel, data.survey_kind, data.cancelled_invitations) == ("email", "nps", 4)
    withdrawn = [SurveyInvitationCancelled.model_validate(e["data"]) for e in await outbox("survey.invitation_cancelled")]
    # The three that were sent are announced; the scheduled one never was, so neither is its withdrawal.
    assert sorted(str(w.invitation_id) for w in withdrawn) == sorted([link["id"], other["id"], to_address["id"]])
    assert {w.reason for w in withdrawn} == {"opted_out"}

    # Asking again, from any link (an answered one too), changes nothing more.
    for token in (link["token"], answered["token"]):
        again = await client.post(f"/r/{token}/unsubscribe", data={"List-Unsubscribe": "One-Click"})
        assert again.status_code == 200 and "You are unsubscribed" in again.text
    assert len(await outbox("survey.opted_out")) == 1 and len(await opt_out_rows(session_factory)) == 1
    assert (await client.get(f"/r/{link['token']}")).status_code == 410  # the withdrawn link takes no answer


async def test_an_opted_out_customer_is_never_invited_again_whatever_the_crm_says(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, cem_settings: Any
) -> None:
    survey = await make.survey("nps", touchpoint=None, trigger={"interaction_type": "purchase"})
    customer = await make.customer(email="grace@example.com")
    link = await make.invitation(survey["id"], customer_id=str(customer))
    assert (await client.post(f"/r/{link['token']}/unsubscribe")).status_code == 200

    # A CRM update that knows nothing of it (survey_opt_out false, a newer version) keeps it.
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 7, email="grace@example.com"))))
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert view["customer"]["survey_opt_out"] is True and view["customer"]["crm_version"] == 7

    single = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
    assert single.status_code == 409 and "opted out" in single.json()["detail"]
    by_address = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "GRACE@example.com"})
    assert by_address.status_code == 409
    no_fatigue = cem_settings.model_copy(update={"fatigue_days": 0})
    await apply(interaction(customer), settings=no_fatigue)
    [throttled] = await outbox("survey.throttled")
    assert throttled["data"]["reason"] == "opted_out"


async def test_a_bare_address_that_opted_out_is_refused_everywhere_and_its_customer_inherits_it(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: Any
) -> None:
    survey = await make.survey("nps", trigger={"interaction_type": "purchase"})
    link = await make.invitation(survey["id"], email="Walk.In@Example.com")
    assert link["customer_id"] is None
    assert link["unsubscribe_url"] == link["url"] + "/unsubscribe"
    [invited] = await outbox("survey.invited")
    assert invited["data"]["unsubscribe_url"] == invited["data"]["url"] + "/unsubscribe"

    assert (await client.post(f"/r/{link['token']}/unsubscribe")).status_code == 200
    [row] = await opt_out_rows(session_factory)
    assert (row.customer_id, row.address_hash) == (None, address_hash("walk.in@example.com"))
    [event] = await outbox("survey.opted_out")
    assert event.get("subject") is None and event["data"]["email"] == "Walk.In@example.com"
    assert event["data"]["cancelled_invitations"] == 1

    single = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "walk.in@example.com"})
    assert single.status_code == 409 and "asked for no more surveys" in single.json()["detail"]
    batch = await client.post(
        f"/v1/surveys/{survey['id']}/invitations/batch",
        json={"items": [{"email": "WALK.IN@example.com"}, {"email": "someone@example.com"}]},
    )
    assert batch.status_code == 200, batch.text
    assert [r["status"] for r in batch.json()["results"]] == ["error", "created"]
    assert batch.json()["results"][0]["problem"]["status"] == 409
    no_fatigue = cem_settings.model_copy(update={"fatigue_days": 0})
    await apply(interaction(customer_email="walk.in@example.com"), settings=no_fatigue)
    [throttled] = await outbox("survey.throttled")
    assert throttled["data"]["reason"] == "opted_out"

    # The CRM announces a customer with that address: they opted out.
    customer = await make.customer(email="walk.in@example.com")
    profile = await profile_of(session_factory, customer)
    assert profile.survey_opt_out is True and profile.opted_out_at == row.created_at
    refused = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
    assert refused.status_code == 409


async def test_any_link_opts_out_expired_and_withdrawn_ones_too_and_an_unknown_one_is_a_404_page(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    expired = await make.invitation(survey["id"])
    withdrawn = await make.invitation(survey["id"])
    assert (await client.post(f"/v1/invitations/{withdrawn['id']}/cancel")).status_code == 200
    async with session_factory() as session, session.begin():
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        await session.execute(update(Invitation).where(Invitation.id == uuid.UUID(expired["id"])).values(expires_at=past))
    for link in (expired, withdrawn):
        assert (await client.get(f"/r/{link['token']}/unsubscribe")).status_code == 200
        assert (await client.post(f"/r/{link['token']}/unsubscribe")).status_code == 200
    events = await outbox("survey.opted_out")
    assert sorted(e["data"]["customer_id"] for e in events) == sorted([expired["customer_id"], withdrawn["customer_id"]])
    assert {e["data"]["cancelled_invitations"] for e in events} == {0}
    for method in ("GET", "POST"):
        unknown = await client.request(method, "/r/not-a-token/unsubscribe")
        assert unknown.status_code == 404 and "Link not found" in unknown.text
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(OptOut)) == 2


async def test_the_pages_link_to_it_in_the_surveys_language(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps", language="de")
    link = await make.invitation(survey["id"])
    page = await client.get(f"/r/{link['token']}")
    assert f'href="/r/{link["token"]}/unsubscribe"' in page.text and "Keine Umfragen mehr von uns? Abmelden" in page.text
    ask = await client.get(f"/r/{link['token']}/unsubscribe")
    assert '<html lang="de">' in ask.text and "Keine Umfragen mehr senden" in ask.text
    thanks = await client.post(f"/r/{link['token']}", data={"q_nps": "9"})
    assert thanks.status_code == 200 and f'href="/r/{link["token"]}/unsubscribe"' in thanks.text
    done = await client.post(f"/r/{link['token']}/unsubscribe")
    assert "Sie sind abgemeldet" in done.text
    preview = await client.get(f"/v1/surveys/{survey['id']}/preview")
    assert "Keine Umfragen mehr von uns? Abmelden" in preview.text and "/unsubscribe" not in preview.text


async def test_only_the_recipient_undoes_an_opt_out_and_then_may_be_invited_again(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    customer = await make.customer(email="lin@example.com")
    link = await make.invitation(survey["id"], customer_id=str(customer))
    done = await client.post(f"/r/{link['token']}/unsubscribe")
    assert f'action="/r/{link["token"]}/resubscribe"' in done.text and "Send me surveys again" in done.text

    # The CRM clearing its flag (a newer snapshot) does not undo the recipient's request.
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 5, email="lin@example.com"))))
    assert (await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})).status_code == 409

    back = await client.post(f"/r/{link['token']}/resubscribe")
    assert back.status_code == 200 and "You are subscribed again" in back.text
    profile = await profile_of(session_factory, customer)
    assert (profile.survey_opt_out, profile.opted_out_at) == (False, None)
    assert await opt_out_rows(session_factory) == []
    [event] = await outbox("survey.opted_in")
    assert event["subject"] == str(customer)
    data = SurveyOptedIn.model_validate(event["data"])
    assert (data.customer_id, data.email, data.invitation_id) == (customer, "lin@example.com", uuid.UUID(link["id"]))
    again = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "LIN@example.com"})
    assert again.status_code == 201 and again.json()["customer_id"] == str(customer)
    assert (await client.get(f"/r/{link['token']}")).status_code == 410  # what was withdrawn stays withdrawn

    # Asking again changes nothing, and says so; so does a recipient who never opted out here.
    twice = await client.post(f"/r/{link['token']}/resubscribe")
    assert twice.status_code == 200 and "nothing has changed" in twice.text
    never = await make.invitation(survey["id"], customer_id=str(await make.customer(survey_opt_out=False)))
    assert "nothing has changed" in (await client.post(f"/r/{never['token']}/resubscribe")).text
    assert len(await outbox("survey.opted_in")) == 1
    assert (await client.post("/r/not-a-token/resubscribe")).status_code == 404


async def test_a_bare_address_can_subscribe_again(client: httpx.AsyncClient, make: Any, outbox: Any) -> None:
    survey = await make.survey("nps")
    link = await make.invitation(survey["id"], email="guest@example.com")
    await client.post(f"/r/{link['token']}/unsubscribe")
    assert (await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "guest@example.com"})).status_code == 409
    assert "You are subscribed again" in (await client.post(f"/r/{link['token']}/resubscribe")).text
    assert (await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "guest@example.com"})).status_code == 201
    [event] = await outbox("survey.opted_in")
    assert event.get("subject") is None and event["data"]["email"] == "guest@example.com"
