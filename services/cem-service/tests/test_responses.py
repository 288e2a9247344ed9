"""POST /v1/responses: the same rules as the respondent page, for API clients; follow-ups for detractors."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from cem.followups.models import Followup


async def test_answer_by_token_then_never_again(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("csat")
    inv = await make.invitation(survey["id"])
    r = await client.post("/v1/responses", json={"token": inv["token"], "answers": {"csat": 4, "improve": "More parking"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["invitation_id"] == inv["id"] and body["customer_id"] == inv["customer_id"] and body["source"] == "api"
    assert body["score"] == {"metric": "csat", "value": 4, "scale_min": 1, "scale_max": 5, "category": "positive"}
    assert body["followup_requested"] is False
    assert (await client.get(f"/v1/responses/{body['id']}")).json() == body
    again = await client.post("/v1/responses", json={"token": inv["token"], "answers": {"csat": 5}})
    assert again.status_code == 409 and again.json()["reason"] == "already_answered"


async def test_concurrent_answers_to_one_invitation_record_one(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    inv = await make.invitation(survey["id"])
    results = await asyncio.gather(
        *[client.post("/v1/responses", json={"token": inv["token"], "answers": {"nps": n}}) for n in range(6)]
    )
    assert sorted(r.status_code for r in results) == [201] + [409] * 5
    assert len((await client.get("/v1/responses", params={"survey_id": survey["id"]})).json()["items"]) == 1


async def test_detractors_raise_a_followup_for_known_customers(
    client: httpx.AsyncClient, make: Any, session_factory: Any, outbox: Any
) -> None:
    nps, csat, ces = [await make.survey(k) for k in ("nps", "csat", "ces")]
    customer = str(await make.customer())
    cases = [(nps, "nps", 6, True), (nps, "nps", 7, False), (csat, "csat", 2, True), (csat, "csat", 3, False)]
    cases += [(ces, "ces", 2, True), (ces, "ces", 3, False)]
    for survey, question, score, expected in cases:
        answer = await make.answer(survey["id"], {question: score}, customer_id=customer)
        assert answer["followup_requested"] is expected, (question, score)
    anonymous = await make.answer(nps["id"], {"nps": 0})
    assert anonymous["followup_requested"] is False  # nobody to follow up with
    async with session_factory() as session:
        followups = (await session.scalars(select(Followup).order_by(Followup.created_at))).all()
    assert [(f.metric, f.score, f.status) for f in followups] == [("nps", 6, "open"), ("csat", 2, "open"), ("ces", 2, "open")]
    events = await outbox("followup.requested")
    assert [e["data"]["score"] for e in events] == [6, 2, 2]
    assert events[0]["subject"] == customer and events[0]["data"]["metric"] == "nps"
    assert events[0]["data"]["reason"] == "NPS 6 on 0-10 (detractor) in survey 'NPS survey'"
    assert {e["data"]["followup_id"] for e in events} == {str(f.id) for f in followups}


async def test_a_followups_reason_fits_what_the_crm_stores_whatever_the_surveys_name(make: Any, outbox: Any) -> None:
    """The reason names the survey as it is: a name of 200 control characters (a name may hold any
    but NUL) made a reason of 850 characters, which `followup.requested` cannot carry (the CRM
    stores 500): the answer was a 500."""
    name = "\x01'" * 100
    survey = await make.survey("nps", name=name)
    answer = await make.answer(survey["id"], {"nps": 2}, customer_id=str(await make.customer()))
    assert answer["followup_requested"] is True
    (event,) = await outbox("followup.requested")
    assert event["data"]["reason"] == f"NPS 2 on 0-10 (detractor) in survey '{name}'"


async def test_answer_by_survey_uses_the_customers_open_invitation(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    inv = await make.invitation(survey["id"])
    answer = await make.answer(survey["id"], {"nps": 9}, customer_id=inv["customer_id"])
    assert answer["invitation_id"] == inv["id"]
    assert (await client.get(f"/v1/invitations/{inv['id']}")).json()["status"] == "answered"
    by_email = await make.answer(survey["id"], {"nps": 8}, email="walk-in@example.net")
    assert by_email["customer_id"] is None and by_email["email"] == "walk-in@example.net"


async def test_answers_are_checked_against_the_questions(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey(
        "nps",
        questions=[
            {"id": "nps", "type": "rating", "text": "Recommend?"},
            {"id": "why", "type": "text", "text": "Why?", "max_length": 10},
            {"id": "pick", "type": "single_choice", "text": "Pick", "options": ["A", "B"]},
            {"id": "many", "type": "multi_choice", "text": "Many", "options": ["A", "B"]},
        ],
    )
    sid = survey["id"]
    bad = [
        {"why": "no score"},
        {"nps": 11},
        {"nps": -1},
        {"nps": 10**40},
        {"nps": 9.5},
        {"nps": "9"},
        {"nps": True},
        {"nps": [9]},
        {"nps": {"value": 9}},
        {"nps": 9, "why": "far too long"},
        {"nps": 9, "why": 12},
        {"nps": 9, "pick": "C"},
        {"nps": 9, "pick": ["A"]},
        {"nps": 9, "many": ["A", "A"]},
        {"nps": 9, "many": "A"},
        {"nps": 9, "many": [1]},
        {"nps": 9, "unknown": "x"},
        {"nps": 9, "why": "a\u0000b"},
    ]
    for answers in bad:
        r = await client.post("/v1/responses", json={"survey_id": sid, "answers": answers})
        assert r.status_code == 422, (answers, r.text)
        assert r.json()["errors"] and r.json()["errors"][0]["loc"][:2] == ["body", "answers"], answers
    ok = await make.answer(sid, {"nps": 0, "why": " ok ", "pick": "B", "many": ["B", "A"]})
    assert {a["question_id"]: a["value"] for a in ok["answers"]} == {"nps": 0, "why": "ok", "pick": "B", "many": ["A", "B"]}


async def test_request_shape_rules(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    draft = await make.survey("nps", status="draft")
    customer = str(await make.customer())
    sid = survey["id"]
    for body, status in [
        ({"answers": {"nps": 9}}, 422),
        ({"token": "x", "survey_id": sid, "answers": {"nps": 9}}, 422),
        ({"token": "not-a-token", "answers": {"nps": 9}}, 422),
        ({"token": "x", "customer_id": customer, "answers": {"nps": 9}}, 422),
        ({"survey_id": sid, "customer_id": customer, "email": "a@example.com", "answers": {"nps": 9}}, 422),
        ({"survey_id": sid, "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10", "answers": {"nps": 9}}, 422),
        ({"survey_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10", "answers": {"nps": 9}}, 422),
        ({"survey_id": sid, "answers": {"nps": 9}, "submitted_at": "2999-01-01T00:00:00Z"}, 422),
        ({"survey_id": sid, "answers": {"nps": 9}, "submitted_at": "2026-11-01T00:00:00"}, 422),
        ({"survey_id": sid, "answers": {"nps": 9}, "touchpoint": "nowhere"}, 422),
        ({"survey_id": sid, "answers": "nps=9"}, 422),
        ({"survey_id": sid, "answers": {f"q{i}": 1 for i in range(51)}}, 422),
        ({"survey_id": draft["id"], "answers": {"nps": 9}}, 409),
    ]:
        r = await client.post("/v1/responses", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"


async def test_a_survey_back_in_draft_takes_no_answers(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"])
    assert (await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "draft"})).status_code == 200
    for body in ({"token": invitation["token"], "answers": {"nps": 9}}, {"survey_id": survey["id"], "answers": {"nps": 9}}):
        r = await client.post("/v1/responses", json=body)
        assert r.status_code == 409 and r.json()["reason"] == "survey_draft", r.text
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/responses"]["post"]
    assert "survey_draft" in operation["description"]


async def test_line_breaks_in_answers_are_stored_as_line_feeds(client: httpx.AsyncClient, make: Any) -> None:
    """As on the respondent page: CRLF and a lone CR are one line break (LF), counted once."""
    survey = await make.survey(
        "nps",
        questions=[
            {"id": "nps", "type": "rating", "text": "Recommend?"},
            {"id": "why", "type": "text", "text": "Why?", "max_length": 10},
            {"id": "pick", "type": "single_choice", "text": "Pick", "options": ["A\nB", "C"]},
        ],
    )
    answer = await make.answer(survey["id"], {"nps": 9, "why": "abcd\r\nefg\rh", "pick": "A\r\nB"})
    assert {a["question_id"]: a["value"] for a in answer["answers"]} == {"nps": 9, "why": "abcd\nefg\nh", "pick": "A\nB"}


async def test_list_responses_with_filters(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    survey = await make.survey("nps")
    customer = str(await make.customer())
    a = await make.answer(survey["id"], {"nps": 9}, customer_id=customer, submitted_at="2026-11-01T10:00:00Z")
    b = await make.answer(survey["id"], {"nps": 3}, touchpoint="checkout", submitted_at="2026-11-02T10:00:00Z")
    c = await make.answer(survey["id"], {"nps": 7}, submitted_at="2026-11-03T10:00:00Z")

    async def ids(**params: Any) -> list[str]:
        r = await client.get("/v1/responses", params=params)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert await ids() == [c["id"], b["id"], a["id"]]
    assert await ids(customer_id=customer) == [a["id"]]
    assert await ids(touchpoint="checkout") == [b["id"]]
    assert await ids(**{"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T10:00:00Z"}) == [b["id"]]
    page = (await client.get("/v1/responses", params={"limit": 1})).json()
    nxt = (await client.get("/v1/responses", params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert [x["id"] for x in page["items"] + nxt["items"]] == [c["id"], b["id"]]
    assert (await client.get(f"/v1/responses/{'0' * 8}-0000-4000-8000-000000000000")).status_code == 404
