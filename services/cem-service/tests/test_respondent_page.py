"""The respondent page over HTTP: plain, accessible HTML; one answer per link; clear pages for bad links."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from typing import Any

import httpx
from sqlalchemy import select, update

from cem.invitations.models import Invitation
from cem.responses.models import Score, SurveyResponse


class FormAudit(HTMLParser):
    """Collects what an accessibility check needs: inputs, labels, the viewport, the language."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.meta: list[dict[str, str | None]] = []
        self.html_lang: str | None = None
        self.scripts = 0
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.html_lang = a.get("lang")
        elif tag in ("input", "textarea", "select") and a.get("type") != "hidden":
            self.inputs.append(a)
        elif tag == "label" and a.get("for"):
            self.label_for.add(a["for"] or "")
        elif tag == "meta":
            self.meta.append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag == "form":
            self.forms.append(a)


def audit(html: str) -> FormAudit:
    parser = FormAudit()
    parser.feed(html)
    return parser


async def _survey_with_all_question_types(make: Any) -> dict[str, Any]:
    return await make.survey(
        "nps",
        intro="Two minutes, promise.",
        thank_you="Thanks a lot, Ada!",
        questions=[
            {"id": "nps", "type": "rating", "text": "How likely are you to recommend us?"},
            {"id": "reason", "type": "text", "text": "Why?", "max_length": 50},
            {"id": "channel", "type": "single_choice", "text": "How did you order?", "options": ["Web", "Phone"]},
            {"id": "liked", "type": "multi_choice", "text": "What did you like?", "options": ["Price", "Speed", "Staff"]},
        ],
    )


