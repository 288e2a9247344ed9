"""The respondent page: `GET /r/{token}` shows the survey as plain HTML (no JavaScript needed),
`POST /r/{token}` records the answer once and thanks the respondent."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import HTMLResponse

from cem.deps import SettingsDep
from cem.invitations.service import opt_in, opt_out
from cem.responses.service import (
    AlreadyAnswered,
    LinkCancelled,
    LinkExpired,
    OpenInvitation,
    SurveyNotOpen,
    UnknownLink,
    find_invitation,
    hold_survey,
    mark_opened,
    open_invitation,
    record_response,
)
from cem.surveys.models import Survey
from cem.surveys.questions import check_answers, whole_number
from cem.surveys.router import SurveyId
from cem.surveys.service import get_survey
from cem.surveys.texts import DEFAULT_LANGUAGE, TEXTS, preferred_language, say
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/r", tags=["respondent page"])
# Mounted under /v1 with the API: a survey editor's preview of the page.
preview_router = GatedRouter(prefix="/surveys", tags=["surveys"])

TEMPLATES = Jinja2Templates(directory=FilePath(__file__).parent / "templates")
# The templates are written for block tags that leave no blank lines or indentation behind;
# set before the first template loads (Jinja2Templates takes no environment options).
TEMPLATES.env.trim_blocks = True
TEMPLATES.env.lstrip_blocks = True
# The token is the only secret: never leak it through referrers, caches or frames.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
}
FORM_LIMITS = {"max_files": 0, "max_fields": 500, "max_part_size": 64 * 1024}
MAX_BODY = 512 * 1024

# A link that cannot be answered: the status and the page's text (its `_title` and `_text` keys).
PAGES: dict[type[Exception], tuple[int, str]] = {
    UnknownLink: (404, "unknown"),
    LinkExpired: (410, "expired"),
    AlreadyAnswered: (409, "answered"),
    LinkCancelled: (410, "cancelled"),
}

HTML_EXAMPLE = '<!doctype html>\n<html lang="en">\n<head><meta name="viewport" content="width=device-width, initial-scale=1">'


def _page(request: Request, template: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The page in `lang` (English for one the texts do not have): `t` holds the page's own words
    (cem.surveys.texts)."""
    lang = lang if lang in TEXTS else DEFAULT_LANGUAGE
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"lang": lang, "t": TEXTS[lang], **context},
        status_code=status,
        headers=PAGE_HEADERS,
    )


def _problem_page(request: Request, exc: Exception) -> HTMLResponse:
    """Why the link cannot be answered, in the language the respondent's browser asks for."""
    if isinstance(exc, SurveyNotOpen):
        status, page = (410, "closed") if exc.extra.get("reason") == "survey_closed" else (409, "not_open")
    else:
        status, page = PAGES[type(exc)]
    lang = preferred_language(request.headers.get("accept-language"))
    return _message(request, lang, f"{page}_title", f"{page}_text", status)


def _message(request: Request, lang: str, title_key: str, text_key: str, status: int = 200) -> HTMLResponse:
    """The message page: a title and a text, both from the page's own words (cem.surveys.texts)."""
    return _page(request, "message.html", lang, status, title=say(lang, title_key), message=say(lang, text_key))


def _survey_page(
    request: Request,
    survey: Survey,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    *,
    preview: bool = False,
) -> HTMLResponse:
    questions = survey.questions
    return _page(
        request,
        "survey.html",
        survey.language,
        status,
        survey=survey,
        preview=preview,
        questions=questions,
        question_ids={q["id"] for q in questions},
        has_required=any(q["required"] for q in questions),
        values=values,
        errors=errors,
        action=request.url.path,
        unsubscribe=None if preview else unsubscribe_path(request),
    )


def unsubscribe_path(request: Request) -> str:
    """Where the page's link to stop surveys goes: `/r/{token}/unsubscribe`."""
    return request.url.path.rstrip("/") + "/unsubscribe"


async def _open(request: Request, session: AsyncSession, token: str) -> OpenInvitation | HTMLResponse:
    try:
        return await open_invitation(session, token)
    except (UnknownLink, LinkExpired, AlreadyAnswered, LinkCancelled, SurveyNotOpen) as exc:
        return _problem_page(request, exc)


async def _find(request: Request, session: AsyncSession, token: str) -> OpenInvitation | HTMLResponse:
    """The invitation behind any link of it, whatever its state; the 404 page for an unknown one."""
    try:
        return await find_invitation(session, token)
    except UnknownLink as exc:
        return _problem_page(request, exc)


PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "The page."},
    404: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "No invitation has this token."},
    409: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "Already answered (or not open yet)."},
    410: {
        "content": {"text/html": {"example": HTML_EXAMPLE}},
        "description": "The link expired or was withdrawn, or the survey closed.",
    },
}
Token = Annotated[
    str, Path(description="The invitation's token, from its link.", examples=["q8Yb3k0n2ZfJx4mQp7Rv1sTu9wXy5AaBcDeFgHiJkLm"])
]


@router.get(
    "/{token}",
    response_class=HTMLResponse,
    summary="Respondent page",
    description="The survey behind an invitation link as an accessible, mobile-friendly HTML form that works "
    "without JavaScript. `?score=` (e.g. from a 0-10 row of links in an email) pre-selects the score. Unknown "
    "links are a 404 page, expired or withdrawn (cancelled) links and closed surveys a 410 page, answered links a "
    "409 page. Needs no key: the token is the secret.",
    responses=PAGE_RESPONSES,
)
async def show_survey(token: Token, request: Request, session: SessionDep) -> HTMLResponse:
    target = await _open(request, session, token)
    if isinstance(target, HTMLResponse):
        return target
    values = _preset(request, target.survey)
    await mark_opened(session, target.invitation)
    await session.commit()
    return _survey_page(request, target.survey, values, {})


def _preset(request: Request, survey: Survey) -> dict[str, Any]:
    """The score `?score=` pre-selects (from a row of links in an email), when it is a whole
    number on the scale; anything else pre-selects nothing."""
    metric_question = next((q for q in survey.questions if q.get("metric")), None)
    if metric_question is None:
        return {}
    score = whole_number(request.query_params.get("score", ""))
    if score is not None and metric_question["scale_min"] <= score <= metric_question["scale_max"]:
        return {metric_question["id"]: str(score)}
    return {}


@preview_router.get(
    "/{survey_id}/preview",
    response_class=HTMLResponse,
    summary="Preview a survey's respondent page",
    description="The respondent page of the survey as respondents will see it (its questions, intro, language and "
    "`?score=` pre-selection), with a note that it is a preview and a send button that does nothing, for a survey "
    "editor to show (e.g. in an iframe's `srcdoc`). Any status, drafts included; nothing is recorded and no "
    "invitation is needed. Unknown survey: 404 (problem+json). Needs `read`.",
    responses={
        200: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "The page, as a preview."},
        **problem_responses(401, 403, 404, 422),
    },
)
async def preview_survey(survey_id: SurveyId, request: Request, session: SessionDep, _: Reader) -> HTMLResponse:
    survey = await get_survey(session, survey_id)
    return _survey_page(request, survey, _preset(request, survey), {}, preview=True)


@router.post(
    "/{token}",
    response_class=HTMLResponse,
    summary="Send answers from the respondent page",
    description="Takes the page's form (`application/x-www-form-urlencoded`, fields `q_<question id>`), records "
    "the answer once and shows the thank-you page. A line break in an answer (CRLF as browsers send it, or CR) "
    "counts and is stored as one LF. Invalid answers re-show the form with a message per question (422); a body "
    "that cannot be read as the form, or is too large, re-shows it with one message (400); the same error pages "
    "as `GET` otherwise. Needs no key.",
    responses={
        **PAGE_RESPONSES,
        400: {
            "content": {"text/html": {"example": HTML_EXAMPLE}},
            "description": "The form again, with a message: the body could not be read (malformed, a file in it, more "
            f"than {FORM_LIMITS['max_fields']} fields) or is larger than {MAX_BODY // 1024} KiB.",
        },
        422: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "The form again, with errors."},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                    "example": {"q_nps": "9", "q_reason": "Fast delivery"},
                }
            }
        },
    },
)
async def submit_survey(token: Token, request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    target = await _open(request, session, token)
    if isinstance(target, HTMLResponse):
        return target
    form = await _read_form(request)
    if form is None:
        return _survey_page(request, target.survey, {}, {"form": say(target.survey.language, "form_unreadable")}, 400)
    try:
        # The form is read as the survey is now, a change to it made meanwhile included.
        await hold_survey(session, target.survey)
    except SurveyNotOpen as exc:
        await session.rollback()
        return _problem_page(request, exc)
    questions = target.survey.questions
    raw: dict[str, Any] = {}
    for q in questions:
        name = f"q_{q['id']}"
        raw[q["id"]] = form.getlist(name) if q["type"] == "multi_choice" else form.get(name)
    checked = check_answers(questions, raw, from_form=True, language=target.survey.language)
    if not checked.ok:
        values = {k: v for k, v in raw.items() if isinstance(v, str | list)}
        page = _survey_page(request, target.survey, values, checked.errors, 422)
        await session.rollback()  # lets the survey go (after the page is made: it expires what was read)
        return page
    invitation = target.invitation
    try:
        await record_response(
            session,
            target.survey,
            checked,
            invitation=invitation,
            customer_id=invitation.customer_id,
            email=invitation.email,
            touchpoint=invitation.touchpoint,
            source="web",
            default_sla=settings.followup_sla,
        )
        await session.commit()
    except (AlreadyAnswered, LinkCancelled, SurveyNotOpen) as exc:  # SurveyNotOpen: its last answer came first
        await session.rollback()
        return _problem_page(request, exc)
    language = target.survey.language
    return _page(
        request,
        "thanks.html",
        language,
        200,
        message=target.survey.thank_you or say(language, "thanks_default"),
        unsubscribe=unsubscribe_path(request),
    )


UNSUBSCRIBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "The page."},
    404: {"content": {"text/html": {"example": HTML_EXAMPLE}}, "description": "No invitation has this token."},
}


