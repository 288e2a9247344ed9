"""Answers and feedback given under an address nobody was known by go to the customer the CRM
announces with that address later, with their scores and totals, and are announced again keyed
by that customer (so the CRM's view shows them too)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from cem.config import CEMSettings
from cem.customer_data import customer_data, export_sections
from cem.followups.models import Followup
from cem.main import create_app
from cem.responses.models import Score
from cem.touchpoints.service import interaction_id_for
from cxkit.events.payloads import CustomerCreated, CustomerUpdated

from .conftest import EventApplier, delivery, interaction, snapshot
from .test_customer_events import erased, personal_data_left

# Addresses PostgreSQL's lower() folds otherwise than Python's str.lower(), which makes the CEM's
# keys: a dotted capital I (Python: 'i' and a combining dot above, PostgreSQL: 'i'), and a capital
# sigma ending a word (Python: the final sigma U+03C2, PostgreSQL: U+03C3). `{marker}` is the test's.
FOLDED_OTHERWISE_IN_SQL = [
    pytest.param("İnci-{marker}@example.com", id="dotted-capital-i"),
    pytest.param("{marker}-ΟΔΥΣΣΕΑΣ@example.com", id="final-capital-sigma"),
]


async def _announced(outbox: Any, event_type: str, field: str, row_id: str) -> list[dict[str, Any]]:
    return [e for e in await outbox(event_type) if e["data"][field] == row_id]


async def test_answers_and_feedback_under_an_address_go_to_the_customer_announced_with_it(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, outbox: Any
) -> None:
    marker = uuid.uuid4().hex[:10]
    nps = await make.survey("nps")
    csat = await make.survey("csat")
    detractor = await make.answer(nps["id"], {"nps": 3, "reason": "The queue was long"}, email=f"Walk-In-{marker}@Example.com")
    happy = await make.answer(csat["id"], {"csat": 5}, email=f"walk-in-{marker}@example.com")
    stranger = await make.answer(nps["id"], {"nps": 9}, email=f"stranger-{marker}@example.com")
    r = await client.post(
        "/v1/feedback",
        json={"email": f"WALK-IN-{marker}@example.com", "channel": "chat", "text": "Lovely staff", "rating": 5},
    )
    assert r.status_code == 201, r.text
    feedback = r.json()
    assert detractor["customer_id"] is None and not detractor["followup_requested"]
    assert happy["customer_id"] is None and feedback["customer_id"] is None
    nps_before = (await client.get("/v1/analytics/nps", params={"survey_id": nps["id"]})).json()

    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=f"walk-in-{marker}@EXAMPLE.com"))))

    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert {r["id"] for r in view["responses"]} == {detractor["id"], happy["id"]}
    assert all(r["customer_id"] == str(customer) for r in view["responses"])
    assert [f["id"] for f in view["feedback"]] == [feedback["id"]]
    summary = view["summary"]
    assert (summary["responses"], summary["feedback"]) == (2, 1)
    assert summary["latest_nps"]["score"] == 3 and summary["latest_nps"]["category"] == "detractor"
    assert (summary["nps_average"], summary["csat_average"]) == (3, 5)
    async with session_factory() as session:
        scores = {
            str(s.response_id): s.customer_id
            for s in await session.scalars(
                select(Score).where(Score.response_id.in_([uuid.UUID(a["id"]) for a in (detractor, happy, stranger)]))
            )
        }
        # The detractor answered moments ago: followed up now that the CRM announced who it was.
        followups = (await session.scalars(select(Followup).where(Followup.customer_id == customer))).all()
    assert scores == {detractor["id"]: customer, happy["id"]: customer, stranger["id"]: None}
    assert [(str(f.response_id), f.score, f.status) for f in followups] == [(detractor["id"], 3, "open")]
    assert (await client.get(f"/v1/responses/{stranger['id']}")).json()["customer_id"] is None
    # The same answers, now under a customer: the scores do not change.
    assert (await client.get("/v1/analytics/nps", params={"survey_id": nps["id"]})).json() == nps_before

    # Announced twice: first under the address alone, then keyed by the customer, with the same answer.
    first, again = await _announced(outbox, "survey.response.submitted", "response_id", detractor["id"])
    assert "subject" not in first and first["data"]["customer_id"] is None
    assert again["subject"] == str(customer) and again["data"]["customer_id"] == str(customer)
    assert {k: v for k, v in again["data"].items() if k != "customer_id"} == {
        k: v for k, v in first["data"].items() if k != "customer_id"
    }
    assert again["data"]["comment"] == "The queue was long" and again["data"]["category"] == "detractor"
    assert again["data"]["survey_kind"] == "nps" and again["data"]["metric"] == "nps"
    first, again = await _announced(outbox, "survey.response.submitted", "response_id", happy["id"])
    assert again["data"]["customer_id"] == str(customer) and again["data"]["score"] == 5
    first, again = await _announced(outbox, "feedback.received", "feedback_id", feedback["id"])
    assert "subject" not in first and again["subject"] == str(customer)
    assert {k: v for k, v in again["data"].items() if k != "customer_id"} == {
        k: v for k, v in first["data"].items() if k != "customer_id"
    }
    assert len(await _announced(outbox, "survey.response.submitted", "response_id", stranger["id"])) == 1

    # The announcement again, or a new version with the same address, links and announces nothing more.
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=f"walk-in-{marker}@example.com"))))
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 2, email=f"walk-in-{marker}@example.com"))))
    assert len(await _announced(outbox, "survey.response.submitted", "response_id", detractor["id"])) == 2
    assert len(await _announced(outbox, "feedback.received", "feedback_id", feedback["id"])) == 2


@pytest.mark.parametrize("address", FOLDED_OTHERWISE_IN_SQL)
async def test_answers_and_feedback_under_an_address_sql_lowers_otherwise_go_to_the_customer_announced_with_it(
    address: str, client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any
) -> None:
    """The link compares the addresses as the CEM keys them (Python's str.lower()), never with
    PostgreSQL's lower(): keyed once each way, 'İnci@…' or '…Σ@…' never met its customer."""
    email = address.format(marker=uuid.uuid4().hex[:10])
    survey = await make.survey("nps")
    answer = await make.answer(survey["id"], {"nps": 9}, email=email)
    r = await client.post("/v1/feedback", json={"email": email, "channel": "chat", "text": "Lovely staff"})
    assert r.status_code == 201, r.text
    feedback = r.json()
    assert answer["customer_id"] is None and feedback["customer_id"] is None

    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=email))))
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert [r["id"] for r in view["responses"]] == [answer["id"]]
    assert [f["id"] for f in view["feedback"]] == [feedback["id"]]
    assert (view["summary"]["responses"], view["summary"]["feedback"]) == (1, 1)
    (_, again) = await _announced(outbox, "feedback.received", "feedback_id", feedback["id"])
    assert again["subject"] == str(customer)


