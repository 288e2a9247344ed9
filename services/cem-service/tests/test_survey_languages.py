"""Surveys in the respondents' language: the respondent page's own words, its messages about
answers, and the default questions and labels follow the survey's `language`; the API stays English."""

from __future__ import annotations

import html
import re
import string
import uuid
from typing import Any

import httpx
import pytest

from cem.surveys.texts import LANGUAGES, TEXTS, preferred_language
from cxkit.testing import bearer


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_language_has_every_text_with_the_same_placeholders() -> None:
    assert set(TEXTS) == set(LANGUAGES)
    english = TEXTS["en"]
    for language, texts in TEXTS.items():
        assert texts.keys() == english.keys(), language
        for key, text in texts.items():
            assert text.strip(), (language, key)
            assert _placeholders(text) == _placeholders(english[key]), (language, key)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-CH,de;q=0.9,en;q=0.8", "de"),
        ("fr;q=0.4, es;q=0.9, en;q=0.5", "es"),
        ("ja, pt-BR;q=0.7", "pt"),
        ("nl;q=0, it", "it"),  # q=0: not acceptable
        ("xx-YY, *;q=0.1", "en"),
        ("", "en"),
        (None, "en"),
        ("de;q=abc, fr", "fr"),  # a malformed range is skipped
        ("it-IT-x-private;q=1.0", "it"),
    ],
)
def test_the_page_language_is_the_one_the_browser_likes_best(header: str | None, expected: str) -> None:
    assert preferred_language(header) == expected


async def test_a_german_survey_speaks_german_to_respondents(client: httpx.AsyncClient, make: Any, outbox: Any) -> None:
    survey = await make.survey("nps", language="de")
    assert survey["language"] == "de"
    score, reason = survey["questions"]
    assert score["text"] == "Wie wahrscheinlich ist es, dass Sie uns einem Freund oder Kollegen empfehlen?"
    assert (score["min_label"], score["max_label"]) == ("Überhaupt nicht wahrscheinlich", "Äußerst wahrscheinlich")
    assert reason["text"] == "Was ist der wichtigste Grund für Ihre Bewertung?"

    invitation = await make.invitation(survey["id"])
    # Whoever sends the link (an email sender reading `survey.invited`) learns the language too.
    assert [e["data"]["language"] for e in await outbox("survey.invited")] == ["de"]
    url = f"/r/{invitation['token']}"
    page = await client.get(url, headers={"Accept-Language": "en"})  # the survey's language wins
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert '<html lang="de">' in text
    assert "Antworten senden" in text and "Send my answers" not in text
    assert re.search(r"Mit <span aria-hidden=\"true\">\*</span><span class=\"visually-hidden\">als Pflichtfrage</span>", text)

    wrong = await client.post(url, data={"q_nps": "11"})
    assert wrong.status_code == 422
    wrong_text = html.unescape(wrong.text)
    assert "wählen Sie eine Zahl von 0 bis 10" in wrong_text and "Bitte prüfen Sie Ihre Antworten" in wrong_text
    assert "<title>Fehler: " in wrong_text
    missing = html.unescape((await client.post(url, data={"q_reason": "gut"})).text)
    assert "bitte beantworten Sie diese Frage" in missing

    done = await client.post(url, data={"q_nps": "9", "q_reason": "Schnelle Lieferung"})
    assert done.status_code == 200
    assert "Vielen Dank!" in html.unescape(done.text) and "Ihre Antworten wurden gespeichert." in html.unescape(done.text)
    again = await client.get(url, headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert again.status_code == 409 and "Bereits beantwortet" in html.unescape(again.text)


async def test_the_api_answers_in_english_and_a_survey_can_change_its_language(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("csat", language="fr")
    assert survey["questions"][0]["text"] == "Dans quelle mesure avez-vous été satisfait de votre expérience ?"
    r = await client.post("/v1/responses", json={"survey_id": survey["id"], "answers": {"csat": 9}})
    assert r.status_code == 422 and "pick a number from 1 to 5" in r.text  # the API's messages stay English

    changed = await client.patch(f"/v1/surveys/{survey['id']}", json={"language": "es"})
    assert (
        changed.status_code == 200 and changed.json()["language"] == "es" and changed.json()["version"] == survey["version"] + 1
    )
    # Stored questions stay as they were; the page's own words follow the new language.
    assert changed.json()["questions"] == survey["questions"]
    invitation = await make.invitation(survey["id"])
    page = html.unescape((await client.get(f"/r/{invitation['token']}")).text)
    assert '<html lang="es">' in page and "Enviar mis respuestas" in page

    for bad in ({"language": "xx"}, {"language": None}):
        r = await client.patch(f"/v1/surveys/{survey['id']}", json=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", bad
    r = await client.post("/v1/surveys", json={"name": "Klingon NPS", "kind": "nps", "language": "tlh"})
    assert r.status_code == 422
    default = await make.survey("ces")
    assert default["language"] == "en" and default["questions"][0]["text"] == "How easy was it to get what you needed today?"


async def test_pages_for_links_that_cannot_be_answered_follow_the_browser(client: httpx.AsyncClient) -> None:
    r = await client.get("/r/not-a-real-token", headers={"Accept-Language": "nl-BE,nl;q=0.9,en;q=0.5"})
    assert r.status_code == 404
    text = html.unescape(r.text)
    assert '<html lang="nl">' in text and "Link niet gevonden" in text
    r = await client.get("/r/not-a-real-token", headers={"Accept-Language": "ja"})
    assert '<html lang="en">' in r.text and "Link not found" in r.text


async def test_a_survey_editor_previews_the_page_of_a_draft_without_recording_anything(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str], outbox: Any
) -> None:
    draft = await make.survey("nps", status="draft", language="it", intro="Due minuti.")
    r = await client.get(f"/v1/surveys/{draft['id']}/preview", params={"score": "8"}, headers=bearer(keys["read"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    page = html.unescape(r.text)
    assert '<html lang="it">' in page and "Anteprima:" in page and "Due minuti." in page
    assert draft["questions"][0]["text"] in page
    assert re.search(r'value="8" checked', page)  # ?score= pre-selects, as on the real page
    assert re.search(r"<button type=\"submit\" disabled>Invia le mie risposte</button>", page)
    assert "<script" not in page
    assert await outbox() == []  # nothing recorded, nothing announced
    assert (await client.get(f"/v1/surveys/{draft['id']}/invitations")).json()["items"] == []

    active = await make.survey("csat")
    live = html.unescape((await client.get(f"/v1/surveys/{active['id']}/preview")).text)
    assert "Preview:" in live and "disabled" in live
    missing = await client.get(f"/v1/surveys/{uuid.uuid4()}/preview")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/surveys/{draft['id']}/preview", headers={"Authorization": ""})).status_code == 401
