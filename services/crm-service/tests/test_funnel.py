"""The sales funnel, checked against a fixture whose answer is worked out by hand below."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import httpx

from crm.deals.models import Deal, DealStageChange

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# The default pipeline: Qualification 0.1, Needs analysis 0.2, Proposal 0.5, Negotiation 0.8,
# Closed won, Closed lost. Each deal: owner, amount, [(stage, day it entered it), ...].
# All are created on day 0; the last move says where they are now.
FIXTURE: dict[str, tuple[str, str | None, list[tuple[str, int]]]] = {
    "D1": ("sam", "1000.00", [("Qualification", 0), ("Needs analysis", 2), ("Proposal", 6)]),
    "D2": ("sam", "2000.00", [("Qualification", 0), ("Needs analysis", 4)]),
    "D3": ("sam", "3000.00", [("Qualification", 0)]),
    "D4": ("sam", "4000.00", [("Qualification", 0), ("Proposal", 1), ("Negotiation", 4), ("Closed won", 11)]),
    "D5": ("sam", "500.00", [("Qualification", 0), ("Needs analysis", 3), ("Closed lost", 6)]),
    "D6": ("sam", None, [("Needs analysis", 0)]),
    "D8": ("kim", "7000.00", [("Qualification", 0)]),
}
# Worked out by hand, for owner=sam (D8 is kim's and left out):
#
# Open deals now:      Qualification: D3            -> 1, 3000, weighted 3000 x 0.1 = 300.00
#                      Needs analysis: D2, D6       -> 2, 2000 (D6 has no amount), x 0.2 = 400.00
#                      Proposal: D1                 -> 1, 1000, x 0.5 = 500.00
#                      Negotiation: none            -> 0, 0, 0
#                      open total: 4 deals, 6000.00, weighted 1200.00
# Closed:              won D4 (4000.00), lost D5 (500.00): win rate 1 / (1 + 1) = 0.5
#
# Furthest stage reached (ranks Q=0, N=1, P=2, Neg=3, won=4; the lost stage does not count):
#   D1 -> P (2), D2 -> N (1), D3 -> Q (0), D4 -> won (4, skipping N counts as passing it),
#   D5 -> N (1), D6 -> N (1)
# reached:  Q 6 (all), N 5 (all but D3), P 2 (D1, D4), Neg 1 (D4), won 1 (D4)
# conversion to next:  Q 5/6 = 0.8333, N 2/5 = 0.4, P 1/2 = 0.5, Neg (to won) 1/1 = 1.0
#
# Days in stage, stays that ended (a stay still in progress is left out):
#   Q:   D1 0->2 = 2, D2 0->4 = 4, D4 0->1 = 1, D5 0->3 = 3   -> 10 / 4 = 2.5
#   N:   D1 2->6 = 4, D5 3->6 = 3 (left for lost)            -> 7 / 2 = 3.5
#   P:   D4 1->4 = 3                                         -> 3.0
#   Neg: D4 4->11 = 7                                         -> 7.0
EXPECTED_STAGES = [
    # name, open_count, amount, weighted, reached, conversion_to_next, avg_days_in_stage
    ("Qualification", 1, "3000.00", "300.00", 6, 0.8333, 2.5),
    ("Needs analysis", 2, "2000.00", "400.00", 5, 0.4, 3.5),
    ("Proposal", 1, "1000.00", "500.00", 2, 0.5, 3.0),
    ("Negotiation", 0, "0.00", "0.00", 1, 1.0, 7.0),
]


async def _build_fixture(client: httpx.AsyncClient, session_factory: Any, make: Any) -> dict[str, Any]:
    pipeline = (await client.get("/v1/pipelines")).json()["items"][0]
    stages = {s["name"]: s for s in pipeline["stages"]}
    customer = await make.customer()
    other = await make.pipeline()  # a deal there must not count
    async with session_factory() as session:
        rows: list[Any] = []
        for name, (owner, amount, moves) in FIXTURE.items():
            last_stage, last_day = moves[-1]
            status = "won" if stages[last_stage]["is_won"] else "lost" if stages[last_stage]["is_lost"] else "open"
            deal = Deal(
                id=uuid.uuid4(),
                customer_id=uuid.UUID(customer["id"]),
                title=name,
                amount=Decimal(amount) if amount else None,
                currency="EUR",
                pipeline_id=uuid.UUID(pipeline["id"]),
                stage_id=uuid.UUID(stages[last_stage]["id"]),
                status=status,
                lost_reason="Budget" if status == "lost" else None,
                closed_at=T0 + dt.timedelta(days=last_day) if status != "open" else None,
                owner=owner,
                stage_entered_at=T0 + dt.timedelta(days=last_day),
                version=len(moves),
                created_at=T0,
                updated_at=T0 + dt.timedelta(days=last_day),
            )
            rows.append(deal)
            previous = None
            for seq, (stage, day) in enumerate(moves, start=1):
                rows.append(
                    DealStageChange(
                        id=uuid.uuid4(),
                        deal_id=deal.id,
                        seq=seq,
                        pipeline_id=deal.pipeline_id,
                        from_stage_id=uuid.UUID(stages[previous]["id"]) if previous else None,
                        from_stage=previous,
                        to_stage_id=uuid.UUID(stages[stage]["id"]),
                        to_stage=stage,
                        to_status="won" if stages[stage]["is_won"] else "lost" if stages[stage]["is_lost"] else "open",
                        amount=deal.amount,
                        changed_by="fixture",
                        changed_at=T0 + dt.timedelta(days=day),
                    )
                )
                previous = stage
        session.add_all(rows)
        await session.commit()
    await make.deal(customer["id"], pipeline_id=other["id"], amount="99999.00", owner="sam")
    return pipeline


async def test_funnel_matches_the_hand_worked_fixture(client: httpx.AsyncClient, session_factory: Any, make: Any) -> None:
    pipeline = await _build_fixture(client, session_factory, make)
    r = await client.get("/v1/funnel", params={"owner": "sam"})
    assert r.status_code == 200, r.text
    funnel = r.json()
    assert funnel["pipeline_id"] == pipeline["id"] and funnel["pipeline_name"] == "Sales pipeline"
    got = [
        (
            s["name"],
            s["open_count"],
            s["amount"],
            s["weighted_amount"],
            s["reached"],
            s["conversion_to_next"],
            s["avg_days_in_stage"],
        )
        for s in funnel["stages"]
    ]
    assert got == EXPECTED_STAGES
    assert funnel["open"] == {"count": 4, "amount": "6000.00", "weighted_amount": "1200.00"}
    assert funnel["won"] == {"count": 1, "amount": "4000.00"}
    assert funnel["lost"] == {"count": 1, "amount": "500.00"}
    assert funnel["win_rate"] == 0.5


async def test_funnel_scope_filters_owner_and_creation_time(client: httpx.AsyncClient, session_factory: Any, make: Any) -> None:
    pipeline = await _build_fixture(client, session_factory, make)
    everyone = (await client.get("/v1/funnel", params={"pipeline_id": pipeline["id"]})).json()
    qualification = everyone["stages"][0]
    # D8 (kim) joins: one more open deal in Qualification, reached by 7 deals of which 5 moved on.
    assert (qualification["open_count"], qualification["amount"], qualification["reached"]) == (2, "10000.00", 7)
    assert qualification["conversion_to_next"] == round(5 / 7, 4)
    later = (
        await client.get("/v1/funnel", params={"created_from": "2026-01-02T00:00:00Z", "pipeline_id": pipeline["id"]})
    ).json()
    assert later["open"]["count"] == 0 and later["win_rate"] is None
    assert all(s["conversion_to_next"] is None and s["avg_days_in_stage"] is None for s in later["stages"])


async def test_funnel_of_an_unknown_pipeline_is_404_and_bad_ranges_are_422(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/funnel", params={"pipeline_id": str(uuid.uuid4())})).status_code == 404
    bad = {"created_from": "2026-02-01T00:00:00Z", "created_to": "2026-01-01T00:00:00Z"}
    assert (await client.get("/v1/funnel", params=bad)).status_code == 422
    assert (await client.get("/v1/funnel", params={"created_from": "2026-02-01T00:00:00"})).status_code == 422  # no timezone
    assert (await client.get("/v1/funnel", params={"currency": "euro"})).status_code == 422