async def test_an_interaction_under_an_address_goes_to_the_customer_announced_with_it_however_it_was_written(
    client: httpx.AsyncClient, make: Any, apply: Any
) -> None:
    """An outside system may write the domain in its ASCII (punycode) form, or a letter decomposed;
    the CRM normalizes the address (its API's and its consumer's email validation) and announces
    the customer with the Unicode, NFC form. Kept under the address as written (lower-cased), the
    interaction was never linked to that customer; it is found and kept by the normalized address,
    as the CRM and the CEM's own API key an address."""
    marker = uuid.uuid4().hex[:10]
    punycode = interaction(customer_email=f"Walk-In-{marker}@XN--BCHER-KVA.example")
    decomposed = interaction(customer_email=f"Rene\u0301-{marker}@example.com")
    await apply(punycode, decomposed)
    walk_in, rene = uuid.uuid4(), uuid.uuid4()
    await apply(
        delivery("customer.created", CustomerCreated(**snapshot(walk_in, email=f"walk-in-{marker}@bücher.example"))),
        delivery("customer.created", CustomerCreated(**snapshot(rene, email=f"René-{marker}@example.com"))),
    )
    for customer, event in ((walk_in, punycode), (rene, decomposed)):
        history = (await client.get(f"/v1/customers/{customer}/experience")).json()["touchpoint_history"]
        assert [h["interaction_id"] for h in history] == [
            str(interaction_id_for(event.payload, event.event.source, event.event.id))
        ]


