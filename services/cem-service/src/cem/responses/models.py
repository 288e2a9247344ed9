"""Answers to surveys: the whole response, and the narrow `scores` table analytics read."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, SmallInteger, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class SurveyResponse(Base):
    """One submitted answer to a survey; `invitation_id` is unique, so an invitation is answered once."""

    __tablename__ = "responses"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("surveys.id", ondelete="RESTRICT"))
    invitation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("invitations.id", ondelete="RESTRICT"), unique=True)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    email: Mapped[str | None] = mapped_column(String(320))
    # `email_key(email)`, stored: an answer given under an address no customer was known by is
    # linked to the customer the CRM announces with it, and found by an erasure or a data
    # export, by this key (SQL's lower() folds some letters otherwise than Python's).
    email_lower: Mapped[str | None] = mapped_column(String(320))
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(10))
    # [{question_id, type, text, value, scale_min, scale_max}], a copy of each question's wording
    # so a response reads the same after the survey is edited.
    answers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_responses_submitted_id", "submitted_at", "id"),
        Index("ix_responses_survey_submitted", "survey_id", "submitted_at", "id"),
        Index("ix_responses_customer_submitted_id", "customer_id", "submitted_at", "id"),
        Index("ix_responses_touchpoint_submitted", "touchpoint", "submitted_at"),
    )


# The answers given under an address no customer was known by: linked when the CRM
# announces one (and found by an erasure or a data export, by their `email_lower`) without a
# scan. Only those rows are in it, so answers by known customers do not write to it.
Index("ix_responses_unlinked_email", SurveyResponse.email_lower, postgresql_where=SurveyResponse.customer_id.is_(None))


class Score(Base):
    """The answer to a response's metric question (NPS, CSAT or CES), one row per response,
    with its scale and its category worked out at write time. `score` is null when the
    question was skipped: analytics leave it out of the denominator and count it apart."""

    __tablename__ = "scores"

    response_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    metric: Mapped[str] = mapped_column(String(10))
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    score: Mapped[int | None] = mapped_column(SmallInteger)
    scale_min: Mapped[int] = mapped_column(SmallInteger)
    scale_max: Mapped[int] = mapped_column(SmallInteger)
    # nps: promoter / passive / detractor; csat and ces: positive / neutral / negative.
    category: Mapped[str | None] = mapped_column(String(10))
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The UTC day of `submitted_at`: series group by this plain column first (the planner knows its
    # few distinct values, so it hash-aggregates in parallel), then fold days into weeks or months.
    submitted_on: Mapped[dt.date] = mapped_column(Date)
    # The themes of the response's comment (`comment_themes`, migration cem0021), worked out when
    # it is recorded: its distinct word stems, sorted, and the form of each the comment used. Null
    # without a comment (or once its words were erased); empty for a comment of stop words only.
    theme_stems: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    theme_words: Mapped[list[str] | None] = mapped_column(ARRAY(Text))

    __table_args__ = (
        Index("ix_scores_metric_submitted", "metric", "submitted_at"),
        Index("ix_scores_survey_submitted", "survey_id", "submitted_at"),
        Index("ix_scores_touchpoint_submitted", "touchpoint", "submitted_at"),
        # A customer's latest (and next) score of a metric, in (submitted_at, response_id) order.
        Index("ix_scores_customer_metric_submitted_response", "customer_id", "metric", "submitted_at", "response_id"),
        # The scored answers with a comment (the themes report reads those alone), often a small part.
        Index(
            "ix_scores_metric_submitted_commented",
            "metric",
            "submitted_at",
            postgresql_where=text("theme_stems IS NOT NULL AND score IS NOT NULL"),
        ),
    )


class ScoreDay(Base):
    """The scores of one survey, metric, touchpoint, UTC day and category summed up: how many
    answers, and the sum and the sum of squares of their scores. The metric reports read whole
    days here instead of every score (a weekly NPS series over a million answers folds a few
    thousand rows); the part of a day a window cuts is read from `scores` itself.

    Kept by the database, not by the code that writes scores: statement-level triggers on
    `scores` (migration cem0009) add each statement's net change per day in the same
    transaction, so a batch insert, a link of answers to their customer or a delete is one
    aggregated upsert into the writing connection's stripe; a stripe brought back to nothing
    loses its row. The keys are never null, so they can be the primary key: `touchpoint` is ''
    for answers given at none, `category` '' for skipped answers (counted in `answers`, with
    nothing added to the sums).
    `cem rebuild-score-days` recomputes every row from the scores (`score_days_from_rows`)."""

    __tablename__ = "score_days"

    metric: Mapped[str] = mapped_column(String(10), primary_key=True)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(100), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    category: Mapped[str] = mapped_column(String(10), primary_key=True)
    # The writing connection's stripe of the day (its backend pid modulo 16), so that concurrent
    # answers do not wait on one row's lock; the figures of a key are the sum of its stripes.
    stripe: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("0"))
    answers: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[int] = mapped_column(BigInteger)
    score_squares: Mapped[int] = mapped_column(BigInteger)


class AnswerDay(Base):
    """A survey's answers counted per touchpoint, UTC day, question, type as stored, kind and
    value: `GET /v1/surveys/{id}/results` reads whole days here instead of every response; the
    part of a day a window cuts is read from `responses` itself (`answer_terms`).

    Kinds: `response` (the response itself; question, type and value ''), `skipped`, `answered`
    (with the value of a rating or a single choice, '' otherwise) and `pick` (one option picked
    in a multi choice). Kept by statement-level triggers on `responses` (migration cem0022), as
    `ScoreDay` is on `scores`: each statement's net change added to the writing connection's
    stripe, a stripe brought back to nothing deleted. `cem rebuild-answer-days` recomputes every
    row from the responses (`answer_days_from_rows`)."""

    __tablename__ = "answer_days"

    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(100), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    question_id: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    value: Mapped[str] = mapped_column(Text, primary_key=True)
    stripe: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("0"))
    answers: Mapped[int] = mapped_column(BigInteger)
