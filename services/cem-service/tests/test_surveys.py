"""Surveys: questions per kind, scales, the status life cycle, trigger and recurrence settings."""

from __future__ import annotations

from typing import Any

import httpx


async def test_nps_csat_ces_get_their_standard_question_and_scale(client: httpx.AsyncClient) -> None:
    expected = {"nps": (0, 10, "Not at all likely", "Extremely likely"), "csat": (1, 5, "Very dissatisfied", "Very satisfied")}
    expected["ces"] = (1, 7, "Very difficult", "Very easy")
    for kind, (low, high, min_label, max_label) in expected.items():
        r = await client.post("/v1/surveys", json={"name": f"{kind} survey", "kind": kind})
        assert r.status_code == 201, r.text
        survey = r.json()
        assert survey["status"] == "draft" and survey["metric"] == kind and r.headers["etag"] == '"1"'
        score, comment = survey["questions"]
        assert (score["type"], score["required"], score["metric"]) == ("rating", True, kind)
        assert (score["scale_min"], score["scale_max"], score["min_label"], score["max_label"]) == (
            low,
            high,
            min_label,
            max_label,
        )
        assert comment["type"] == "text" and comment["required"] is False


async def test_custom_survey_with_every_question_type(client: httpx.AsyncClient) -> None:
    questions = [
        {"type": "rating", "text": "Rate the food", "scale_min": 1, "scale_max": 7, "min_label": "Awful", "max_label": "Superb"},
        {"type": "text", "text": "Anything else?", "max_length": 300},
        {"id": "q1", "type": "single_choice", "text": "Table or takeaway?", "options": ["Table", "Takeaway"]},
        {"type": "multi_choice", "text": "What did you order?", "options": ["Pizza", "Pasta", "Salad"], "required": True},
    ]
    r = await client.post("/v1/surveys", json={"name": "Dinner", "kind": "custom", "questions": questions})
    assert r.status_code == 201, r.text
    survey = r.json()
    assert survey["metric"] is None
    assert [q["id"] for q in survey["questions"]] == ["q2", "q3", "q1", "q4"]  # generated ids avoid given ones
    assert survey["questions"][0]["scale_max"] == 7 and survey["questions"][0]["metric"] is None
    assert survey["questions"][3]["required"] is True and survey["questions"][1]["max_length"] == 300


async def test_question_rules_are_422(client: httpx.AsyncClient) -> None:
    nps_rating = {"type": "rating", "text": "Recommend?", "metric": "nps"}
    bad = [
        {"kind": "custom"},  # a custom survey needs questions
        {"kind": "custom", "questions": []},
        {"kind": "nps", "questions": [{"type": "text", "text": "Only text"}]},
        {"kind": "nps", "questions": [{**nps_rating, "scale_min": 1, "scale_max": 5}]},
        {"kind": "nps", "questions": [{**nps_rating, "required": False}]},
        {"kind": "nps", "questions": [nps_rating, nps_rating | {"id": "again"}]},
        {"kind": "csat", "questions": [nps_rating]},
        {"kind": "custom", "questions": [nps_rating, {"type": "rating", "text": "CES", "metric": "ces"}]},
        {"kind": "custom", "questions": [{"type": "rating", "text": "x", "scale_min": 5, "scale_max": 5}]},
        {"kind": "custom", "questions": [{"type": "rating", "text": "x", "scale_min": 0, "scale_max": 11}]},
        {"kind": "custom", "questions": [{"type": "single_choice", "text": "x", "options": ["A", "a"]}]},
        {"kind": "custom", "questions": [{"type": "single_choice", "text": "x", "options": ["A"]}]},
        {"kind": "custom", "questions": [{"type": "single_choice", "text": "x", "options": ["A", "   "]}]},
        {"kind": "custom", "questions": [{"type": "text", "text": "   "}]},
        {"kind": "custom", "questions": [{"type": "dropdown", "text": "x"}]},
        {"kind": "custom", "questions": [{"id": "Bad Id", "type": "text", "text": "x"}]},
        {"kind": "custom", "questions": [{"id": "a", "type": "text", "text": "x"}, {"id": "a", "type": "text", "text": "y"}]},
        {"kind": "custom", "questions": [{"type": "text", "text": "x"}] * 51},
        {"kind": "star"},
        {"kind": "nps", "name": ""},
        {"kind": "nps", "recurrence_days": 0},
        {"kind": "nps", "recurrence_days": 10**30},
        {"kind": "nps", "status": "active"},
        {"kind": "nps", "touchpoint": "no-such-touchpoint"},
        {"kind": "nps", "trigger": {"touchpoint": "checkout"}},
        {"kind": "nps", "trigger": {"interaction_type": "purchase", "delay_minutes": -1}},
        {"kind": "nps", "trigger": {"interaction_type": "purchase", "throttle_days": 100000}},
        {"kind": "nps", "trigger": {"interaction_type": "Purchase Made"}},
        {"kind": "nps", "trigger": {"interaction_type": "purchase", "touchpoint": "nowhere"}},
    ]
    for body in bad:
        r = await client.post("/v1/surveys", json={"name": "S", **body})
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json" and r.json()["errors"], body