async def test_page_is_plain_accessible_html_with_every_question(client: httpx.AsyncClient, make: Any) -> None:
    survey = await _survey_with_all_question_types(make)
    invitation = await make.invitation(survey["id"])
    r = await client.get(f"/r/{invitation['token']}", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    page = audit(r.text)
    assert page.html_lang == "en" and page.scripts == 0
    assert any(m.get("name") == "viewport" and "width=device-width" in (m.get("content") or "") for m in page.meta)
    assert page.forms == [{"method": "post", "action": f"/r/{invitation['token']}", "accept-charset": "utf-8"}]
    assert all(i.get("id") in page.label_for for i in page.inputs), "every input has a <label for=...>"
    radios = [i for i in page.inputs if i.get("name") == "q_nps"]
    assert [i["value"] for i in radios] == [str(n) for n in range(11)] and all(i["type"] == "radio" for i in radios)
    assert "Two minutes, promise." in r.text and "How did you order?" in r.text and "Not at all likely" in r.text
    assert "<fieldset" in r.text and "<legend>" in r.text


async def test_opening_the_page_marks_the_invitation_opened(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("csat")
    invitation = await make.invitation(survey["id"])
    assert invitation["status"] == "sent"
    await client.get(f"/r/{invitation['token']}")
    assert (await client.get(f"/v1/invitations/{invitation['id']}")).json()["status"] == "opened"


async def test_score_in_the_link_preselects_the_rating(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"])
    html = (await client.get(f"/r/{invitation['token']}", params={"score": "8"})).text
    checked = re.findall(r'value="(\d+)"\s+checked', html)
    assert checked == ["8"]
    html = (await client.get(f"/r/{invitation['token']}", params={"score": "99"})).text
    assert re.findall(r'value="(\d+)"\s+checked', html) == []


async def test_a_score_in_the_link_that_is_not_a_whole_number_on_the_scale_is_ignored(
    client: httpx.AsyncClient, make: Any
) -> None:
    """`str.isdigit()` holds for "²" and `int()` refuses more than 4300 digits: both were a 500,
    on the page (after the invitation was marked opened) and on the preview."""
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"])
    for url in (f"/r/{invitation['token']}", f"/v1/surveys/{survey['id']}/preview"):
        for score in ("²", "1²", "٣", "-1", "--5", "8.0", "1" * 4301, "0" * 4300 + "8"):
            r = await client.get(url, params={"score": score})
            assert r.status_code == 200, (url, score[:10], r.status_code)
            assert re.findall(r'value="(\d+)"\s+checked', r.text) == [], (url, score[:10])
        r = await client.get(url, params={"score": "7"})
        assert re.findall(r'value="(\d+)"\s+checked', r.text) == ["7"], url


async def test_submit_records_once_and_thanks(client: httpx.AsyncClient, make: Any, session_factory: Any, outbox: Any) -> None:
    survey = await _survey_with_all_question_types(make)
    invitation = await make.invitation(survey["id"])
    form = {"q_nps": "9", "q_reason": "  Quick and friendly  ", "q_channel": "Web", "q_liked": ["Staff", "Price"]}
    r = await client.post(f"/r/{invitation['token']}", data=form, headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    assert "Thank you!" in r.text and "Thanks a lot, Ada!" in r.text
    async with session_factory() as session:
        response = (await session.scalars(select(SurveyResponse))).one()
        score = (await session.scalars(select(Score))).one()
    values = {a["question_id"]: a["value"] for a in response.answers}
    assert values == {"nps": 9, "reason": "Quick and friendly", "channel": "Web", "liked": ["Price", "Staff"]}
    assert response.invitation_id is not None and str(response.invitation_id) == invitation["id"]
    assert response.source == "web"
    assert (score.score, score.scale_min, score.scale_max, score.category) == (9, 0, 10, "promoter")
    events = await outbox("survey.response.submitted")
    assert len(events) == 1 and events[0]["data"]["score"] == 9 and events[0]["data"]["category"] == "promoter"
    assert events[0]["data"]["comment"] == "Quick and friendly" and events[0]["subject"] == invitation["customer_id"]

    again = await client.post(f"/r/{invitation['token']}", data=form)
    assert again.status_code == 409 and "already answered" in again.text
    reopened = await client.get(f"/r/{invitation['token']}")
    assert reopened.status_code == 409 and "Already answered" in reopened.text
    assert (await client.get(f"/v1/invitations/{invitation['id']}")).json()["status"] == "answered"


async def test_invalid_answers_rerender_the_form_with_messages(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    survey = await _survey_with_all_question_types(make)
    invitation = await make.invitation(survey["id"])
    url = f"/r/{invitation['token']}"
    cases = [
        ({"q_reason": "fine"}, "please answer this question"),  # the required score is missing
        ({"q_nps": "11"}, "pick a number from 0 to 10"),
        ({"q_nps": "nine"}, "pick a whole number on the scale"),
        # str.isdigit() holds for these, and int() refused them: a 500.
        ({"q_nps": "²"}, "pick a whole number on the scale"),
        ({"q_nps": "--5"}, "pick a whole number on the scale"),
        ({"q_nps": "-²"}, "pick a whole number on the scale"),
        ({"q_nps": "1²"}, "pick a whole number on the scale"),
        ({"q_nps": "٣"}, "pick a whole number on the scale"),  # an Arabic-Indic 3: digits are ASCII
        ({"q_nps": "-5"}, "pick a number from 0 to 10"),
        ({"q_nps": "5", "q_reason": "x" * 51}, "under 50 characters"),
        ({"q_nps": "5", "q_channel": "Carrier pigeon"}, "pick one of the options"),
        ({"q_nps": "5", "q_liked": ["Price", "Nope"]}, "pick among the options"),
        ({"q_nps": "5", "q_reason": "a\x00b"}, "not allowed"),
    ]
    for form, message in cases:
        r = await client.post(url, data=form)
        assert r.status_code == 422, (form, r.status_code)
        assert message in r.text and 'role="alert"' in r.text and 'aria-invalid="true"' in r.text, form
    r = await client.post(url, data={"q_nps": "3", "q_reason": "kept", "q_liked": ["Speed"]})
    assert r.status_code == 200
    r = await client.post(url, content=b"\xff\xfe garbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 409  # answered already; the garbage never reached a parser that could fail
    async with session_factory() as session:
        assert len((await session.scalars(select(SurveyResponse))).all()) == 1


async def test_line_breaks_count_once_as_the_browser_counts_them(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    """A browser counts a line break as one character against `maxlength` but posts it as CRLF:
    an answer at the limit was refused ("it has 51"), and stored answers kept the CR."""
    survey = await _survey_with_all_question_types(make)
    invitation = await make.invitation(survey["id"])
    text = "x" * 25 + "\r\n" + "x" * 24
    r = await client.post(f"/r/{invitation['token']}", data={"q_nps": "9", "q_reason": text})
    assert r.status_code == 200, r.text
    lone_cr = await make.invitation(survey["id"])
    r = await client.post(f"/r/{lone_cr['token']}", data={"q_nps": "9", "q_reason": "one\rtwo\r\nthree"})
    assert r.status_code == 200, r.text
    async with session_factory() as session:
        responses = (await session.scalars(select(SurveyResponse).order_by(SurveyResponse.submitted_at))).all()
    stored = [{a["question_id"]: a["value"] for a in response.answers}["reason"] for response in responses]
    assert stored == ["x" * 25 + "\n" + "x" * 24, "one\ntwo\nthree"]


async def test_an_option_with_a_line_break_matches_what_the_browser_posts_back(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    """The page shows the option with a LF; the browser posts it back with CRLF: still that option."""
    options = ["Shop\nin town", "Web"]
    survey = await make.survey(
        "custom",
        questions=[
            {"id": "where", "type": "single_choice", "text": "Where?", "options": options},
            {"id": "also", "type": "multi_choice", "text": "Also?", "options": options},
        ],
    )
    invitation = await make.invitation(survey["id"])
    page = (await client.get(f"/r/{invitation['token']}")).text
    assert 'value="Shop\nin town"' in page
    form = {"q_where": "Shop\r\nin town", "q_also": ["Web", "Shop\r\nin town"]}
    r = await client.post(f"/r/{invitation['token']}", data=form)
    assert r.status_code == 200, r.text
    async with session_factory() as session:
        response = (await session.scalars(select(SurveyResponse))).one()
    assert {a["question_id"]: a["value"] for a in response.answers} == {"where": "Shop\nin town", "also": options}


async def test_unparseable_form_is_not_a_server_error(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"])
    url = f"/r/{invitation['token']}"
    r = await client.post(url, content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code in (400, 422) and "<form" in r.text
    files = {"q_nps": ("a.txt", b"9", "text/plain")}
    r = await client.post(url, files=files)
    assert r.status_code in (400, 422) and "<form" in r.text
    r = await client.post(url, content=b"\x00\x01", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "please answer this question" in r.text
    form = {"content-type": "application/x-www-form-urlencoded"}
    for length in (b"1" * 4301, "²".encode()):  # int() refuses more than 4300 digits, and "²"
        r = await client.post(url, content=b"q_nps=9", headers={**form, "content-length": length})
        assert r.status_code == 400 and "<form" in r.text, (length[:10], r.status_code)


async def test_bad_links_get_clear_pages_with_the_right_status(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    r = await client.get("/r/not-a-real-token")
    assert r.status_code == 404 and "Link not found" in r.text and r.headers["content-type"].startswith("text/html")
    assert (await client.get("/r/" + "x" * 5000)).status_code == 404
    assert (await client.post("/r/not-a-real-token", data={"q_nps": "9"})).status_code == 404

    survey = await make.survey("nps")
    expired = await make.invitation(survey["id"])
    async with session_factory() as session:
        await session.execute(
            update(Invitation)
            .where(Invitation.id == expired["id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
        await session.commit()
    r = await client.get(f"/r/{expired['token']}")
    assert r.status_code == 410 and "expired" in r.text
    assert (await client.post(f"/r/{expired['token']}", data={"q_nps": "9"})).status_code == 410

    open_one = await make.invitation(survey["id"])
    assert (await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "closed"})).status_code == 200
    r = await client.post(f"/r/{open_one['token']}", data={"q_nps": "9"})
    assert r.status_code == 410 and "closed" in r.text


async def test_pages_keep_no_blank_lines_or_tags_from_their_templates(client: httpx.AsyncClient, make: Any) -> None:
    # The templates rely on trim_blocks/lstrip_blocks: block tags leave no empty lines behind.
    survey = await _survey_with_all_question_types(make)
    invitation = await make.invitation(survey["id"])
    for r in (await client.get(f"/r/{invitation['token']}"), await client.get("/r/not-a-real-token")):
        assert r.text.startswith("<!doctype html>") and "\n\n" not in r.text and "{%" not in r.text
        assert "\n  {% " not in r.text and not any(line.isspace() for line in r.text.splitlines())


async def test_attributes_are_kept_apart_in_every_state_of_the_form(client: httpx.AsyncClient, make: Any) -> None:
    """With every optional attribute on (required, described, invalid, checked), no two run
    together (`"err-x"aria-invalid`): an HTML parse error that checkers and some readers trip on."""
    survey = await _survey_with_all_question_types(make)
    for question in survey["questions"]:
        question["help_text"] = "A hint."
        question["required"] = question["type"] != "multi_choice" or question["required"]
    survey = (
        await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "draft", "questions": survey["questions"]})
    ).json()
    await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})
    invitation = await make.invitation(survey["id"])
    url = f"/r/{invitation['token']}"
    form = {"q_nps": "11", "q_reason": "x" * 51, "q_channel": "Web", "q_liked": ["Price"]}
    for page in ((await client.get(url, params={"score": "7"})).text, (await client.post(url, data=form)).text):
        assert re.search(r'="[^"]*"[^\s>/]', page) is None, re.search(r'.{0,60}="[^"]*"[^\s>/].{0,20}', page)
        assert 'aria-invalid="true"' in page or "checked" in page
