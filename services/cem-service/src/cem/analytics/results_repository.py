"""A survey's answers counted per question and value in the database. Whole UTC days come from
`answer_days` (kept by triggers on `responses`, migration cem0022: per day, question, kind and
value); the parts of days a window cuts are counted from the responses by the same function the
triggers use (`answer_terms`). A multi choice is counted per option picked. For a text question
its newest answers are read backwards along `ix_responses_survey_submitted` until there are
enough."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from cem.analytics.repository import whole_days
from cxkit.repository import SessionRepository

# The counted rows of the whole days in the window (stripes summed).
_DAY_COUNTS = """
SELECT question_id, type, kind, value, sum(answers)::bigint AS answers
  FROM answer_days
 WHERE {days}
 GROUP BY 1, 2, 3, 4
HAVING sum(answers) <> 0
"""
# The same rows counted from the responses of the parts of days the window cuts.
_PART_COUNTS = """
SELECT t.question_id, t.type, t.kind, t.value, count(*) AS answers
  FROM responses r
  CROSS JOIN LATERAL (
      SELECT '' AS question_id, '' AS type, 'response' AS kind, '' AS value
      UNION ALL
      SELECT * FROM answer_terms(r.answers)
  ) AS t
 WHERE {window}
 GROUP BY 1, 2, 3, 4
"""
_LATEST_TEXTS = """
SELECT r.id AS response_id, r.submitted_at, a->>'value' AS text
  FROM responses r CROSS JOIN LATERAL jsonb_array_elements(r.answers) AS e(a)
 WHERE {window} AND a->>'question_id' = :question_id AND a->>'type' = 'text' AND jsonb_typeof(a->'value') = 'string'
 ORDER BY r.submitted_at DESC, r.id DESC
 LIMIT :limit
"""


@dataclass(frozen=True, slots=True)
class ValueRow:
    """How many answers to a question (of `type` as stored) are of `kind`: `skipped`,
    `answered` (`value`: the score or the option of a rating or a single choice, '' otherwise)
    or `pick` (`value`: one option picked in a multi choice). Kind `response` (question, type and
    value '') counts the responses themselves."""

    question_id: str
    type: str
    kind: str
    value: str
    answers: int


@dataclass(frozen=True, slots=True)
class Window:
    survey_id: uuid.UUID
    touchpoint: str | None
    since: dt.datetime | None
    until: dt.datetime | None

    def sql(self) -> tuple[str, dict[str, Any]]:
        """The responses in the window."""
        return self._rows(self.since, self.until)

    def _rows(self, since: dt.datetime | None, until: dt.datetime | None, suffix: str = "") -> tuple[str, dict[str, Any]]:
        conditions, params = ["r.survey_id = :survey_id"], {"survey_id": self.survey_id}
        if self.touchpoint is not None:
            conditions.append("r.touchpoint = :touchpoint")
            params["touchpoint"] = self.touchpoint
        if since is not None:
            conditions.append(f"r.submitted_at >= :since{suffix}")
            params[f"since{suffix}"] = since
        if until is not None:
            conditions.append(f"r.submitted_at < :until{suffix}")
            params[f"until{suffix}"] = until
        return " AND ".join(conditions), params

    def split(self) -> tuple[tuple[str, dict[str, Any]] | None, list[tuple[str, dict[str, Any]]]]:
        """The `answer_days` conditions of the whole UTC days in the window (None if it holds
        none), and the responses conditions of each part of a day it cuts."""
        days, parts = whole_days(self.since, self.until)
        if self.touchpoint == "":  # no touchpoint has an empty key; '' stands for none in answer_days
            days, parts = None, [(self.since, self.until)]
        kept = None
        if days is not None:
            first, end = days
            conditions, params = ["survey_id = :survey_id"], {"survey_id": self.survey_id}
            if self.touchpoint is not None:
                conditions.append("touchpoint = :touchpoint")
                params["touchpoint"] = self.touchpoint
            if first is not None:
                conditions.append("day >= :first")
                params["first"] = first
            if end is not None:
                conditions.append("day < :end")
                params["end"] = end
            kept = " AND ".join(conditions), params
        return kept, [self._rows(since, until, f"_{i}") for i, (since, until) in enumerate(parts)]


class ResultsRepository(SessionRepository):
    async def value_counts(self, window: Window) -> list[ValueRow]:
        """Every counted row of the window: whole days from `answer_days`, the parts of days it
        cuts from the responses, added up per key."""
        days, parts = window.split()
        statements = []
        if days is not None:
            statements.append((_DAY_COUNTS.format(days=days[0]), days[1]))
        statements += [(_PART_COUNTS.format(window=where), params) for where, params in parts]
        counts: Counter[tuple[str, str, str, str]] = Counter()
        for sql, params in statements:
            for question_id, type_, kind, value, answers in await self.session.execute(text(sql), params):
                counts[(question_id, type_, kind, value)] += int(answers)
        return [ValueRow(*key, answers) for key, answers in counts.items() if answers]

    async def latest_texts(self, window: Window, question_id: str, limit: int) -> list[dict[str, Any]]:
        where, params = window.sql()
        rows = await self.session.execute(
            text(_LATEST_TEXTS.format(window=where)), {**params, "question_id": question_id, "limit": limit}
        )
        return [dict(row._mapping) for row in rows]