@router.get(
    "/{token}/unsubscribe",
    response_class=HTMLResponse,
    summary="Unsubscribe page",
    description="Asks the recipient to confirm that they want no more surveys, with a button that sends "
    "`POST /r/{token}/unsubscribe`. Nothing changes on `GET` (mail scanners open links). Any link of the "
    "invitation works, answered, expired, withdrawn and closed ones too; unknown links are a 404 page. In the "
    "survey's language. Needs no key: the token is the secret.",
    responses=UNSUBSCRIBE_RESPONSES,
)
async def show_unsubscribe(token: Token, request: Request, session: SessionDep) -> HTMLResponse:
    target = await _find(request, session, token)
    if isinstance(target, HTMLResponse):
        return target
    return _page(request, "unsubscribe.html", target.survey.language, action=request.url.path)


@router.post(
    "/{token}/unsubscribe",
    response_class=HTMLResponse,
    summary="Unsubscribe from surveys",
    description="The recipient of the invitation asks for no more surveys: neither their address nor their "
    "customer is invited again by any survey (a trigger's or a recurrence's invitation is suppressed as "
    "`opted_out`, a request for one is a 409), their open invitations are withdrawn (`survey.invitation_cancelled`, "
    "reason `opted_out`; scheduled ones are never sent), and `survey.opted_out` announces it once (the CRM marks "
    "the customer `survey_opt_out`). Asking again changes nothing. The body is ignored, so this is also the "
    "RFC 8058 one-click target of a `List-Unsubscribe` header (`survey.invited` carries it as `unsubscribe_url`). "
    "Answers with a page that confirms it and offers to undo it (`POST /r/{token}/resubscribe`); unknown links are a "
    "404 page. Needs no key.",
    responses=UNSUBSCRIBE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                    "example": {"List-Unsubscribe": "One-Click"},
                }
            },
        },
    },
)
async def unsubscribe(token: Token, request: Request, session: SessionDep) -> HTMLResponse:
    target = await _find(request, session, token)
    if isinstance(target, HTMLResponse):
        return target
    await opt_out(session, target.invitation, target.survey)
    await session.commit()
    resubscribe = request.url.path.removesuffix("/unsubscribe") + "/resubscribe"
    return _page(request, "unsubscribed.html", target.survey.language, resubscribe=resubscribe)


@router.post(
    "/{token}/resubscribe",
    response_class=HTMLResponse,
    summary="Subscribe to surveys again",
    description="The recipient who opted out (`POST /r/{token}/unsubscribe`, whose page offers this as a button) asks "
    "for surveys again: their address's and their customer's opt-outs are forgotten, the customer's `survey_opt_out` "
    "is cleared, and `survey.opted_in` announces it (the CRM clears its flag too). Invitations withdrawn when they "
    "opted out stay withdrawn. Only the recipient can undo their opt-out: clearing `survey_opt_out` in the CRM does "
    "not. A recipient who had not opted out here gets a page saying nothing changed (a `survey_opt_out` the CRM set "
    "stays). Any link of the invitation works; unknown links are a 404 page. Needs no key.",
    responses=UNSUBSCRIBE_RESPONSES,
)
async def resubscribe(token: Token, request: Request, session: SessionDep) -> HTMLResponse:
    target = await _find(request, session, token)
    if isinstance(target, HTMLResponse):
        return target
    changed = await opt_in(session, target.invitation, target.survey)
    await session.commit()
    keys = ("resubscribed_title", "resubscribed_text") if changed else ("resubscribe_prompt", "resubscribe_none_text")
    return _message(request, target.survey.language, *keys)


async def _read_form(request: Request) -> FormData | None:
    """The posted form, or None when it is too large or cannot be parsed (a Content-Length that
    is not ASCII digits included: `int()` refuses "²", and more than 4300 digits)."""
    length = request.headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 9 and int(length) <= MAX_BODY):
        return None
    try:
        return await request.form(**FORM_LIMITS)
    except (MultiPartException, HTTPException, ValueError, UnicodeDecodeError):
        return None
