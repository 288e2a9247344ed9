"""Survey input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cem.fields import Name, Slug
from cem.followups import sla
from cem.followups.sla import SlaBand
from cem.surveys.questions import Question
from cem.surveys.texts import Language
from cxkit.fields import InputModel, Integer, JsonInteger, PatchModel, Text, Timestamp

Kind = Literal["nps", "csat", "ces", "custom"]
MaxResponses = Annotated[
    Annotated[int, Field(ge=1, le=10_000_000), JsonInteger] | None,
    Field(
        description="The survey closes with the answer that brings it to this many (the answers before it are counted "
        "one at a time, so it never takes more). Null: no limit."
    ),
]
Status = Literal["draft", "active", "closed"]

EXAMPLE_QUESTIONS = [
    {
        "id": "nps",
        "type": "rating",
        "metric": "nps",
        "text": "How likely are you to recommend Acme to a friend or colleague?",
        "scale_min": 0,
        "scale_max": 10,
    },
    {"id": "reason", "type": "text", "text": "What is the main reason for your score?"},
    {"id": "topics", "type": "multi_choice", "text": "What stood out?", "options": ["Price", "Delivery", "Support"]},
]
EXAMPLE_TRIGGER = {"interaction_type": "purchase", "touchpoint": "checkout", "delay_minutes": 60, "throttle_days": 30}
EXAMPLE_REMINDERS = {"after_days": 3, "max": 2}
EXAMPLE_SLA = [{"max_score": 3, "hours": 12}, {"max_score": 6, "hours": 24}]


class Reminders(InputModel):
    """Reminders to invitations not answered yet (`survey.reminded`, each with a link of its own to the invitation)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REMINDERS]})

    after_days: Integer = Field(
        ge=1, le=90, description="Days after the invitation (and after each reminder) until the next reminder."
    )
    max: Integer = Field(ge=1, le=5, description="Reminders per invitation at most.")


def _bands_in_order(bands: list[SlaBand] | None) -> list[SlaBand] | None:
    """Bands in increasing order of `max_score`; two with one `max_score` are refused (`sla.in_order`)."""
    return None if bands is None else sla.in_order(bands)


FollowupSla = Annotated[
    list[SlaBand] | None,
    Field(
        max_length=10,
        description="Follow-up SLA of this survey's detractor answers: score bands, each with its own `max_score` (two "
        "with the same one are a 422), kept in increasing order of `max_score`; a follow-up is due `hours` after it is "
        "raised, by the first band holding the score (a score above every band: the default policy's). Null: the "
        "default policy (`CEM_FOLLOWUP_SLA`).",
    ),
    AfterValidator(_bands_in_order),
]

ResurveyDays = Annotated[
    Annotated[int, Field(ge=1, le=365), JsonInteger] | None,
    Field(
        description="Close the loop: invite a customer whose follow-up was closed again this many days after, by the "
        "invitation rules (opt-out, erasure, this survey's `throttle_days` and the fatigue rule apply). Null: never. "
        "Only follow-ups closed while this is set count (turning it on asks no one followed up before), and only within "
        "`CEM_RESURVEY_CATCH_UP_DAYS` (7) after they fall due; a customer with several due at once is invited once."
    ),
]


