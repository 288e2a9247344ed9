"""The answers counted per survey, touchpoint, UTC day, question, kind and value (`answer_days`,
kept by the triggers of migration cem0022) equal the counts computed from the responses after
answers, links of answers to their customer, erasures and deletes, whatever JSON a response
holds; the survey results read whole days from them and the parts of days a window cuts from
the responses, with the same figures as from the responses alone; `cem rebuild-answer-days`
puts right counts that were changed by hand."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from cem.responses.repository import ANSWER_DAYS
from cem.responses.service import rebuild_answer_days
from cxkit.events.payloads import CustomerCreated

from .conftest import delivery, run_cem_command, snapshot
from .test_customer_events import erased

Row = tuple[Any, ...]
QUESTIONS = [
    {"id": "score", "type": "rating", "text": "Score?", "scale_min": 1, "scale_max": 5, "metric": "csat"},
    {"id": "channel", "type": "single_choice", "text": "How did you buy?", "options": ["Web", "Shop"]},
    {"id": "liked", "type": "multi_choice", "text": "What did you like?", "options": ["Price", "Staff", "Speed"]},
    {"id": "why", "type": "text", "text": "Why?"},
]


async def kept_and_from_rows(session_factory: Any) -> tuple[set[Row], set[Row]]:
    """Each key's count as kept (its stripes summed) and as computed from the responses."""
    keys = ", ".join(ANSWER_DAYS.keys)
    async with session_factory() as session:
        kept, fresh = [
            (
                await session.execute(
                    text(f"SELECT {keys}, sum(answers)::bigint FROM {source} GROUP BY {keys} HAVING sum(answers) <> 0")
                )
            ).all()
            for source in ("answer_days", "answer_days_from_rows")
        ]
    return {tuple(r) for r in kept}, {tuple(r) for r in fresh}


async def assert_kept_equal_rebuilt(session_factory: Any) -> dict[tuple[str, str, str], int]:
    """The kept counts equal the rows'; returns them per (question, kind, value), days summed."""
    kept, fresh = await kept_and_from_rows(session_factory)
    assert kept == fresh
    async with session_factory() as session:
        assert await ANSWER_DAYS.differing_from_rows(session) == 0
    per_value: dict[tuple[str, str, str], int] = {}
    for _survey, _touchpoint, _day, question, _type, kind, value, answers in kept:
        per_value[(question, kind, value)] = per_value.get((question, kind, value), 0) + answers
    return per_value


async def test_answer_days_equal_the_counts_from_the_responses_after_answers_links_erasures_and_deletes(
    make: Any, apply: Any, session_factory: Any
) -> None:
    survey = await make.survey("csat", questions=QUESTIONS)
    customer = await make.customer()
    await make.answer(
        survey["id"],
        {"score": 5, "channel": "Web", "liked": ["Price", "Staff"], "why": "Kind staff"},
        customer_id=str(customer),
        submitted_at="2026-11-02T10:00:00Z",
    )
    await make.answer(survey["id"], {"score": 2, "liked": []}, submitted_at="2026-11-02T23:59:59Z")
    walk_in = await make.answer(
        survey["id"],
        {"score": 4, "channel": "Shop", "liked": ["Staff"], "why": "Quick"},
        email="walk-in@example.com",
        submitted_at="2026-11-03T00:00:00Z",
    )
    counts = await assert_kept_equal_rebuilt(session_factory)
    assert counts == {
        ("", "response", ""): 3,
        ("score", "answered", "5"): 1,
        ("score", "answered", "2"): 1,
        ("score", "answered", "4"): 1,
        ("channel", "answered", "Web"): 1,
        ("channel", "answered", "Shop"): 1,
        ("channel", "skipped", ""): 1,
        ("liked", "answered", ""): 2,
        ("liked", "skipped", ""): 1,  # an empty list
        ("liked", "pick", "Price"): 1,
        ("liked", "pick", "Staff"): 2,
        ("why", "answered", ""): 2,
        ("why", "skipped", ""): 1,
    }

    # The walk-in's answer goes to the customer the CRM announces with the address: nothing changes.
    walker = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(walker, email="walk-in@example.com"))))
    assert await assert_kept_equal_rebuilt(session_factory) == counts
    # An erasure blanks the text: answered becomes skipped.
    await apply(erased(customer))
    after_erasure = await assert_kept_equal_rebuilt(session_factory)
    assert after_erasure == counts | {("why", "answered", ""): 1, ("why", "skipped", ""): 2}
    # A delete takes the answer's rows out, and a key brought back to nothing keeps no row.
    async with session_factory() as session, session.begin():
        await session.execute(text("DELETE FROM responses WHERE id = :id"), {"id": uuid.UUID(walk_in["id"])})
    after_delete = await assert_kept_equal_rebuilt(session_factory)
    assert ("channel", "answered", "Shop") not in after_delete and after_delete[("", "response", "")] == 2
    async with session_factory() as session:
        assert await session.scalar(text("SELECT count(*) FROM answer_days WHERE answers = 0")) == 0


