"""The words of the comments that come with scored answers, counted in the database. Each score
keeps its comment's themes (`scores.theme_stems` and `theme_words`, worked out when the answer
was recorded by `comment_themes`: the comment split into words by PostgreSQL's text search, stop
words dropped and words folded to their stem by the snowball dictionary of the survey's
language); per stem, the answers that mention it with the moments (count, sum, sum of squares)
of their per-answer value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from cem.analytics.drivers_repository import Moments, answer_value
from cem.report_filters import ReportFilters
from cxkit.repository import SessionRepository

# One statement, one read of the scored answers with a comment alone (the partial index
# ix_scores_metric_submitted_commented): each answer gives a row per stem it names and one row of
# stem NULL, which counts the answers themselves. An answer names a stem once, so the answers per
# (stem, form) add up to the answers per stem; they are counted by hashing, not by sorting every
# mention, and the form most answers used names the theme. Out come the `limit` most mentioned
# stems, then the row of stem NULL. The answers without a comment are counted from `score_days`.
_THEMES = """
WITH forms AS (
    SELECT stem, word, count(*) AS n, sum(v) AS total, sum(v * v) AS total_sq
      FROM (SELECT unnest(array_prepend(NULL::text, scores.theme_stems)) AS stem,
                   unnest(array_prepend(NULL::text, scores.theme_words)) AS word,
                   :value_sql AS v
              FROM scores
             WHERE scores.metric = :metric AND scores.score IS NOT NULL AND scores.theme_stems IS NOT NULL
                   :filters_sql) AS mentions
     GROUP BY stem, word
),
themes AS (
    SELECT stem, (array_agg(word ORDER BY n DESC, word))[1] AS word, sum(n) AS n, sum(total) AS total, sum(total_sq) AS total_sq
      FROM forms
     WHERE stem IS NOT NULL
     GROUP BY stem
     ORDER BY sum(n) DESC, stem
     LIMIT :limit
)
SELECT * FROM themes
UNION ALL
SELECT NULL, NULL, coalesce(sum(n), 0), coalesce(sum(total), 0), coalesce(sum(total_sq), 0) FROM forms WHERE stem IS NULL"""


def _statement(sql: str, value: str, where: str) -> Any:
    """The statement with the per-answer value's expression and the filters' conditions put in
    (both written here, the filters' values bound as parameters)."""
    return text(sql.replace(":value_sql", value).replace(":filters_sql", where))


@dataclass(frozen=True, slots=True)
class Theme:
    stem: str
    word: str  # the form the answers use most (the first alphabetically among equals)
    moments: Moments


@dataclass(frozen=True, slots=True)
class ThemeStats:
    everyone: Moments  # the scored answers with a comment
    themes: list[Theme]  # the `limit` most mentioned, most mentioned first


class ThemeRepository(SessionRepository):
    async def theme_stats(self, metric: str, filters: ReportFilters, *, limit: int) -> ThemeStats:
        value = str(answer_value(metric).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        where, params = filters.text_where(survey="scores.survey_id", touchpoint="scores.touchpoint", at="scores.submitted_at")
        rows = list(await self.session.execute(_statement(_THEMES, value, where), {**params, "metric": metric, "limit": limit}))
        everyone = next(row for row in rows if row.stem is None)
        return ThemeStats(
            everyone=Moments(int(everyone.n), int(everyone.total), int(everyone.total_sq)),
            themes=[
                Theme(row.stem, row.word, Moments(int(row.n), int(row.total), int(row.total_sq)))
                for row in rows
                if row.stem is not None
            ],
        )
