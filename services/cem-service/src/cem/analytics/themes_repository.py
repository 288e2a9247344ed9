"""The words of the comments that come with scored answers, counted in the database: each
comment split into words by PostgreSQL's text search, stop words dropped and words folded to
their stem by the snowball dictionary of the survey's language, then per stem the answers that
mention it with the moments (count, sum, sum of squares) of their per-answer value."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from cem.analytics.drivers_repository import Moments, answer_value
from cxkit.repository import SessionRepository

# The snowball dictionary of each survey language: it drops the language's stop words and folds
# a word to its stem (deliveries, delivery -> deliveri).
DICTIONARIES = {
    "en": "english_stem",
    "de": "german_stem",
    "fr": "french_stem",
    "es": "spanish_stem",
    "it": "italian_stem",
    "nl": "dutch_stem",
    "pt": "portuguese_stem",
}
_DICTIONARY = "CASE s.language {whens} ELSE 'english_stem'::regdictionary END".format(
    whens=" ".join(f"WHEN '{code}' THEN '{name}'::regdictionary" for code, name in DICTIONARIES.items())
)
# The answer's comment: its first text answer that holds words.
_COMMENT = """jsonb_path_query_first(r.answers, '$[*] ? (@.type == "text" && @.value.type() == "string").value') #>> '{}'"""
_ANSWERS = f"""
WITH answers AS MATERIALIZED (
    SELECT scores.response_id, :value_sql AS v, {_DICTIONARY} AS dictionary, {_COMMENT} AS comment
      FROM scores JOIN responses r ON r.id = scores.response_id JOIN surveys s ON s.id = scores.survey_id
     WHERE scores.metric = :metric AND scores.score IS NOT NULL :filters_sql
)"""
# One statement: the `limit` most mentioned stems, then one row (stem NULL) for every answer with a
# comment, whose `word` column holds how many had none.
_THEMES = (
    _ANSWERS
    + """,
words AS (
    SELECT a.response_id, a.v, w.lexeme AS word, (ts_lexize(a.dictionary, w.lexeme))[1] AS stem
      FROM answers a CROSS JOIN LATERAL unnest(to_tsvector('simple', a.comment)) AS w
     WHERE a.comment IS NOT NULL AND length(w.lexeme) >= 3 AND w.lexeme ~ '^[[:alpha:]]+$'
),
mentions AS (
    SELECT response_id, stem, min(v) AS v, min(word) AS word FROM words WHERE stem IS NOT NULL GROUP BY response_id, stem
),
themes AS (
    SELECT stem, mode() WITHIN GROUP (ORDER BY word) AS word, count(*) AS n, sum(v) AS total, sum(v * v) AS total_sq
      FROM mentions
     GROUP BY stem
     ORDER BY count(*) DESC, stem
     LIMIT :limit
)
SELECT * FROM themes
UNION ALL
SELECT NULL, count(*) FILTER (WHERE NOT commented)::text, count(*) FILTER (WHERE commented),
       coalesce(sum(v) FILTER (WHERE commented), 0), coalesce(sum(v * v) FILTER (WHERE commented), 0)
  FROM (SELECT v, btrim(coalesce(comment, '')) <> '' AS commented FROM answers) AS a"""
)


def _statement(sql: str, value: str, filters: str) -> Any:
    """The statement with the per-answer value's expression and the filters' conditions put in
    (both written here, the filters' values bound as parameters)."""
    return text(sql.replace(":value_sql", value).replace(":filters_sql", filters))


@dataclass(frozen=True, slots=True)
class Theme:
    stem: str
    word: str  # the form the answers use most (the first alphabetically among equals)
    moments: Moments


@dataclass(frozen=True, slots=True)
class ThemeStats:
    everyone: Moments  # the scored answers with a comment
    without_comment: int
    themes: list[Theme]  # the `limit` most mentioned, most mentioned first


class ThemeRepository(SessionRepository):
    async def theme_stats(
        self,
        metric: str,
        *,
        survey_id: uuid.UUID | None,
        touchpoint: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
    ) -> ThemeStats:
        value = str(answer_value(metric).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        params: dict[str, Any] = {"metric": metric}
        filters = ""
        for column, operator, name, given in (
            ("scores.survey_id", "=", "survey_id", survey_id),
            ("scores.touchpoint", "=", "touchpoint", touchpoint),
            ("scores.submitted_at", ">=", "since", since),
            ("scores.submitted_at", "<", "until", until),
        ):
            if given is not None:
                filters += f" AND {column} {operator} :{name}"
                params[name] = given
        rows = list(await self.session.execute(_statement(_THEMES, value, filters), {**params, "limit": limit}))
        everyone = next(row for row in rows if row.stem is None)
        return ThemeStats(
            everyone=Moments(int(everyone.n), int(everyone.total), int(everyone.total_sq)),
            without_comment=int(everyone.word),
            themes=[
                Theme(row.stem, row.word, Moments(int(row.n), int(row.total), int(row.total_sq)))
                for row in rows
                if row.stem is not None
            ],
        )
