"""The experience view's summary figures are kept per customer as rows are written (triggers of
migration cem0004), and equal the figures computed from the rows after answers, feedback,
follow-ups, suppressions, links of rows kept under an address, merges, erasures and deletes;
`cem rebuild-experience-totals` puts right figures that were changed by hand."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from cem.customers.repository import TOTALS_COLUMNS, ExperienceTotalsRepository
from cem.customers.service import rebuild_experience_totals
from cxkit.events.payloads import CustomerErased, CustomerMerged, CustomerSnapshot, TaskCompleted

from .conftest import delivery, interaction, run_cem_command, snapshot

TRIGGER = {"interaction_type": "purchase", "touchpoint": "checkout", "delay_minutes": 0, "throttle_days": 30}
NONZERO = " OR ".join(f"{c} <> 0" for c in TOTALS_COLUMNS)


async def kept_and_from_rows(session_factory: Any) -> tuple[dict[uuid.UUID, tuple[int, ...]], dict[uuid.UUID, tuple[int, ...]]]:
    """Every customer's figures as kept, and as computed from the rows (all-zero rows left out:
    a customer without a row reads as all zero)."""
    columns = ", ".join(TOTALS_COLUMNS)
    async with session_factory() as session:
        kept = (
            await session.execute(text(f"SELECT customer_id, {columns} FROM customer_experience_totals WHERE {NONZERO}"))
        ).all()
        fresh = (
            await session.execute(text(f"SELECT customer_id, {columns} FROM experience_totals_from_rows WHERE {NONZERO}"))
        ).all()
    return {r[0]: tuple(r[1:]) for r in kept}, {r[0]: tuple(r[1:]) for r in fresh}


async def assert_kept_equal_rebuilt(session_factory: Any) -> dict[uuid.UUID, tuple[int, ...]]:
    kept, fresh = await kept_and_from_rows(session_factory)
    assert kept == fresh
    async with session_factory() as session:
        assert await ExperienceTotalsRepository(session).differing_from_rows() == 0
    return kept


def figures(kept: dict[uuid.UUID, tuple[int, ...]], customer_id: uuid.UUID) -> dict[str, int]:
    return dict(zip(TOTALS_COLUMNS, kept.get(customer_id, (0,) * len(TOTALS_COLUMNS)), strict=True))


async def test_incremental_experience_totals_equal_the_rebuilt_ones_after_inserts_merges_and_erasures(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, cem_settings: Any
) -> None:
    await make.touchpoint("checkout")
    nps = await make.survey("nps", touchpoint="checkout", trigger=TRIGGER)
    csat = await make.survey("csat")
    ces = await make.survey("ces")
    optional = await make.survey(
        "custom",
        questions=[
            {"type": "rating", "id": "nps", "text": "Would you recommend us?", "metric": "nps"},
            {"type": "text", "id": "why", "text": "Why?"},
        ],
    )
    ada = await make.customer(email="ada@example.com")
    bob = await make.customer(email="bob@example.com")
    no_fatigue = cem_settings.model_copy(update={"fatigue_days": 0})

    # Inserts: answers (one skipped score), detractors with follow-ups, feedback, an answer by
    # invitation, invitations and suppressions made by the interactions consumer.
    await make.answer(nps["id"], {"nps": 10}, customer_id=str(ada))
    await make.answer(nps["id"], {"nps": 3}, customer_id=str(ada))
    await make.answer(csat["id"], {"csat": 5}, customer_id=str(ada))
    await make.answer(ces["id"], {"ces": 2}, customer_id=str(ada))
    await make.answer(optional["id"], {"why": "no idea"}, customer_id=str(ada))
    await make.answer(nps["id"], {"nps": 0}, customer_id=str(bob))
    await make.answer(csat["id"], {"csat": 1}, customer_id=str(bob))
    invited = await make.invitation(csat["id"], customer_id=str(bob))
    r = await client.post("/v1/responses", json={"token": invited["token"], "answers": {"csat": 4}})
    assert r.status_code == 201, r.text
    for who in (ada, ada, bob):
        r = await client.post("/v1/feedback", json={"customer_id": str(who), "channel": "chat", "text": "Fine"})
        assert r.status_code == 201, r.text
    await apply(interaction(ada), interaction(ada), interaction(bob), interaction(bob), settings=no_fatigue)
    # Rows under an address nobody was announced with count nowhere yet.
    await apply(interaction(customer_email="cy@example.com"), interaction(customer_email="cy@example.com"))
    await make.answer(nps["id"], {"nps": 9}, email="cy@example.com")
    await client.post("/v1/feedback", json={"email": "cy@example.com", "channel": "email", "text": "Hello"})
    # A follow-up closed by its CRM task.
    followups = (await client.get(f"/v1/customers/{ada}/experience")).json()["followups"]
    await apply(
        delivery(
            "task.completed",
            TaskCompleted(
                task_id=uuid.uuid4(),
                customer_id=ada,
                origin="followup",
                origin_ref=followups[0]["id"],
                completed_at=dt.datetime.now(dt.UTC),
                completed_by="kim@ourco.example",
            ),
        )
    )
    kept = await assert_kept_equal_rebuilt(session_factory)
    assert figures(kept, ada)["open_followups"] == 1 and figures(kept, bob)["open_followups"] == 2
    assert figures(kept, ada)["suppressions"] >= 1 and figures(kept, bob)["suppressions"] >= 1

    # The CRM announces the address's owner: rows kept under it are linked (suppressions here).
    cy = await make.customer(email="cy@example.com")
    await assert_kept_equal_rebuilt(session_factory)

    # A merge re-points every row of the duplicate (and a redelivery changes nothing).
    merge = delivery(
        "customer.merged",
        CustomerMerged(survivor_id=ada, duplicate_id=bob, survivor=CustomerSnapshot(**snapshot(ada, 2, email="ada@example.com"))),
    )
    await apply(merge)
    await apply(merge)
    kept = await assert_kept_equal_rebuilt(session_factory)
    assert figures(kept, bob) == figures({}, bob)
    assert figures(kept, ada)["responses"] == 8 and figures(kept, ada)["feedback"] == 3

    # An erasure links what was given under the customer's address (the answer and feedback).
    await apply(delivery("customer.erased", CustomerErased(customer_id=cy, erased_at=dt.datetime.now(dt.UTC))))
    kept = await assert_kept_equal_rebuilt(session_factory)
    assert (figures(kept, cy)["responses"], figures(kept, cy)["feedback"]) == (1, 1)

    # Rows deleted (by hand, or with a deleted survey) count out.
    async with session_factory() as session, session.begin():
        await session.execute(text("DELETE FROM suppressions WHERE customer_id = :c"), {"c": ada})
    kept = await assert_kept_equal_rebuilt(session_factory)
    assert figures(kept, ada)["suppressions"] == 0

    # The view shows the kept figures.
    summary = (await client.get(f"/v1/customers/{ada}/experience")).json()["summary"]
    ada_figures = figures(kept, ada)
    assert summary["responses"] == ada_figures["responses"] == 8
    # NPS 10, 3 and 0 (a skipped one left out), CSAT 5, 1 and 4, CES 2.
    assert (ada_figures["nps_answers"], ada_figures["nps_score_sum"]) == (3, 13)
    assert (summary["nps_average"], summary["csat_average"], summary["ces_average"]) == (4.33, 3.33, 2.0)
    assert (summary["feedback"], summary["open_followups"], summary["suppressions"]) == (3, 3, 0)


async def test_rebuild_command_puts_right_figures_changed_by_hand(make: Any, session_factory: Any, cem_database_url: str) -> None:
    survey = await make.survey("nps")
    ada = await make.customer()
    await make.answer(survey["id"], {"nps": 7}, customer_id=str(ada))
    before, _ = await kept_and_from_rows(session_factory)
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE customer_experience_totals SET responses = 40, feedback = 2"))
        await session.execute(
            text("INSERT INTO customer_experience_totals (customer_id, suppressions) VALUES (:c, 3)"), {"c": uuid.uuid4()}
        )
    async with session_factory() as session:
        assert await ExperienceTotalsRepository(session).differing_from_rows() == 2

    assert "rebuilt for 1 customer(s); 2 were wrong" in await run_cem_command(cem_database_url, "rebuild-experience-totals")

    after = await assert_kept_equal_rebuilt(session_factory)
    assert after == before
    async with session_factory() as session, session.begin():
        assert await rebuild_experience_totals(session) == (1, 0)