async def test_options_the_same_but_for_line_breaks_case_or_unicode_form_are_422_naming_the_duplicate(
    client: httpx.AsyncClient, make: Any
) -> None:
    # An answer picks an option by its text with any line breaks as LF, so these could never
    # both be picked; they look the same to a respondent too.
    for options in (
        ["a\r\nb", "a\nb"],
        ["Delivery", "a\rb", "A\nB"],
        ["Caf\u00e9", "Cafe\u0301"],  # NFC and NFD of the same word
        ["Stra\u00dfe", "x", "STRASSE"],
    ):
        duplicate = len(options) - 1
        for kind in ("single_choice", "multi_choice"):
            question = {"type": kind, "text": "Which?", "options": options}
            r = await client.post("/v1/surveys", json={"name": "S", "kind": "custom", "questions": [question]})
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", (options, r.text)
            [error] = r.json()["errors"]
            assert error["loc"] == ["body", "questions", 0, "options"], error
            assert repr(options[duplicate]) in error["msg"] and repr(options[duplicate]) in r.json()["detail"]
    draft = await make.survey("custom", status="draft", questions=[{"type": "text", "text": "Why?"}])
    question = {"type": "multi_choice", "text": "Which?", "options": ["a\r\nb", "a\nb"]}
    r = await client.patch(f"/v1/surveys/{draft['id']}", json={"questions": [{"type": "text", "text": "Why?"}, question]})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "questions", 1, "options"]
    # Options that differ otherwise are still two.
    fine = {"type": "single_choice", "text": "Which?", "options": ["a\nb", "a b", "ab", "Cafe"]}
    assert (await client.patch(f"/v1/surveys/{draft['id']}", json={"questions": [fine]})).status_code == 200


async def test_trigger_and_recurrence_are_stored_and_can_be_cleared(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    trigger = {"interaction_type": "purchase", "touchpoint": "checkout", "delay_minutes": 90, "throttle_days": 14}
    survey = (
        await client.post(
            "/v1/surveys", json={"name": "Post purchase", "kind": "csat", "trigger": trigger, "recurrence_days": 90}
        )
    ).json()
    assert survey["trigger"] == trigger and survey["recurrence_days"] == 90
    defaults = (
        await client.post("/v1/surveys", json={"name": "T", "kind": "nps", "trigger": {"interaction_type": "call"}})
    ).json()
    assert defaults["trigger"] == {"interaction_type": "call", "touchpoint": None, "delay_minutes": 0, "throttle_days": 30}
    cleared = (await client.patch(f"/v1/surveys/{survey['id']}", json={"trigger": None, "recurrence_days": None})).json()
    assert cleared["trigger"] is None and cleared["recurrence_days"] is None and cleared["version"] == 2


async def test_status_life_cycle(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps", status="draft")
    url = f"/v1/surveys/{survey['id']}"
    active = (await client.patch(url, json={"status": "active"})).json()
    assert active["status"] == "active" and active["activated_at"] is not None
    # Questions are frozen once people may answer.
    r = await client.patch(url, json={"questions": [{"type": "rating", "text": "New wording?"}]})
    assert r.status_code == 409
    closed = (await client.patch(url, json={"status": "closed"})).json()
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    reopened = (await client.patch(url, json={"status": "active"})).json()
    assert reopened["status"] == "active" and reopened["closed_at"] is None
    # Nobody answered yet: back to draft is fine, with new questions in the same request.
    back = await client.patch(url, json={"status": "draft", "questions": [{"type": "rating", "text": "New wording?"}]})
    assert back.status_code == 200 and back.json()["questions"][0]["text"] == "New wording?"
    assert back.json()["questions"][0]["metric"] == "nps"
    await client.patch(url, json={"status": "active"})
    await make.answer(survey["id"], {"q1": 10})
    r = await client.patch(url, json={"status": "draft"})
    assert r.status_code == 409 and "has answers" in r.json()["detail"]
    assert (await client.patch(url, json={"status": "archived"})).status_code == 422
    assert (await client.patch(url, json={"status": None})).status_code == 422
    assert (await client.patch(url, json={"kind": "csat"})).status_code == 422


async def test_delete_only_a_survey_nobody_was_invited_to(client: httpx.AsyncClient, make: Any) -> None:
    unused = await make.survey("nps", status="draft")
    assert (await client.delete(f"/v1/surveys/{unused['id']}")).status_code == 204
    used = await make.survey("nps")
    await make.invitation(used["id"])
    r = await client.delete(f"/v1/surveys/{used['id']}")
    assert r.status_code == 409 and "close it" in r.json()["detail"]


async def test_list_filters_and_pagination(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    await make.survey("nps", touchpoint="checkout")
    await make.survey("csat", status="draft")
    await make.survey("ces", status="closed")
    all_ = (await client.get("/v1/surveys")).json()["items"]
    assert [s["kind"] for s in all_] == ["ces", "csat", "nps"]  # newest first
    assert [s["kind"] for s in (await client.get("/v1/surveys", params={"status": "draft"})).json()["items"]] == ["csat"]
    assert [s["kind"] for s in (await client.get("/v1/surveys", params={"touchpoint": "checkout"})).json()["items"]] == ["nps"]
    page = (await client.get("/v1/surveys", params={"limit": 2})).json()
    rest = (await client.get("/v1/surveys", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [s["kind"] for s in page["items"] + rest["items"]] == ["ces", "csat", "nps"] and rest["next_cursor"] is None
    assert (await client.get("/v1/surveys", params={"kind": "star"})).status_code == 422