async def test_any_json_in_a_response_is_counted_and_never_fails_its_write(
    make: Any, session_factory: Any, client: httpx.AsyncClient
) -> None:
    """Only SQL can store such answers; the triggers must take them without failing the write."""
    survey = await make.survey("csat", questions=QUESTIONS)
    odd_answers = [
        '{"not": "a list"}',
        '[1, "two", null, {"type": "rating"}]',
        '[{"question_id": "liked", "type": "multi_choice", "value": "Price"}]',  # a multi choice that is no list
        '[{"question_id": "liked", "type": "multi_choice", "value": [1, {"a": 1}, "Speed"]}]',
        f'[{{"question_id": "channel", "type": "single_choice", "value": "{"x" * 3000}"}}]',
    ]
    async with session_factory() as session, session.begin():
        for answers in odd_answers:
            await session.execute(
                text(
                    "INSERT INTO responses (id, survey_id, source, answers, submitted_at, recorded_at) "
                    "VALUES (gen_random_uuid(), :s, 'api', CAST(:a AS jsonb), now(), now())"
                ),
                {"s": uuid.UUID(survey["id"]), "a": answers},
            )
    counts = await assert_kept_equal_rebuilt(session_factory)
    assert counts[("", "response", "")] == 5
    assert counts[("liked", "pick", "Speed")] == 1 and counts[("liked", "pick", "1")] == 1
    assert counts[("channel", "answered", "x" * 500)] == 1  # values are cut at 500 characters
    results = await client.get(f"/v1/surveys/{survey['id']}/results")
    assert results.status_code == 200 and results.json()["responses"] == 5


async def test_results_read_whole_days_from_answer_days_and_cut_days_from_the_responses(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    survey = await make.survey("csat", questions=QUESTIONS)
    answers = [
        ("2026-11-01T09:30:00Z", 5, ["Price"]),
        ("2026-11-01T23:00:00Z", 4, ["Price", "Staff"]),
        ("2026-11-02T00:00:00Z", 3, []),
        ("2026-11-02T12:00:00Z", 1, ["Speed"]),
        ("2026-11-03T01:00:00Z", 2, ["Staff"]),
    ]
    for when, score, liked in answers:
        await make.answer(survey["id"], {"score": score, "liked": liked}, submitted_at=when)

    async def results(since: str | None, until: str | None) -> dict[str, Any]:
        params = ({"from": since} if since else {}) | ({"to": until} if until else {})
        r = await client.get(f"/v1/surveys/{survey['id']}/results", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def summed(body: dict[str, Any]) -> tuple[int, dict[str, int], dict[str, int]]:
        questions = {q["id"]: q for q in body["questions"]}
        scores = {v["value"]: v["count"] for v in questions["score"]["values"] if v["count"]}
        picks = {v["value"]: v["count"] for v in questions["liked"]["values"] if v["count"]}
        return body["responses"], scores, picks

    windows = [
        (None, None),
        ("2026-11-01T09:30:00Z", None),
        ("2026-11-01T09:30:01Z", "2026-11-02T12:00:00Z"),
        ("2026-11-01T10:00:00Z", "2026-11-01T23:30:00Z"),  # within one day
        ("2026-11-01T23:00:00Z", "2026-11-02T01:00:00Z"),  # across one midnight, no whole day
        ("2026-11-01T12:00:00+05:00", "2026-11-03T00:00:00-03:00"),  # offsets: 07:00 and 03:00 UTC
        (None, "2026-11-02T00:00:00Z"),
    ]
    for since, until in windows:
        inside = [
            (score, liked)
            for when, score, liked in answers
            if (since is None or when >= since.replace("12:00:00+05:00", "07:00:00Z"))
            and (until is None or when < until.replace("00:00:00-03:00", "03:00:00Z"))
        ]
        picks: dict[str, int] = {}
        for _, liked in inside:
            for option in liked:
                picks[option] = picks.get(option, 0) + 1
        assert summed(await results(since, until)) == (
            len(inside),
            {str(s): sum(1 for score, _ in inside if score == s) for s in sorted({s for s, _ in inside})},
            picks,
        ), (since, until)

    # Whole days are read from answer_days, cut days from the responses: a count changed by hand
    # for 2 November shows where a window holds that day whole, not where it cuts it.
    async with session_factory() as session, session.begin():
        await session.execute(
            text(
                "UPDATE answer_days SET answers = answers + 10 "
                "WHERE survey_id = :s AND day = '2026-11-02' AND kind = 'pick' AND value = 'Speed'"
            ),
            {"s": uuid.UUID(survey["id"])},
        )
    assert summed(await results("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"))[2] == {"Speed": 11}
    assert summed(await results("2026-11-02T00:00:01Z", "2026-11-03T00:00:00Z"))[2] == {"Speed": 1}


async def test_rebuild_command_puts_right_counts_changed_by_hand(make: Any, session_factory: Any, cem_database_url: str) -> None:
    survey = await make.survey("csat", questions=QUESTIONS)
    await make.answer(survey["id"], {"score": 4, "liked": ["Price"]}, submitted_at="2026-11-02T10:00:00Z")
    await make.answer(survey["id"], {"score": 2}, submitted_at="2026-11-03T10:00:00Z")
    before = await assert_kept_equal_rebuilt(session_factory)
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE answer_days SET answers = 40 WHERE day = '2026-11-02' AND kind = 'pick'"))
        await session.execute(text("DELETE FROM answer_days WHERE day = '2026-11-03' AND kind = 'response'"))
        await session.execute(
            text(
                "INSERT INTO answer_days (survey_id, touchpoint, day, question_id, type, kind, value, answers) "
                "VALUES (:s, '', '2026-11-04', 'score', 'rating', 'answered', '5', 1)"
            ),
            {"s": uuid.uuid4()},
        )
    async with session_factory() as session:
        assert await ANSWER_DAYS.differing_from_rows(session) == 3

    output = await run_cem_command(cem_database_url, "rebuild-answer-days")
    assert "3 were wrong" in output, output

    assert await assert_kept_equal_rebuilt(session_factory) == before
    async with session_factory() as session, session.begin():
        rows, wrong = await rebuild_answer_days(session)
        assert wrong == 0 and rows > 0
