"""Survey rules: questions per kind, the status life cycle, trigger and recurrence settings."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.followups.sla import SlaBand
from cem.surveys.models import Survey
from cem.surveys.questions import normalize_questions
from cem.surveys.repository import NEWEST_FIRST, SurveyRepository
from cem.surveys.schemas import Reminders, SurveyCreate, SurveyRead, SurveyUpdate, TriggerInput, TriggerRead
from cem.touchpoints.repository import TouchpointRepository
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, field_problem

# (from, to) moves a survey may make; going back to draft is checked further (no answers yet).
TRANSITIONS = {
    ("draft", "active"),
    ("draft", "closed"),
    ("active", "closed"),
    ("closed", "active"),
    ("active", "draft"),
    ("closed", "draft"),
}


def to_read(survey: Survey) -> SurveyRead:
    trigger = None
    if survey.trigger_interaction_type is not None:
        trigger = TriggerRead(
            interaction_type=survey.trigger_interaction_type,
            touchpoint=survey.trigger_touchpoint,
            delay_minutes=survey.trigger_delay_minutes or 0,
            throttle_days=survey.trigger_throttle_days or 0,
        )
    return SurveyRead.model_validate(
        {
            "id": survey.id,
            "name": survey.name,
            "kind": survey.kind,
            "metric": survey.metric,
            "status": survey.status,
            "touchpoint": survey.touchpoint,
            "questions": survey.questions,
            "trigger": trigger,
            "recurrence_days": survey.recurrence_days,
            "reminders": None
            if survey.reminder_after_days is None
            else {"after_days": survey.reminder_after_days, "max": survey.reminder_max},
            "followup_sla": survey.followup_sla,
            "resurvey_after_days": survey.resurvey_after_days,
            "intro": survey.intro,
            "thank_you": survey.thank_you,
            "language": survey.language,
            "opens_at": survey.opens_at,
            "closes_at": survey.closes_at,
            "max_responses": survey.max_responses,
            "version": survey.version,
            "created_at": survey.created_at,
            "updated_at": survey.updated_at,
            "activated_at": survey.activated_at,
            "closed_at": survey.closed_at,
        }
    )


def _reminder_columns(reminders: Reminders | None) -> dict[str, Any]:
    if reminders is None:
        return {"reminder_after_days": None, "reminder_max": None}
    return {"reminder_after_days": reminders.after_days, "reminder_max": reminders.max}


def _sla_column(bands: list[SlaBand] | None) -> list[dict[str, Any]] | None:
    return None if bands is None else [b.model_dump() for b in bands]


def _trigger_columns(trigger: TriggerInput | None) -> dict[str, Any]:
    if trigger is None:
        return {
            "trigger_interaction_type": None,
            "trigger_touchpoint": None,
            "trigger_delay_minutes": None,
            "trigger_throttle_days": None,
        }
    return {
        "trigger_interaction_type": trigger.interaction_type,
        "trigger_touchpoint": trigger.touchpoint,
        "trigger_delay_minutes": trigger.delay_minutes,
        "trigger_throttle_days": trigger.throttle_days,
    }


async def _check_touchpoints(session: AsyncSession, refs: dict[tuple[str, ...], str | None]) -> None:
    """Every touchpoint key a survey refers to must exist (422 names the field), and goes on
    existing until the survey is committed: the touchpoints are held (`hold_keys`), so a delete
    running meanwhile waits and then sees the survey (409), or the check waits for the delete."""
    wanted = [key for key in refs.values() if key is not None]
    known = await TouchpointRepository(session).hold_keys(wanted)
    for loc, key in refs.items():
        if key is not None and key not in known:
            raise field_problem(["body", *loc], f"no touchpoint with key {key!r}")


def _check_window(opens_at: dt.datetime | None, closes_at: dt.datetime | None) -> None:
    if opens_at is not None and closes_at is not None and closes_at <= opens_at:
        raise field_problem(["body", "closes_at"], "closes_at must be after opens_at")


async def create_survey(session: AsyncSession, data: SurveyCreate) -> Survey:
    _check_window(data.opens_at, data.closes_at)
    questions, metric = normalize_questions(data.kind, data.questions, data.language)
    await _check_touchpoints(
        session, {("touchpoint",): data.touchpoint, ("trigger", "touchpoint"): data.trigger.touchpoint if data.trigger else None}
    )
    now = utcnow()
    survey = Survey(
        id=new_id(),
        name=data.name,
        kind=data.kind,
        status="draft",
        metric=metric,
        touchpoint=data.touchpoint,
        questions=questions,
        intro=data.intro,
        thank_you=data.thank_you,
        language=data.language,
        opens_at=data.opens_at,
        closes_at=data.closes_at,
        max_responses=data.max_responses,
        recurrence_days=data.recurrence_days,
        **_trigger_columns(data.trigger),
        **_reminder_columns(data.reminders),
        followup_sla=_sla_column(data.followup_sla),
        resurvey_after_days=data.resurvey_after_days,
        version=1,
        created_at=now,
        updated_at=now,
    )
    repo = SurveyRepository(session)
    repo.add(survey)
    await repo.flush()
    return survey


async def get_survey(session: AsyncSession, survey_id: uuid.UUID, *, for_update: bool = False) -> Survey:
    survey = await SurveyRepository(session).get(survey_id, for_update=for_update)
    if survey is None:
        raise NotFound(f"survey {survey_id} does not exist")
    return survey


async def update_survey(session: AsyncSession, survey_id: uuid.UUID, data: SurveyUpdate, if_match: str | None) -> Survey:
    repo = SurveyRepository(session)
    survey = await get_survey(session, survey_id, for_update=True)
    check_if_match(if_match, survey.version)
    sent = data.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in sent:
        changes["name"] = data.name
    for name in (
        "touchpoint",
        "recurrence_days",
        "resurvey_after_days",
        "intro",
        "thank_you",
        "language",
        "opens_at",
        "closes_at",
        "max_responses",
    ):
        if name in sent:
            changes[name] = getattr(data, name)
    if "trigger" in sent:
        changes.update(_trigger_columns(data.trigger))
    if "reminders" in sent:
        changes.update(_reminder_columns(data.reminders))
    if "followup_sla" in sent:
        changes["followup_sla"] = _sla_column(data.followup_sla)
    _check_window(changes.get("opens_at", survey.opens_at), changes.get("closes_at", survey.closes_at))
    await _check_touchpoints(
        session,
        {
            ("touchpoint",): changes.get("touchpoint"),
            ("trigger", "touchpoint"): changes.get("trigger_touchpoint"),
        },
    )
    target_status = data.status if "status" in sent else survey.status
    if "questions" in sent:
        # Questions are fixed once people may answer them: answers must keep meaning what they meant.
        if survey.status != "draft" and target_status != "draft":
            raise Conflict("questions can change only while the survey is a draft; set status to draft in the same request")
        questions, metric = normalize_questions(survey.kind, data.questions, changes.get("language", survey.language))
        changes["questions"] = questions
        changes["metric"] = metric
    if target_status == "active" and ("status" in sent or "closes_at" in sent or "max_responses" in sent):
        reached = await _limit_reached(repo, survey, changes)
        if reached is not None and survey.status != "active":
            raise Conflict(f"{reached}: move, raise or clear it in the same request to open the survey")
        if reached is not None:
            target_status = "closed"  # a limit set on an active survey that it has reached closes it now
    if target_status != survey.status:
        assert target_status is not None
        await _check_transition(repo, survey, target_status)
        now = utcnow()
        changes["status"] = target_status
        if target_status == "active":
            changes["activated_at"] = now
            changes["closed_at"] = None
        elif target_status == "closed":
            changes["closed_at"] = now
        else:
            changes["activated_at"] = None
            changes["closed_at"] = None
            if "opens_at" not in sent:
                # Kept, an opens_at that has come (the scheduler opened it then) would open the
                # draft again at the scheduler's next round. One sent with the move stays.
                changes["opens_at"] = None
    changed = {k: v for k, v in changes.items() if getattr(survey, k) != v}
    if changed:
        for name, value in changed.items():
            setattr(survey, name, value)
        survey.version += 1
        survey.updated_at = utcnow()
        await repo.flush()
    return survey


async def _limit_reached(repo: SurveyRepository, survey: Survey, changes: dict[str, Any]) -> str | None:
    """Which of its limits (as changed) the survey has reached: its `closes_at` has passed, or it
    has `max_responses` answers; None for neither."""
    closes_at = changes.get("closes_at", survey.closes_at)
    if closes_at is not None and closes_at <= utcnow():
        return "closes_at has passed"
    limit = changes.get("max_responses", survey.max_responses)
    if limit is not None and await repo.responses_of(survey.id) >= limit:
        return f"the survey has max_responses ({limit}) answers"
    return None


async def _check_transition(repo: SurveyRepository, survey: Survey, target: str) -> None:
    if (survey.status, target) not in TRANSITIONS:
        raise Conflict(f"a survey cannot go from {survey.status} to {target}")
    if target == "draft" and await repo.has_responses(survey.id):
        raise Conflict("this survey has answers, so it cannot go back to draft; close it and create a new one")


async def delete_survey(session: AsyncSession, survey_id: uuid.UUID, if_match: str | None) -> None:
    """Only a survey nobody was invited to can go; otherwise close it (its history stays)."""
    repo = SurveyRepository(session)
    survey = await get_survey(session, survey_id, for_update=True)
    check_if_match(if_match, survey.version)
    if await repo.has_invitations(survey.id) or await repo.has_responses(survey.id):
        raise Conflict("this survey has invitations or answers; close it instead of deleting it")
    try:
        await repo.delete_by_id(survey.id)
        await repo.flush()
    except IntegrityError:
        raise Conflict("this survey was just used; close it instead of deleting it") from None


async def list_surveys(
    session: AsyncSession, page: PageParams, *, status: str | None, kind: str | None, touchpoint: str | None
) -> tuple[list[Survey], str | None]:
    rows = await SurveyRepository(session).list_page(page=page, status=status, kind=kind, touchpoint=touchpoint)
    return keyset.cut(rows, NEWEST_FIRST, page)