async def test_a_customer_who_takes_a_new_address_takes_the_answers_and_feedback_given_under_it(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any
) -> None:
    marker = uuid.uuid4().hex[:10]
    survey = await make.survey("ces")
    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=f"old-{marker}@example.com"))))
    answer = await make.answer(survey["id"], {"ces": 2}, email=f"new-{marker}@example.com")
    feedback = (
        await client.post("/v1/feedback", json={"email": f"new-{marker}@example.com", "channel": "email", "text": "Hard"})
    ).json()
    assert answer["customer_id"] is None and feedback["customer_id"] is None

    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 2, email=f"New-{marker}@example.com"))))
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert [r["id"] for r in view["responses"]] == [answer["id"]]
    assert [f["id"] for f in view["feedback"]] == [feedback["id"]]
    assert view["summary"]["ces_average"] == 2
    (_, again) = await _announced(outbox, "survey.response.submitted", "response_id", answer["id"])
    assert again["subject"] == str(customer)


async def test_an_erasure_after_the_link_leaves_nothing_of_what_was_given_under_the_address(
    make: Any, apply: Any, client: httpx.AsyncClient, cem_database_url: str, outbox: Any
) -> None:
    """The first announcements of a linked answer and feedback carried no key: the erasure still
    finds them (by the rows' ids), as it finds those of rows it links itself."""
    marker = uuid.uuid4().hex[:10]
    survey = await make.survey("nps")
    answer = await make.answer(survey["id"], {"nps": 6, "reason": f"Rude {marker}"}, email=f"gone-{marker}@example.com")
    r = await client.post(
        "/v1/feedback", json={"email": f"gone-{marker}@example.com", "channel": "chat", "text": f"Cold {marker}"}
    )
    assert r.status_code == 201, r.text
    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=f"gone-{marker}@example.com"))))
    assert len(await _announced(outbox, "survey.response.submitted", "response_id", answer["id"])) == 2
    assert "outbox.value" in await personal_data_left(cem_database_url, marker)

    await apply(erased(customer))
    assert await personal_data_left(cem_database_url, marker) == []
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert (view["summary"]["responses"], view["summary"]["feedback"]) == (1, 1)


@pytest.mark.parametrize("address", FOLDED_OTHERWISE_IN_SQL)
async def test_an_erasure_leaves_nothing_of_what_was_given_under_an_address_sql_lowers_otherwise(
    address: str, make: Any, apply: Any, client: httpx.AsyncClient, cem_database_url: str, session_factory: Any
) -> None:
    """As for any address: the answers and feedback the announcement linked, and those still kept
    under the address without a customer (found by the erasure itself), keep their scores and
    lose their free text and address, in their rows and in their events."""
    marker = uuid.uuid4().hex[:10]
    email = address.format(marker=marker)
    survey = await make.survey("nps")
    linked = await make.answer(survey["id"], {"nps": 6, "reason": f"Rude {marker}"}, email=email)
    kept = await make.answer(survey["id"], {"nps": 8, "reason": f"Slow {marker}"}, email=email)
    feedback = []
    for words in ("Cold", "Late"):
        r = await client.post("/v1/feedback", json={"email": email, "channel": "chat", "text": f"{words} {marker}"})
        assert r.status_code == 201, r.text
        feedback.append(r.json()["id"])
    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=email))))
    # One answer and one piece of feedback still kept under the address, as if the link had missed them.
    async with session_factory() as session, session.begin():
        kept_id, kept_feedback = uuid.UUID(kept["id"]), uuid.UUID(feedback[1])
        await session.execute(text("UPDATE responses SET customer_id = NULL WHERE id = :id"), {"id": kept_id})
        await session.execute(text("UPDATE scores SET customer_id = NULL WHERE response_id = :id"), {"id": kept_id})
        await session.execute(text("UPDATE feedback SET customer_id = NULL WHERE id = :id"), {"id": kept_feedback})
    assert {"responses.answers", "feedback.text", "outbox.value"} <= set(await personal_data_left(cem_database_url, marker))

    await apply(erased(customer))
    assert await personal_data_left(cem_database_url, marker) == []
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert {r["id"] for r in view["responses"]} == {linked["id"], kept["id"]}
    assert {f["id"] for f in view["feedback"]} == set(feedback)
    assert all(f["text"] is None and f["email"] is None for f in view["feedback"])
    assert (view["summary"]["responses"], view["summary"]["feedback"]) == (2, 2)


