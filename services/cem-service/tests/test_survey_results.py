"""GET /v1/surveys/{id}/results: per question, who answered and what, counted by the database."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from cxkit.testing import bearer

from .test_customer_events import erased

QUESTIONS = [
    {"id": "score", "type": "rating", "text": "How was it?", "scale_min": 1, "scale_max": 5, "required": True},
    {"id": "plan", "type": "single_choice", "text": "Which plan?", "options": ["Basic", "Pro"]},
    {"id": "liked", "type": "multi_choice", "text": "What did you like?", "options": ["Price", "Speed", "Staff"]},
    {"id": "why", "type": "text", "text": "Why?"},
]
# (score, plan, liked, why, touchpoint, day of November)
ANSWERS = [
    (5, "Pro", ["Speed", "Staff"], "Quick", "checkout", 1),
    (4, "Pro", ["Speed"], None, "checkout", 2),
    (4, None, ["Price", "Speed"], "Fine", "support", 3),
    (2, "Basic", [], "Slow  ", "support", 4),
    (5, "Basic", None, None, "checkout", 5),
    (1, None, ["Staff"], "Rude", "checkout", 6),
]


def _values(question: dict[str, Any]) -> dict[str, tuple[int, float]]:
    return {v["value"]: (v["count"], v["share"]) for v in question["values"]}


async def _survey(make: Any) -> dict[str, Any]:
    await make.touchpoint("checkout")
    await make.touchpoint("support")
    survey = await make.survey("custom", questions=QUESTIONS)
    for score, plan, liked, why, touchpoint, day in ANSWERS:
        answers = {"score": score, "plan": plan, "liked": liked, "why": why}
        await make.answer(survey["id"], answers, touchpoint=touchpoint, submitted_at=f"2026-11-0{day}T10:00:00Z")
    return survey


async def test_each_question_is_summed_up_as_a_hand_count_says(client: httpx.AsyncClient, make: Any) -> None:
    survey = await _survey(make)
    other = await make.survey("custom", questions=QUESTIONS)
    await make.answer(other["id"], {"score": 3, "plan": "Basic", "liked": ["Price"], "why": "other survey"})

    r = await client.get(f"/v1/surveys/{survey['id']}/results")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["responses"] == 6 and body["filters"] == {"touchpoint": None, "from": None, "to": None}
    score, plan, liked, why = body["questions"]
    assert [q["id"] for q in body["questions"]] == ["score", "plan", "liked", "why"]

    assert (score["type"], score["answered"], score["skipped"], score["scale_min"], score["scale_max"]) == ("rating", 6, 0, 1, 5)
    assert score["mean"] == round((5 + 4 + 4 + 2 + 5 + 1) / 6, 2)
    assert _values(score) == {
        "1": (1, round(1 / 6, 4)),
        "2": (1, round(1 / 6, 4)),
        "3": (0, 0.0),
        "4": (2, round(2 / 6, 4)),
        "5": (2, round(2 / 6, 4)),
    }
    assert [v["value"] for v in score["values"]] == ["1", "2", "3", "4", "5"]

    assert (plan["answered"], plan["skipped"]) == (4, 2)
    assert _values(plan) == {"Basic": (2, 0.5), "Pro": (2, 0.5)}

    # An empty pick counts as skipped; shares are of the 4 that picked something.
    assert (liked["answered"], liked["skipped"]) == (4, 2)
    assert _values(liked) == {"Price": (1, 0.25), "Speed": (3, 0.75), "Staff": (2, 0.5)}

    assert (why["answered"], why["skipped"]) == (4, 2)
    assert [t["text"] for t in why["latest"]] == ["Rude", "Slow", "Fine", "Quick"]
    assert why["latest"][0]["submitted_at"].startswith("2026-11-06T10:00:00")


async def test_filters_narrow_the_answers_counted(client: httpx.AsyncClient, make: Any) -> None:
    survey = await _survey(make)
    url = f"/v1/surveys/{survey['id']}/results"

    support = (await client.get(url, params={"touchpoint": "support"})).json()
    assert support["responses"] == 2 and support["filters"]["touchpoint"] == "support"
    assert _values(support["questions"][0])["4"] == (1, 0.5) and support["questions"][0]["mean"] == 3.0

    window = (await client.get(url, params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-05T00:00:00Z"})).json()
    assert window["responses"] == 3
    assert [t["text"] for t in window["questions"][3]["latest"]] == ["Slow", "Fine"]

    empty = (await client.get(url, params={"from": "2026-12-01T00:00:00Z"})).json()
    assert empty["responses"] == 0
    assert [(q["answered"], q["skipped"]) for q in empty["questions"]] == [(0, 0)] * 4
    assert empty["questions"][0]["mean"] is None and all(v["count"] == 0 for v in empty["questions"][0]["values"])
    assert empty["questions"][3]["latest"] == []

    bad = await client.get(url, params={"from": "2026-11-05T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


async def test_an_erased_customer_s_text_answers_count_as_skipped(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    survey = await _survey(make)
    customer = await make.customer()
    answers = {"score": 1, "plan": "Pro", "liked": ["Price"], "why": "private words"}
    await make.answer(survey["id"], answers, customer_id=str(customer), submitted_at="2026-11-07T10:00:00Z")
    url = f"/v1/surveys/{survey['id']}/results"
    why = (await client.get(url)).json()["questions"][3]
    assert (why["answered"], why["skipped"], why["latest"][0]["text"]) == (5, 2, "private words")

    await apply(erased(customer))
    score, plan, liked, why = (await client.get(url)).json()["questions"]
    assert (why["answered"], why["skipped"]) == (4, 3)
    assert [t["text"] for t in why["latest"]] == ["Rude", "Slow", "Fine", "Quick"]
    # The score and the choices stay (an erasure takes the words only).
    assert (score["answered"], _values(score)["1"], _values(plan)["Pro"], _values(liked)["Price"]) == (
        7,
        (2, round(2 / 7, 4)),
        (3, 0.6),
        (2, 0.4),
    )


async def test_unknown_survey_and_auth(client: httpx.AsyncClient, make: Any, keys: dict[str, str]) -> None:
    survey = await make.survey("nps")
    assert (await client.get(f"/v1/surveys/{survey['id']}/results", headers=bearer(keys["read"]))).status_code == 200
    nps = (await client.get(f"/v1/surveys/{survey['id']}/results")).json()
    assert nps["responses"] == 0 and [q["id"] for q in nps["questions"]] == [q["id"] for q in survey["questions"]]
    missing = await client.get(f"/v1/surveys/{uuid.uuid4()}/results")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/surveys/{survey['id']}/results", headers=bearer(keys["revoked"]))).status_code == 401
    assert (await client.get("/v1/surveys/not-a-uuid/results")).status_code == 422
