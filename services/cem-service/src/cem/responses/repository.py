"""Every response query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, text, update

from cem.customers.lifecycle import CustomerErasure
from cem.customers.repository import announced_customer_with
from cem.followups.models import Followup
from cem.responses.models import AnswerDay, Score, ScoreDay, SurveyResponse
from cem.surveys.questions import without_free_text
from cxkit import keyset
from cxkit.db import any_of, equal_to_given, window_conditions
from cxkit.http.pagination import PageParams
from cxkit.kept_figures import KeptFigures
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

# The scores summed per day (`ScoreDay`, kept by the triggers of migration cem0009; a key's
# stripes summed) and the same sums computed from the scores (`score_days_from_rows`).
SCORE_DAYS = KeptFigures(
    ScoreDay.__tablename__,
    "score_days_from_rows",
    tuple(c.name for c in ScoreDay.__table__.primary_key.columns if c.name != "stripe"),
    tuple(c.name for c in ScoreDay.__table__.columns if not c.primary_key),
)

# The answers counted per day (`AnswerDay`, kept by the triggers of migration cem0022; a key's
# stripes summed) and the same counts computed from the responses (`answer_days_from_rows`).
ANSWER_DAYS = KeptFigures(
    AnswerDay.__tablename__,
    "answer_days_from_rows",
    tuple(c.name for c in AnswerDay.__table__.primary_key.columns if c.name != "stripe"),
    tuple(c.name for c in AnswerDay.__table__.columns if not c.primary_key),
)

NEWEST_FIRST = keyset.Sort(keyset.SortKey("submitted_at", SurveyResponse.submitted_at, "datetime"), descending=True)


@dataclass(frozen=True, slots=True)
class ResponseFilters:
    survey_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    touchpoint: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def matching(filters: ResponseFilters) -> list[ColumnElement[bool]]:
    """The WHERE of the responses a list (or an export) with these filters shows; the window is
    [since, until) on `submitted_at`."""
    given = (
        (SurveyResponse.survey_id, filters.survey_id),
        (SurveyResponse.customer_id, filters.customer_id),
        (SurveyResponse.touchpoint, filters.touchpoint),
    )
    return equal_to_given(given) + window_conditions(SurveyResponse.submitted_at, filters.since, filters.until)


# One line of a response export: the response, its score, and its answers.
EXPORT_COLUMNS = (
    SurveyResponse.id,
    SurveyResponse.submitted_at,
    SurveyResponse.survey_id,
    SurveyResponse.touchpoint,
    SurveyResponse.customer_id,
    SurveyResponse.email,
    SurveyResponse.source,
    Score.metric,
    Score.score,
    Score.scale_min,
    Score.scale_max,
    Score.category,
    SurveyResponse.answers,
)
EXPORT_HEADER = ("response_id", *(column.key for column in EXPORT_COLUMNS[1:]))


def export_query(filters: ResponseFilters) -> CompiledQuery:
    """Every response the list shows with these filters, newest first, unpaged, with its score
    (`EXPORT_COLUMNS`), for a CSV export through a cursor on the pool."""
    stmt = select(*EXPORT_COLUMNS).outerjoin(Score, Score.response_id == SurveyResponse.id).where(*matching(filters))
    return CompiledQuery(keyset.ordered(stmt, NEWEST_FIRST, SurveyResponse.id))


class ResponseRepository(Repository[SurveyResponse]):
    model = SurveyResponse

    async def add_score(self, row: dict[str, Any]) -> None:
        await self.session.execute(insert(Score), [row])

    async def comment_themes(self, language: str, comment: str | None) -> tuple[list[str] | None, list[str] | None]:
        """A comment's themes as its score keeps them (`comment_themes`, migration cem0021): the
        distinct stems of its words in the survey's language, sorted, and the form of each it
        used; (None, None) without a comment."""
        if comment is None:
            return None, None
        row = (
            await self.session.execute(
                text("SELECT stems, words FROM comment_themes(:language, :comment)"), {"language": language, "comment": comment}
            )
        ).one()
        return list(row.stems), list(row.words)

    def _with_score(self) -> Any:
        return (
            select(SurveyResponse, Score, Followup.id)
            .outerjoin(Score, Score.response_id == SurveyResponse.id)
            .outerjoin(Followup, Followup.response_id == SurveyResponse.id)
        )

    async def get_with_score(self, response_id: uuid.UUID) -> tuple[SurveyResponse, Score | None, uuid.UUID | None] | None:
        row = (await self.session.execute(self._with_score().where(SurveyResponse.id == response_id))).first()
        return None if row is None else (row[0], row[1], row[2])

    async def list_page(
        self, filters: ResponseFilters, page: PageParams
    ) -> list[tuple[SurveyResponse, Score | None, uuid.UUID | None]]:
        """Newest first, keyset on (submitted_at, id), each with its score and follow-up id; one
        row more than a page."""
        stmt = keyset.apply(self._with_score().where(*matching(filters)), NEWEST_FIRST, SurveyResponse.id, page)
        return [(r[0], r[1], r[2]) for r in (await self.session.execute(stmt)).all()]

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        for model in (SurveyResponse, Score):
            await self.session.execute(
                update(model)
                .where(model.customer_id == duplicate_id)
                .values(customer_id=survivor_id)
                .execution_options(synchronize_session=False)
            )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """An erased customer's answers keep their scores (they still count) but lose their free
        text and address; answers given under their address without a customer become theirs,
        and so do their scores. Those with an address may have been given before the CRM
        announced the customer (linked now, or when it did): their first event carries no key,
        and their ids join `erasure.unkeyed_ids`. Erasures are rare and a customer has few
        answers: rewritten here, row by row."""
        linked = []
        for response in await self.of_customer_or_email(erasure.customer_id, erasure.email_lower):
            if response.customer_id is None:
                response.customer_id = erasure.customer_id
                linked.append(response.id)
            if response.email is not None:
                erasure.unkeyed_ids.append(response.id)
            response.email = response.email_lower = None
            response.answers = without_free_text(response.answers)
        await self.flush()
        await self.link_to_customer(linked, erasure.customer_id)
        # The themes were words of the comments.
        await self.session.execute(
            update(Score)
            .where(Score.customer_id == erasure.customer_id, Score.theme_stems.is_not(None))
            .values(theme_stems=None, theme_words=None)
            .execution_options(synchronize_session=False)
        )

    async def of_customer_or_email(self, customer_id: uuid.UUID, email_lower: str | None) -> list[SurveyResponse]:
        """Every response of the customer, and those given under their address (its `email_key`)
        without a customer."""
        condition = SurveyResponse.customer_id == customer_id
        if email_lower:
            condition = or_(condition, and_(SurveyResponse.customer_id.is_(None), SurveyResponse.email_lower == email_lower))
        return list((await self.session.scalars(select(SurveyResponse).where(condition))).all())

    async def link_to_customer(self, response_ids: list[uuid.UUID], customer_id: uuid.UUID) -> None:
        if response_ids:
            await self.session.execute(
                update(Score)
                .where(Score.response_id.in_(response_ids), Score.customer_id.is_(None))
                .values(customer_id=customer_id)
                .execution_options(synchronize_session=False)
            )

    async def link_by_address(self, emails_lower: Collection[str]) -> list[tuple[SurveyResponse, Score | None]]:
        """Responses given under these addresses without a customer go to the customer now announced
        with each (`emails_lower`: `email_key`s), and so do their scores; returns them with their
        scores, oldest first. The addresses are found through the partial index of the responses
        without a customer."""
        if not emails_lower:
            return []
        linked = (
            await self.session.execute(
                update(SurveyResponse)
                .where(
                    SurveyResponse.customer_id.is_(None),
                    any_of(SurveyResponse.email_lower, set(emails_lower)),
                )
                .values(customer_id=announced_customer_with(SurveyResponse.email_lower))
                .returning(SurveyResponse.id, SurveyResponse.customer_id)
                .execution_options(synchronize_session=False)
            )
        ).all()
        owners = {response_id: customer_id for response_id, customer_id in linked if customer_id is not None}
        if not owners:
            return []
        for customer_id in set(owners.values()):
            await self.link_to_customer([r for r, c in owners.items() if c == customer_id], customer_id)
        rows = await self.session.execute(
            select(SurveyResponse, Score)
            .outerjoin(Score, Score.response_id == SurveyResponse.id)
            .where(SurveyResponse.id.in_(list(owners)))
            .order_by(SurveyResponse.submitted_at, SurveyResponse.id)
            .execution_options(populate_existing=True)
        )
        return [(response, score) for response, score in rows.all()]