async def test_the_rows_kept_under_an_address_are_found_through_their_partial_indexes(session_factory: Any) -> None:
    """The link, the erasure and the data export look answers and feedback up by address among
    the rows without a customer: each statement can use the partial index on the stored key
    (`email_lower`) of those rows, as its condition (the planner told to avoid a sequential scan
    and a plain index scan, as it would on a large table: on a small one, with no statistics yet,
    it may walk another index in the export's order and filter, which says nothing of a large one)."""
    exports = {section.name: section.sql for section in export_sections()}
    async with session_factory() as session, session.begin():
        await session.execute(text("SET LOCAL enable_seqscan = off"))  # begins the transaction too
        await session.execute(text("SET LOCAL enable_indexscan = off"))  # bitmap scans: each index by its condition
        raw = (await (await session.connection()).get_raw_connection()).driver_connection
        for table in ("responses", "feedback"):
            # The link (an array of addresses) and the erasure (one address), then the export.
            link = f"UPDATE {table} SET email = email WHERE customer_id IS NULL AND email_lower = ANY($1::text[])"
            erasure = f"UPDATE {table} SET email = email WHERE customer_id IS NULL AND email_lower = $1"
            for query, argument in (
                (link, ["someone@example.com"]),
                (erasure, "someone@example.com"),
                (exports[table], uuid.uuid4()),
            ):
                plan = "\n".join(r[0] for r in await raw.fetch(f"EXPLAIN {query}", argument))
                assert f"ix_{table}_unlinked_email" in plan, plan
                assert "Index Cond: ((email_lower)::text = " in plan, plan
                assert "Seq Scan" not in plan, plan


async def test_a_recent_detractor_answer_is_followed_up_when_its_customer_is_announced(
    make: Any, apply: Any, session_factory: Any, outbox: Any, cem_app: FastAPI
) -> None:
    """The CRM may announce a new customer after their first answer reached the CEM (the shop
    posts the answer with the address, the customer is made meanwhile): a detractor answered
    within `followup_link_window_hours` gets its follow-up then, due by the SLA from the link;
    an older one, a passive and a promoter get none, and neither does a repeated announcement."""
    marker = uuid.uuid4().hex[:10]
    address = f"late-{marker}@example.com"
    nps = await make.survey("nps")
    now = dt.datetime.now(dt.UTC)
    hours_ago = {h: (now - dt.timedelta(hours=h)).isoformat() for h in (70, 74)}  # the window is 72 hours
    recent = await make.answer(nps["id"], {"nps": 2, "reason": "Never again"}, email=address, submitted_at=hours_ago[70])
    old = await make.answer(nps["id"], {"nps": 1}, email=address, submitted_at=hours_ago[74])
    passive = await make.answer(nps["id"], {"nps": 8}, email=address)
    assert not recent["followup_requested"] and recent["customer_id"] is None

    customer = uuid.uuid4()
    linked_at = dt.datetime.now(dt.UTC)
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=address))))
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 2, email=address))))
    async with session_factory() as session:
        (followup,) = (await session.scalars(select(Followup).where(Followup.customer_id == customer))).all()
    assert str(followup.response_id) == recent["id"] and followup.status == "open"
    assert linked_at <= followup.created_at <= dt.datetime.now(dt.UTC)
    assert followup.due_at == followup.created_at + dt.timedelta(hours=24)  # the default NPS detractor SLA
    (requested,) = [e for e in await outbox("followup.requested") if e["subject"] == str(customer)]
    assert requested["data"]["response_id"] == recent["id"] and requested["data"]["comment"] == "Never again"
    assert requested["data"]["score"] == 2 and requested["data"]["followup_id"] == str(followup.id)
    assert {old["id"], passive["id"]}.isdisjoint({e["data"]["response_id"] for e in await outbox("followup.requested")})
    listed = (await make.client.get(f"/v1/responses/{recent['id']}")).json()
    assert listed["followup_requested"] and listed["customer_id"] == str(customer)


async def test_no_late_follow_up_without_the_window(
    make: Any, session_factory: Any, cem_settings: CEMSettings, tmp_path: Any
) -> None:
    """`followup_link_window_hours=0` turns it off, and a replay's projections (built without
    the service's settings) never ask for one."""
    off = create_app(cem_settings.model_copy(update={"followup_link_window_hours": 0}))
    marker = uuid.uuid4().hex[:10]
    nps = await make.survey("nps")
    answer = await make.answer(nps["id"], {"nps": 0}, email=f"off-{marker}@example.com")
    customer = uuid.uuid4()
    for registry in (off.state.customer_data, customer_data()):
        applier = EventApplier(session_factory, cem_settings, registry)
        await applier(delivery("customer.created", CustomerCreated(**snapshot(customer, email=f"off-{marker}@example.com"))))
    async with session_factory() as session:
        assert (await session.scalars(select(Followup).where(Followup.response_id == uuid.UUID(answer["id"])))).all() == []
