"""Interactions from `cx.interactions.v1`: stored once each, and survey triggers with their rules
(throttle, fatigue, opt-out, erasure), each suppression stored and announced."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from cem.config import CEMSettings
from cem.consumers import interactions
from cem.invitations.models import Invitation
from cem.suppressions.models import Suppression
from cem.touchpoints.models import TouchpointInteraction
from cem.touchpoints.service import interaction_id_for
from cxkit.events import CloudEvent
from cxkit.events.payloads import CustomerCreated, CustomerErased, CustomerUpdated, InteractionRecorded
from cxkit.fields import MAX_JSON_BYTES
from cxkit.kafka.consumer import Delivery, PermanentEventError

from .conftest import delivery, interaction, snapshot

TRIGGER = {"interaction_type": "purchase", "touchpoint": "checkout", "delay_minutes": 0, "throttle_days": 30}


@pytest.fixture
async def checkout_nps(make: Any) -> dict[str, Any]:
    """An active NPS survey sent right after every purchase at checkout (30 days' throttle)."""
    await make.touchpoint("checkout")
    return dict(await make.survey("nps", touchpoint="checkout", trigger=TRIGGER))


async def backdate_invitations(session_factory: Any, days: int, *where: Any) -> None:
    """Move invitations back in time, as if they had been sent `days` ago."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    async with session_factory() as session, session.begin():
        await session.execute(update(Invitation).where(*where).values(created_at=then, send_at=then, sent_at=then))


async def rows(session_factory: Any, model: Any, *where: Any) -> list[Any]:
    async with session_factory() as session:
        order = model.recorded_at if model is TouchpointInteraction else model.created_at
        return list((await session.scalars(select(model).where(*where).order_by(order))).all())


async def test_a_matching_interaction_invites_at_once_and_announces_the_link(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], outbox: Any, cem_settings: CEMSettings
) -> None:
    customer = await make.customer(email="ada@example.com")
    event = interaction(customer, summary="Order 10023", amount="49.90", currency="EUR")
    await apply(event)

    invitations = (await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"]
    assert len(invitations) == 1
    invitation = invitations[0]
    assert invitation["customer_id"] == str(customer) and invitation["status"] == "sent"
    assert invitation["origin"] == "trigger" and invitation["touchpoint"] == "checkout"
    assert invitation["interaction_id"] == str(interaction_id_for(event.payload, event.event.source, event.event.id))
    (announced,) = await outbox("survey.invited")
    assert announced["subject"] == str(customer) and announced["data"]["email"] == "ada@example.com"
    assert announced["data"]["url"].startswith(f"{cem_settings.public_base_url}/r/")
    # The link works: the respondent page opens it.
    token = announced["data"]["url"].rsplit("/", 1)[1]
    assert (await client.get(f"/r/{token}")).status_code == 200
    history = (await client.get(f"/v1/customers/{customer}/experience")).json()["touchpoint_history"]
    assert [(h["type"], h["summary"], h["amount"], h["currency"]) for h in history] == [
        ("purchase", "Order 10023", "49.90", "EUR")
    ]


async def test_trigger_matches_type_and_its_touchpoint_only(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any]
) -> None:
    await make.touchpoint("store")
    anywhere = await make.survey("csat", trigger={"interaction_type": "support_ticket_closed"})
    customer = await make.customer()
    await apply(
        interaction(customer, touchpoint="store"),  # purchase, but not at checkout
        interaction(customer, type="call", touchpoint="checkout"),  # checkout, but not a purchase
    )
    assert (await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"] == []
    await apply(interaction(customer, type="support_ticket_closed", touchpoint="store"))
    (invited,) = (await client.get(f"/v1/surveys/{anywhere['id']}/invitations")).json()["items"]
    assert invited["touchpoint"] == "store"  # the survey names none: the interaction's


async def test_second_matching_interaction_in_the_same_poll_is_throttled_and_announced(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], outbox: Any, session_factory: Any
) -> None:
    customer = await make.customer()
    first, second = interaction(customer), interaction(customer)
    await apply(first, second)

    assert len((await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"]) == 1
    (suppression,) = await rows(session_factory, Suppression)
    second_id = interaction_id_for(second.payload, second.event.source, second.event.id)
    assert (suppression.reason, suppression.origin, suppression.interaction_id) == ("survey_throttle", "trigger", second_id)
    (throttled,) = await outbox("survey.throttled")
    assert throttled["subject"] == str(customer)
    assert throttled["data"] == {
        "survey_id": checkout_nps["id"],
        "customer_id": str(customer),
        "email": None,
        "reason": "survey_throttle",
        "touchpoint": "checkout",
        "interaction_id": str(second_id),
    }
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert view["summary"]["suppressions"] == 1
    assert [(s["survey_id"], s["reason"]) for s in view["suppressions"]] == [(checkout_nps["id"], "survey_throttle")]


async def test_a_later_interaction_inside_the_throttle_window_is_throttled_and_after_it_invites_again(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any
) -> None:
    customer = await make.customer()
    await apply(interaction(customer))
    await apply(interaction(customer))
    assert [s.reason for s in await rows(session_factory, Suppression)] == ["survey_throttle"]
    # 31 days on (the first invitation moved back in time), the survey may invite again.
    await backdate_invitations(session_factory, days=31)
    await apply(interaction(customer))
    assert len((await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"]) == 2


async def test_fatigue_stops_a_second_survey_within_the_fatigue_days_and_zero_disables_it(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any, cem_settings: Any
) -> None:
    other = await make.survey("csat", trigger={"interaction_type": "purchase", "throttle_days": 0})
    customer = await make.customer()
    await apply(interaction(customer))
    assert [s.reason for s in await rows(session_factory, Suppression)] == ["fatigue"]
    assert (await client.get(f"/v1/surveys/{other['id']}/invitations")).json()["items"] == []

    relaxed = cem_settings.model_copy(update={"fatigue_days": 0})
    second = await make.customer()
    await apply(interaction(second), settings=relaxed)
    assert len((await client.get(f"/v1/surveys/{other['id']}/invitations")).json()["items"]) == 1
    # throttle_days 0 means no per-survey limit either: a second purchase invites again.
    await apply(interaction(second), settings=relaxed)
    assert len((await client.get(f"/v1/surveys/{other['id']}/invitations")).json()["items"]) == 2


async def test_opted_out_and_erased_customers_are_suppressed_with_their_reason_before_any_throttle(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any, outbox: Any
) -> None:
    opted_out = await make.customer(survey_opt_out=True)
    erased = await make.customer()
    await apply(delivery("customer.erased", CustomerErased(customer_id=erased, erased_at=dt.datetime.now(dt.UTC))))
    await apply(interaction(opted_out), interaction(erased, summary="Bought a hat"))

    assert (await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"] == []
    reasons = {s.customer_id: s.reason for s in await rows(session_factory, Suppression)}
    assert reasons == {opted_out: "opted_out", erased: "erased"}
    assert {e["data"]["reason"] for e in await outbox("survey.throttled")} == {"opted_out", "erased"}
    (stored,) = await rows(session_factory, TouchpointInteraction, TouchpointInteraction.customer_id == erased)
    assert stored.summary is None  # an erased customer's interaction keeps no personal data


async def test_a_redelivered_interaction_never_invites_or_suppresses_twice(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any
) -> None:
    customer = await make.customer()
    first, second = interaction(customer), interaction(customer)
    await apply(first, second)
    # The same events delivered again, and other events naming the same interactions.
    await apply(first, second)
    await apply(
        *[
            interaction(customer, interaction_id=interaction_id_for(d.payload, d.event.source, d.event.id))
            for d in (first, second)
        ]
    )
    assert len(await rows(session_factory, TouchpointInteraction)) == 2
    assert len(await rows(session_factory, Invitation)) == 1
    assert len(await rows(session_factory, Suppression)) == 1


async def test_an_event_without_interaction_id_is_keyed_by_its_cloudevent(make: Any, apply: Any, session_factory: Any) -> None:
    customer = await make.customer()
    one = interaction(customer, source="urn:pos:store-17", event_id="pos-1")
    same_id_other_source = interaction(customer, source="urn:web:shop", event_id="pos-1")
    await apply(one, same_id_other_source)
    await apply(interaction(customer, source="urn:pos:store-17", event_id="pos-1"))
    stored = await rows(session_factory, TouchpointInteraction)
    assert len(stored) == 2 and {s.source for s in stored} == {"urn:pos:store-17", "urn:web:shop"}
    assert interaction_id_for(one.payload, "urn:pos:store-17", "pos-1") in {s.interaction_id for s in stored}


async def test_a_bare_email_is_invited_and_throttled_by_address_then_linked_when_the_crm_announces_it(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any, outbox: Any
) -> None:
    await apply(interaction(customer_email="Walk-In@Example.com"))
    await apply(interaction(customer_email="walk-in@example.com"))

    (invitation,) = await rows(session_factory, Invitation)
    assert invitation.customer_id is None and invitation.email == "Walk-In@Example.com"
    (suppression,) = await rows(session_factory, Suppression)
    assert (suppression.customer_id, suppression.email_lower, suppression.reason) == (
        None,
        "walk-in@example.com",
        "survey_throttle",
    )
    (announced,) = await outbox("survey.invited")
    assert "subject" not in announced and announced["data"]["customer_id"] is None
    assert announced["data"]["email"] == "Walk-In@Example.com"
    (throttled,) = await outbox("survey.throttled")  # announced too, by address
    assert throttled["data"]["customer_id"] is None and throttled["data"]["reason"] == "survey_throttle"
    assert throttled["data"]["email"].lower() == "walk-in@example.com"

    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email="WALK-IN@example.com"))))
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert len(view["touchpoint_history"]) == 2
    assert [i["id"] for i in view["invitations"]] == [str(invitation.id)]
    assert view["summary"]["suppressions"] == 1
    # From now on the customer is throttled by id, counting what was sent to the address.
    await apply(interaction(customer))
    assert len(await rows(session_factory, Invitation)) == 1
    assert len(await rows(session_factory, Suppression, Suppression.customer_id == customer)) == 2


async def test_a_customer_who_changes_address_takes_what_was_kept_under_the_new_one(
    client: httpx.AsyncClient, apply: Any, checkout_nps: dict[str, Any], session_factory: Any
) -> None:
    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email="old@example.com"))))
    await apply(interaction(customer_email="New@Example.com"))
    (kept,) = await rows(session_factory, Invitation)
    assert kept.customer_id is None

    # The same address again (a new version of the customer) links nothing and leaves the bare row alone.
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 2, email="old@example.com"))))
    assert [i.customer_id for i in await rows(session_factory, Invitation)] == [None]
    # An older snapshot with the new address is not applied, so it links nothing either.
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 1, email="new@example.com"))))
    assert [i.customer_id for i in await rows(session_factory, Invitation)] == [None]

    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 3, email="NEW@example.com"))))
    assert [i.customer_id for i in await rows(session_factory, Invitation)] == [customer]
    assert [t.customer_id for t in await rows(session_factory, TouchpointInteraction)] == [customer]
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert [i["id"] for i in view["invitations"]] == [str(kept.id)]


async def test_the_snapshot_upsert_names_only_addresses_new_to_their_profiles(session_factory: Any) -> None:
    from cem.customers.repository import CustomerProfileRepository
    from cem.customers.service import profile_row
    from cxkit.events.payloads import CustomerSnapshot

    ada, bob = uuid.uuid4(), uuid.uuid4()

    async def upsert(*snapshots: dict[str, Any], replaying: bool = False) -> set[str]:
        async with session_factory() as session, session.begin():
            rows = [profile_row(CustomerSnapshot(**s)) for s in snapshots]
            return await CustomerProfileRepository(session).apply_snapshots(rows, replaying=replaying)

    assert await upsert(snapshot(ada, email="Ada@Example.com"), snapshot(bob, email=None)) == {"ada@example.com"}
    assert await upsert(snapshot(ada, 2, email="ada@example.com"), snapshot(bob, 2, email="bob@example.com")) == {
        "bob@example.com"
    }
    assert await upsert(snapshot(ada, 2, email="ada@example.com"), replaying=True) == set()  # applied again, same address
    assert await upsert(snapshot(ada, 1, email="old@example.com")) == set()  # older: not applied
    # Two snapshots of one customer in a run: the newest is applied.
    assert await upsert(snapshot(ada, 4, email="a4@example.com"), snapshot(ada, 3, email="a3@example.com")) == {"a4@example.com"}
    async with session_factory() as session:
        profile = await CustomerProfileRepository(session).get(ada)
        assert profile is not None and (profile.email_lower, profile.crm_version) == ("a4@example.com", 4)


async def test_interaction_by_email_of_a_known_customer_and_by_a_merged_duplicate_goes_to_the_customer(
    make: Any, apply: Any, session_factory: Any
) -> None:
    from cxkit.events.payloads import CustomerMerged, CustomerSnapshot

    survivor = await make.customer(email="grace@example.com")
    duplicate = await make.customer(email="g.hopper@example.com")
    await apply(
        delivery(
            "customer.merged",
            CustomerMerged(
                survivor_id=survivor,
                duplicate_id=duplicate,
                survivor=CustomerSnapshot(**snapshot(survivor, 2, email="grace@example.com")),
            ),
        )
    )
    await apply(interaction(customer_email="GRACE@example.com"), interaction(duplicate))
    stored = await rows(session_factory, TouchpointInteraction)
    assert [s.customer_id for s in stored] == [survivor, survivor]
    assert all(s.email is None for s in stored)


async def test_unknown_customer_id_is_invited_by_id(client: httpx.AsyncClient, apply: Any, checkout_nps: dict[str, Any]) -> None:
    stranger = uuid.uuid4()  # the CRM's customer.created may arrive after its interaction
    await apply(interaction(stranger))
    (invited,) = (await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"]
    assert invited["customer_id"] == str(stranger) and invited["email"] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"occurred_at": dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14)))},
        {"occurred_at": dt.datetime(9999, 12, 31, tzinfo=dt.UTC)},
        {"occurred_at": dt.datetime(8999, 12, 31, 23, tzinfo=dt.timezone(-dt.timedelta(hours=5)))},
        {"customer_id": None, "customer_email": "   "},
        {"customer_id": None, "customer_email": "not an address"},
    ],
)
def test_an_interaction_the_services_cannot_both_apply_is_refused_as_it_is_decoded(fields: dict[str, Any]) -> None:
    """A time past the range the CEM computes in, or no address to find the customer by: refused
    for the DLQ before any handler (the CRM's consumer decodes with the same model)."""
    with pytest.raises(ValidationError):
        interaction(**{"customer_id": uuid.uuid4(), **fields})


async def test_metadata_beyond_the_crms_limit_is_refused_for_the_dlq(make: Any, apply: Any) -> None:
    """The CRM refuses more than 16 KiB of metadata; so does the CEM, so that the two services hold
    the same interactions. At the limit it is stored."""
    customer = await make.customer()
    with pytest.raises(PermanentEventError, match=f"metadata: at most {MAX_JSON_BYTES} bytes of JSON"):
        await apply(interaction(customer, metadata={"note": "x" * (MAX_JSON_BYTES - 10)}))
    await apply(interaction(customer, metadata={"note": "x" * (MAX_JSON_BYTES - 11)}))


async def test_metadata_deeper_than_json_is_written_again_is_refused_for_the_dlq(make: Any, apply: Any) -> None:
    """orjson reads 1,024 levels but writes 254: such metadata passes decoding and was a "handler
    failed" after 5 attempts (the poll's transaction failing each time), not a refusal with a reason."""
    metadata: dict[str, Any] = {"k": 1}
    for _ in range(300):
        metadata = {"k": metadata}
    payload = InteractionRecorded(customer_id=await make.customer(), type="purchase", occurred_at=dt.datetime.now(dt.UTC))
    payload.metadata = metadata  # as decoded from the message (the test's own event could not be dumped)
    event = CloudEvent(id=str(uuid.uuid4()), source="urn:pos:store-1", type="interaction.recorded", data=None)
    with pytest.raises(PermanentEventError, match="metadata: not storable as JSON"):
        await apply(Delivery(event=event, payload=payload, record=None))  # type: ignore[arg-type]


async def test_customer_id_wins_over_customer_email(make: Any, apply: Any, session_factory: Any) -> None:
    customer = await make.customer(email="one@example.com")
    await make.customer(email="two@example.com")
    await apply(interaction(customer, customer_email="two@example.com"))
    (stored,) = await rows(session_factory, TouchpointInteraction)
    assert stored.customer_id == customer and stored.email is None


async def test_an_interaction_a_replay_stored_first_still_invites_once_when_the_live_consumer_reaches_it(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any
) -> None:
    customer = await make.customer()
    event = interaction(customer)
    async with session_factory() as session, session.begin():
        await interactions.store_interactions(session, [event])  # what `cem replay` does: rows only
    assert len(await rows(session_factory, Invitation)) == 0
    await apply(event)
    await apply(event)
    assert len(await rows(session_factory, Invitation)) == 1
    assert len(await rows(session_factory, Suppression)) == 0


async def test_an_interaction_dated_far_ahead_triggers_as_if_it_happened_now_and_blocks_nothing_later(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any, outbox: Any
) -> None:
    """The CRM takes an `occurred_at` up to year 9000: a mistyped year must not schedule the survey
    for then, nor let that invitation suppress every later one as fatigue."""
    customer = await make.customer()
    before = dt.datetime.now(dt.UTC)
    await apply(interaction(customer, occurred_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC)))
    (invitation,) = await rows(session_factory, Invitation)
    assert invitation.sent_at is not None and before <= invitation.send_at <= dt.datetime.now(dt.UTC)
    assert len(await outbox("survey.invited")) == 1
    # A month on, the survey invites again: nothing of 2099 holds it back.
    await backdate_invitations(session_factory, days=31)
    await apply(interaction(customer))
    assert len(await rows(session_factory, Invitation)) == 2
    assert await rows(session_factory, Suppression) == [] and await outbox("survey.throttled") == []


async def test_an_interaction_dated_within_the_clock_skew_keeps_its_time(
    make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any
) -> None:
    customer = await make.customer()
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=3)
    await apply(interaction(customer, occurred_at=soon))
    (invitation,) = await rows(session_factory, Invitation)
    assert (invitation.send_at, invitation.sent_at) == (soon, None)  # scheduled for its own time


