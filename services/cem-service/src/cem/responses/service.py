"""Recording answers, once per invitation, from the respondent page and from API clients."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.models import email_key
from cem.customers.repository import CustomerProfileRepository
from cem.db import SOURCE, OutboxMessage
from cem.fields import CLOCK_SKEW
from cem.followups.service import request_followup
from cem.followups.sla import SlaBand
from cem.invitations.models import Invitation
from cem.invitations.repository import InvitationRepository
from cem.invitations.service import hash_token, resolve_recipient
from cem.responses import repository
from cem.responses.models import Score, SurveyResponse
from cem.responses.repository import ANSWER_DAYS, NEWEST_FIRST, SCORE_DAYS, ResponseFilters, ResponseRepository
from cem.responses.schemas import AnswerRead, ResponseCreate, ResponseRead, ScoreRead
from cem.surveys.models import Survey
from cem.surveys.questions import CheckedAnswers, MetricAnswer, check_answers, comment_of, needs_followup, without_free_text
from cem.surveys.repository import SurveyRepository
from cem.surveys.service import get_survey
from cem.touchpoints.repository import TouchpointRepository
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.events.payloads import SurveyResponseSubmitted
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, Unprocessable, field_problem
from cxkit.kafka.outbox import add_event
from cxkit.pg_pool import CompiledQuery


class UnknownLink(Unprocessable):
    """No invitation has this token."""


class LinkExpired(Conflict):
    """The invitation was not answered before it expired."""


class AlreadyAnswered(Conflict):
    """The invitation has its answer."""


class LinkCancelled(Conflict):
    """The invitation was cancelled (withdrawn by request, or the customer opted out or was erased)."""


class SurveyNotOpen(Conflict):
    """The survey is a draft or closed."""


@dataclass
class OpenInvitation:
    invitation: Invitation
    survey: Survey


async def find_invitation(session: AsyncSession, token: str) -> OpenInvitation:
    """The invitation behind a link and its survey, whatever their state (`UnknownLink` if none)."""
    invitation = await InvitationRepository(session).get_by_token_hash(hash_token(token)) if len(token) <= 200 else None
    if invitation is None:
        raise UnknownLink("no invitation has this token", reason="unknown_link")
    survey = await SurveyRepository(session).get(invitation.survey_id)
    assert survey is not None
    return OpenInvitation(invitation, survey)


async def open_invitation(session: AsyncSession, token: str, now: dt.datetime | None = None) -> OpenInvitation:
    """The invitation behind a link, if it can still be answered; otherwise the reason why not."""
    found = await find_invitation(session, token)
    invitation, survey = found.invitation, found.survey
    if invitation.answered_at is not None:
        raise AlreadyAnswered("this invitation was already answered", reason="already_answered")
    if invitation.cancelled_at is not None:
        raise LinkCancelled("this invitation was cancelled", reason="cancelled")
    now = now or utcnow()
    if invitation.expires_at <= now:
        raise LinkExpired(f"this invitation expired at {invitation.expires_at.isoformat()}", reason="expired")
    ensure_takes_answers(survey, now)
    return found


_HELD = "cem.responses.held_survey"


async def hold_survey(session: AsyncSession, survey: Survey, now: dt.datetime | None = None) -> None:
    """Before an answer is checked against the survey's questions: hold the survey's row until the
    transaction ends (`SurveyRepository.hold`), read it again from the lock, and refuse the answer
    (409, `SurveyNotOpen`) unless the survey takes answers now. A PATCH that was changing it
    (back to draft, other questions, a limit) is over by then, and none starts until the answer
    is stored; 404 if the survey was deleted meanwhile."""
    held = await SurveyRepository(session).hold(survey.id)
    if held is None:
        raise NotFound(f"survey {survey.id} does not exist")
    assert held is survey  # read into the same object (populate_existing)
    ensure_takes_answers(survey, now or utcnow())
    session.info[_HELD] = (survey.id, session.sync_session.get_transaction())


def _holds(session: AsyncSession, survey: Survey) -> bool:
    return session.info.get(_HELD) == (survey.id, session.sync_session.get_transaction())


def ensure_takes_answers(survey: Survey, now: dt.datetime) -> None:
    """409 (`SurveyNotOpen`) unless the survey is active and before its `closes_at`."""
    reason = survey.closed_reason(now)
    if reason is not None:
        state = reason.removeprefix("survey_")
        raise SurveyNotOpen(f"the survey is {state} and takes no answers", reason=reason)


async def mark_opened(session: AsyncSession, invitation: Invitation) -> None:
    if invitation.opened_at is None:
        await InvitationRepository(session).mark_opened(invitation.id, utcnow())


async def record_response(
    session: AsyncSession,
    survey: Survey,
    checked: CheckedAnswers,
    *,
    invitation: Invitation | None,
    customer_id: uuid.UUID | None,
    email: str | None,
    touchpoint: str | None,
    source: str,
    default_sla: Mapping[str, Sequence[SlaBand]],
    submitted_at: dt.datetime | None = None,
) -> tuple[SurveyResponse, bool]:
    """Store a checked answer with its score, announce it, and ask for a follow-up when a known
    customer answered as a detractor. Returns the response and whether a follow-up was requested.
    The caller holds the survey (`hold_survey`) and checked the answers against its questions as
    read then."""
    assert _holds(session, survey), "hold_survey first, then check the answers"
    now = utcnow()
    taken = await _count_towards_the_limit(session, survey, now)
    if invitation is not None and not await InvitationRepository(session).claim_for_answer(invitation.id, now):
        await session.refresh(invitation, ["answered_at", "cancelled_at"])
        if invitation.answered_at is None and invitation.cancelled_at is not None:
            raise LinkCancelled("this invitation was cancelled", reason="cancelled")
        raise AlreadyAnswered("this invitation was already answered", reason="already_answered")
    erased = False
    if customer_id is not None:
        profile = await CustomerProfileRepository(session).get(customer_id)
        erased = profile is not None and profile.erased_at is not None
    if erased:
        # An erased customer's answer still counts, anonymously: without free text or address.
        checked = CheckedAnswers(answers=without_free_text(checked.answers), metric=checked.metric, comment=None)
        email = None
    response = SurveyResponse(
        id=new_id(),
        survey_id=survey.id,
        invitation_id=invitation.id if invitation else None,
        customer_id=customer_id,
        email=email,
        email_lower=email_key(email) if email else None,
        touchpoint=touchpoint,
        source=source,
        answers=checked.answers,
        submitted_at=submitted_at or now,
        recorded_at=now,
    )
    repo = ResponseRepository(session)
    repo.add(response)
    try:
        await repo.flush()
    except IntegrityError:
        raise AlreadyAnswered("this invitation was already answered", reason="already_answered") from None
    answer = checked.metric
    if answer is not None:
        theme_stems, theme_words = await repo.comment_themes(survey.language, checked.comment)
        await repo.add_score(
            {
                "response_id": response.id,
                "survey_id": survey.id,
                "metric": answer.metric,
                "touchpoint": touchpoint,
                "customer_id": customer_id,
                "score": answer.score,
                "scale_min": answer.scale_min,
                "scale_max": answer.scale_max,
                "category": answer.category,
                "submitted_at": response.submitted_at,
                "submitted_on": response.submitted_at.astimezone(dt.UTC).date(),
                "theme_stems": theme_stems,
                "theme_words": theme_words,
            }
        )
    _announce(session, survey.kind, response, checked.metric, checked.comment)
    if survey.max_responses is not None and taken + 1 >= survey.max_responses:
        # The answer that reaches the limit closes the survey, in its own transaction.
        survey.status, survey.closed_at, survey.updated_at = "closed", now, now
        survey.version += 1
        await repo.flush()
    followup = False
    if (
        answer is not None
        and answer.score is not None
        and customer_id is not None
        and not erased
        and needs_followup(answer.metric, answer.score)
    ):
        await request_followup(session, survey, response, answer, checked.comment, default_sla)
        followup = True
    return response, followup


async def _count_towards_the_limit(session: AsyncSession, survey: Survey, now: dt.datetime) -> int:
    """For a survey with `max_responses` (as held: no PATCH changes it until the answer is in):
    hold its row alone (so answers count one at a time), and refuse an answer past the limit;
    returns the answers it has (0 without a limit)."""
    if survey.max_responses is None:
        return 0
    surveys = SurveyRepository(session)
    await surveys.hold(survey.id, alone=True)
    ensure_takes_answers(survey, now)  # closed meanwhile by the answer that reached the limit
    taken = await surveys.responses_of(survey.id)
    if taken >= survey.max_responses:
        raise SurveyNotOpen(f"the survey has its {survey.max_responses} answers and takes no more", reason="survey_closed")
    return taken


def _announce(
    session: AsyncSession, survey_kind: str, response: SurveyResponse, answer: MetricAnswer | Score | None, comment: str | None
) -> None:
    """`survey.response.submitted`, keyed by the response's customer (none when it was given under
    an address no customer was known by)."""
    add_event(
        session,
        OutboxMessage,
        "survey.response.submitted",
        source=SOURCE,
        subject=response.customer_id,
        data=SurveyResponseSubmitted(
            response_id=response.id,
            survey_id=response.survey_id,
            survey_kind=survey_kind,
            invitation_id=response.invitation_id,
            customer_id=response.customer_id,
            touchpoint=response.touchpoint,
            score=answer.score if answer else None,
            scale_min=answer.scale_min if answer else None,
            scale_max=answer.scale_max if answer else None,
            category=answer.category if answer else None,
            comment=comment,
            submitted_at=response.submitted_at,
            metric=answer.metric if answer else None,
        ),
    )


@dataclass(frozen=True, slots=True)
class LateFollowups:
    """A detractor answer given under an address no customer was known by gets its follow-up
    when the CRM announces the customer, if it was given within `window` before (the CRM may
    announce a new customer after their first answer reached this service); its SLA runs from
    then. An older one gets none: nobody was asked at the time, and a call about it comes late."""

    window: dt.timedelta
    default_sla: Mapping[str, Sequence[SlaBand]]


class ResponseData(ResponseRepository):
    """The responses' part of a customer's data (`cem.customer_data`): the repository's merge and
    erasure, and answers given under an address no customer was known by, which go to the customer
    the CRM announces with that address. Each is announced again then, as
    `survey.response.submitted` keyed by its customer (the same `response_id`), so the CRM's
    view of the customer shows it too, and a recent detractor's is followed up (`LateFollowups`;
    none without it, as in a replay)."""

    def __init__(self, session: AsyncSession, late_followups: LateFollowups | None = None) -> None:
        super().__init__(session)
        self.late_followups = late_followups

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        linked = await self.link_by_address(emails_lower)
        surveys = SurveyRepository(self.session)
        now = utcnow()
        for response, score in linked:
            survey = await surveys.get(response.survey_id)
            assert survey is not None  # responses keep their survey (RESTRICT)
            comment = comment_of(response.answers)
            _announce(self.session, survey.kind, response, score, comment)
            late = self.late_followups
            if (
                late is not None
                and score is not None
                and score.score is not None
                and needs_followup(score.metric, score.score)
                and response.submitted_at >= now - late.window
            ):
                await request_followup(self.session, survey, response, score, comment, late.default_sla, raised_at=now)


def answers_problem(checked: CheckedAnswers) -> Unprocessable:
    errors = [{"loc": ["body", "answers", qid], "msg": msg, "type": "answer"} for qid, msg in checked.errors.items()]
    detail = "; ".join(f"{qid}: {msg}" for qid, msg in checked.errors.items())
    return Unprocessable(detail, errors=errors)


async def submit_from_api(
    session: AsyncSession, data: ResponseCreate, default_sla: Mapping[str, Sequence[SlaBand]]
) -> ResponseRead:
    now = utcnow()
    if data.submitted_at is not None and data.submitted_at > now + CLOCK_SKEW:
        raise field_problem(["body", "submitted_at"], "submitted_at is in the future")
    if data.token is not None:
        try:
            target = await open_invitation(session, data.token, now)
        except UnknownLink as exc:
            raise field_problem(["body", "token"], str(exc.detail)) from None
        survey, invitation = target.survey, target.invitation
        customer_id, email, touchpoint = invitation.customer_id, invitation.email, invitation.touchpoint
    else:
        assert data.survey_id is not None
        try:
            survey = await get_survey(session, data.survey_id)
        except NotFound as exc:
            raise field_problem(["body", "survey_id"], str(exc.detail)) from None
        ensure_takes_answers(survey, now)
        profile, email = await resolve_recipient(session, data.customer_id, str(data.email) if data.email else None)
        customer_id = profile.id if profile else None
        touchpoint = data.touchpoint or survey.touchpoint
        if data.touchpoint and not await TouchpointRepository(session).existing_keys([data.touchpoint]):
            raise field_problem(["body", "touchpoint"], f"no touchpoint with key {data.touchpoint!r}")
        # A customer answering a survey they were invited to answers that invitation.
        invitation = await InvitationRepository(session).open_for(survey.id, customer_id, now) if customer_id else None
        if invitation is not None and not data.touchpoint:
            touchpoint = invitation.touchpoint
    try:
        await hold_survey(session, survey, now)
    except NotFound as exc:  # deleted meanwhile (a survey nobody was invited to)
        raise field_problem(["body", "survey_id"], str(exc.detail)) from None
    checked = check_answers(survey.questions, data.answers, from_form=False)
    if not checked.ok:
        raise answers_problem(checked)
    response, followup = await record_response(
        session,
        survey,
        checked,
        invitation=invitation,
        customer_id=customer_id,
        email=email,
        touchpoint=touchpoint,
        source="api",
        default_sla=default_sla,
        submitted_at=data.submitted_at,
    )
    score = None
    if checked.metric is not None:
        m = checked.metric
        score = ScoreRead(metric=m.metric, value=m.score, scale_min=m.scale_min, scale_max=m.scale_max, category=m.category)
    return _read(response, score, followup)


def _read(response: SurveyResponse, score: ScoreRead | None, followup: bool) -> ResponseRead:
    return ResponseRead(
        id=response.id,
        survey_id=response.survey_id,
        invitation_id=response.invitation_id,
        customer_id=response.customer_id,
        email=response.email,
        touchpoint=response.touchpoint,
        source=response.source,
        score=score,
        answers=[AnswerRead.model_validate(a) for a in response.answers],
        submitted_at=response.submitted_at,
        followup_requested=followup,
    )


def to_read(row: tuple[SurveyResponse, Score | None, Any]) -> ResponseRead:
    response, score, followup_id = row
    score_read = None
    if score is not None:
        score_read = ScoreRead(
            metric=score.metric,
            value=score.score,
            scale_min=score.scale_min,
            scale_max=score.scale_max,
            category=score.category,
        )
    return _read(response, score_read, followup_id is not None)


async def get_response(session: AsyncSession, response_id: uuid.UUID) -> ResponseRead:
    row = await ResponseRepository(session).get_with_score(response_id)
    if row is None:
        raise NotFound(f"response {response_id} does not exist")
    return to_read(row)


def export_query(filters: ResponseFilters) -> CompiledQuery:
    """The statement of a response export: what `list_responses` shows, unpaged."""
    return repository.export_query(filters)


async def list_responses(
    session: AsyncSession, page: PageParams, filters: ResponseFilters
) -> tuple[list[ResponseRead], str | None]:
    rows = await ResponseRepository(session).list_page(filters, page)
    rows, next_cursor = keyset.cut(rows, NEWEST_FIRST, page, lambda row: (row[0].submitted_at, row[0].id))
    return [to_read(r) for r in rows], next_cursor


async def rebuild_score_days(session: AsyncSession) -> tuple[int, int]:
    """Recompute the scores summed per day (`score_days`, which the metric reports read) from the
    scores (after a restore, or a change made by hand with the triggers off). Returns (days
    with figures, days corrected)."""
    return await SCORE_DAYS.rebuild(session)


async def rebuild_answer_days(session: AsyncSession) -> tuple[int, int]:
    """Recompute the answers counted per day (`answer_days`, which the survey results read) from
    the responses (after a restore, or a change made by hand with the triggers off). Returns
    (keys with figures, keys corrected)."""
    return await ANSWER_DAYS.rebuild(session)