class TriggerInput(InputModel):
    """When an interaction event makes an invitation by itself."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_TRIGGER]})

    interaction_type: Slug = Field(description="The interaction `type` that sends the survey, e.g. `purchase`.")
    touchpoint: Slug | None = Field(None, description="Only interactions at this touchpoint (a touchpoint key).")
    delay_minutes: Integer = Field(0, ge=0, le=43_200, description="Wait this long after the interaction (up to 30 days).")
    throttle_days: Integer = Field(
        30,
        ge=0,
        le=3650,
        description="A customer is not invited again by this survey within this many days (0: no limit).",
    )


class TriggerRead(BaseModel):
    interaction_type: str
    touchpoint: str | None
    delay_minutes: int
    throttle_days: int


class SurveyCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Checkout NPS",
                    "kind": "nps",
                    "touchpoint": "checkout",
                    "questions": EXAMPLE_QUESTIONS,
                    "trigger": EXAMPLE_TRIGGER,
                    "reminders": EXAMPLE_REMINDERS,
                    "followup_sla": EXAMPLE_SLA,
                    "intro": "Thanks for your order! Two quick questions.",
                    "thank_you": "Thank you, your answer helps us improve.",
                },
                {"name": "Quarterly relationship NPS", "kind": "nps", "recurrence_days": 90},
                {"name": "Zufriedenheit nach dem Kauf", "kind": "csat", "language": "de"},
            ]
        },
    )

    name: Name
    kind: Kind = Field(
        description="nps, csat or ces (one required score question, made for you if `questions` is left out), or custom."
    )
    questions: list[Question] | None = Field(None, max_length=50, description="In display order.")
    touchpoint: Slug | None = Field(None, description="The touchpoint (key) this survey measures.")
    trigger: TriggerInput | None = Field(None, description="Send automatically after matching interactions; null: by API only.")
    recurrence_days: Annotated[int, Field(ge=1, le=3650), JsonInteger] | None = Field(
        None, description="Relationship surveys: invite each customer again at this interval (days)."
    )
    reminders: Reminders | None = Field(None, description="Remind invitations not answered yet; null: no reminders.")
    followup_sla: FollowupSla = None
    resurvey_after_days: ResurveyDays = None
    intro: Text | None = Field(None, max_length=2000, description="Shown above the questions.")
    thank_you: Text | None = Field(None, max_length=2000, description="Shown after the answer is recorded.")
    opens_at: Timestamp | None = Field(
        None,
        description="A draft with this opens by itself at this moment (RFC 3339 with an offset): the scheduler makes "
        "it active, so invitations and answers can start then. Null: opened by hand (`status`). Moving the survey back "
        "to draft later clears it (unless a new one is sent with the move).",
    )
    closes_at: Timestamp | None = Field(
        None,
        description="The survey closes by itself at this moment (RFC 3339 with an offset): from then on its links show "
        "the closed page and it takes no answers or invitations. Null: only when closed by hand.",
    )
    max_responses: MaxResponses = None
    language: Language = Field(
        "en",
        description="The respondents' language (en, de, fr, es, it, nl, pt): the respondent page's own words and its "
        "messages about answers are in it, and so are the default questions and score labels filled in at creation. "
        "Your questions, intro and thank-you text are shown as you wrote them.",
    )


class SurveyUpdate(PatchModel):
    """Only the fields sent change; null clears an optional one. `questions` change only while the
    survey is a draft. `status` moves draft -> active -> closed; a closed survey may be reopened
    (active), and a survey goes back to draft only while nobody has answered it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "active"},
                {"name": "Checkout NPS (web)", "trigger": None},
                {"reminders": EXAMPLE_REMINDERS, "followup_sla": EXAMPLE_SLA, "resurvey_after_days": 30},
            ]
        },
    )

    name: Name | None = None
    status: Status | None = None
    questions: list[Question] | None = Field(None, max_length=50)
    touchpoint: Slug | None = None
    trigger: TriggerInput | None = None
    recurrence_days: Annotated[int, Field(ge=1, le=3650), JsonInteger] | None = None
    reminders: Reminders | None = None
    followup_sla: FollowupSla = None
    resurvey_after_days: ResurveyDays = None
    intro: Text | None = Field(None, max_length=2000)
    thank_you: Text | None = Field(None, max_length=2000)
    language: Language | None = Field(
        None, description="The page's language from now on (questions and labels already stored stay as they are)."
    )
    opens_at: Timestamp | None = Field(
        None,
        description="When a draft opens by itself; null: by hand. A move back to draft (`status`) clears it unless sent with it.",
    )
    closes_at: Timestamp | None = Field(None, description="When the survey closes by itself; null: never.")
    max_responses: MaxResponses = None

    not_null = ("name", "status", "questions", "language")


class _QuestionRead(BaseModel):
    id: str
    text: str
    help_text: str | None
    required: bool


class RatingQuestionRead(_QuestionRead):
    type: Literal["rating"]
    scale_min: int
    scale_max: int
    min_label: str | None
    max_label: str | None
    metric: str | None


class TextQuestionRead(_QuestionRead):
    type: Literal["text"]
    max_length: int


class ChoiceQuestionRead(_QuestionRead):
    type: Literal["single_choice", "multi_choice"]
    options: list[str]


QuestionRead = Annotated[RatingQuestionRead | TextQuestionRead | ChoiceQuestionRead, Field(discriminator="type")]

EXAMPLE_READ = {
    "id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "name": "Checkout NPS",
    "kind": "nps",
    "metric": "nps",
    "status": "active",
    "touchpoint": "checkout",
    "questions": [
        {
            "id": "nps",
            "type": "rating",
            "text": "How likely are you to recommend Acme to a friend or colleague?",
            "help_text": None,
            "required": True,
            "scale_min": 0,
            "scale_max": 10,
            "min_label": "Not at all likely",
            "max_label": "Extremely likely",
            "metric": "nps",
        },
        {
            "id": "reason",
            "type": "text",
            "text": "What is the main reason for your score?",
            "help_text": None,
            "required": False,
            "max_length": 2000,
        },
    ],
    "trigger": EXAMPLE_TRIGGER,
    "recurrence_days": None,
    "reminders": EXAMPLE_REMINDERS,
    "followup_sla": EXAMPLE_SLA,
    "resurvey_after_days": None,
    "intro": "Thanks for your order! Two quick questions.",
    "thank_you": "Thank you, your answer helps us improve.",
    "language": "en",
    "opens_at": None,
    "closes_at": "2026-12-31T23:00:00Z",
    "max_responses": None,
    "version": 2,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:05:00Z",
    "activated_at": "2026-11-23T10:05:00Z",
    "closed_at": None,
}


class SurveyRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    name: str
    kind: str
    metric: str | None = Field(
        description="The score the survey measures (nps, csat, ces), null for a custom survey without one."
    )
    status: str
    touchpoint: str | None
    questions: list[QuestionRead]
    trigger: TriggerRead | None
    recurrence_days: int | None
    reminders: Reminders | None = Field(description="Reminders to invitations not answered yet; null: none.")
    followup_sla: list[SlaBand] | None = Field(description="This survey's follow-up SLA bands; null: the default policy.")
    resurvey_after_days: int | None = Field(
        description="Invite a followed-up customer again this many days after the follow-up closed; null: never."
    )
    intro: str | None
    thank_you: str | None
    language: str = Field(description="The respondents' language (the respondent page's own words).")
    opens_at: dt.datetime | None = Field(
        description="When the survey (a draft) opens by itself; null: by hand. Cleared when it goes back to draft."
    )
    closes_at: dt.datetime | None = Field(description="When the survey closes by itself; null: never.")
    max_responses: int | None = Field(description="The survey closes with its answer number this; null: no limit.")
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    activated_at: dt.datetime | None
    closed_at: dt.datetime | None