async def test_throttle_and_fatigue_count_invitations_on_both_sides_of_the_new_ones_send_time(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any], session_factory: Any
) -> None:
    customer = await make.customer()
    await apply(interaction(customer))
    (first,) = await rows(session_factory, Invitation)

    async def schedule_first(ahead: dt.timedelta) -> None:
        async with session_factory() as session, session.begin():
            at = dt.datetime.now(dt.UTC) + ahead
            await session.execute(
                update(Invitation).where(Invitation.id == first.id).values(send_at=at, sent_at=None, token_hash=None)
            )

    # Scheduled 10 days ahead: within 30 days of now, so it throttles a purchase now.
    await schedule_first(dt.timedelta(days=10))
    await apply(interaction(customer))
    assert [s.reason for s in await rows(session_factory, Suppression)] == ["survey_throttle"]
    # Scheduled a year ahead (as an interaction dated in the future once made one): far from now,
    # it suppresses nothing now.
    await schedule_first(dt.timedelta(days=365))
    await apply(interaction(customer))
    assert len(await rows(session_factory, Suppression)) == 1
    assert len(await rows(session_factory, Invitation)) == 2

    # The fatigue rule alike, across surveys (CEM_FATIGUE_DAYS: 7).
    calls = await make.survey("csat", trigger={"interaction_type": "call", "throttle_days": 0})
    other = await make.customer()
    await apply(interaction(other))
    (first,) = await rows(session_factory, Invitation, Invitation.customer_id == other)
    await schedule_first(dt.timedelta(days=3))
    await apply(interaction(other, type="call"))
    assert [s.reason for s in await rows(session_factory, Suppression, Suppression.customer_id == other)] == ["fatigue"]
    await schedule_first(dt.timedelta(days=365))
    await apply(interaction(other, type="call"))
    assert len(await rows(session_factory, Invitation, Invitation.survey_id == uuid.UUID(calls["id"]))) == 1


async def test_a_trigger_touchpoint_matches_the_interactions_whatever_its_case(
    client: httpx.AsyncClient, make: Any, apply: Any, checkout_nps: dict[str, Any]
) -> None:
    """An interaction's touchpoint is free text at the CRM; a trigger's is a lower-case key."""
    customer = await make.customer()
    await apply(interaction(customer, touchpoint="Checkout"))
    (invited,) = (await client.get(f"/v1/surveys/{checkout_nps['id']}/invitations")).json()["items"]
    assert invited["customer_id"] == str(customer)
