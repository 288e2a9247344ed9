"""The themes of a scored answer's comment kept with its score: scores.theme_stems, theme_words

`GET /v1/analytics/themes` split every comment in the window into words and stemmed them on each
request (about 3 s at 150,000 comments, 1.7 s of it in the text search functions). Each score
now keeps its comment's themes, worked out once when the answer is recorded, by the same
functions: the distinct stems (`theme_stems`, sorted) and, for each, the form of the word the
comment used (`theme_words`, the first alphabetically when it used several). Null: the answer
has no comment (or its words were erased); empty: a comment of stop words only.

`theme_dictionary(language)` is the snowball dictionary of a survey language (it drops the
language's stop words and folds a word to its stem: deliveries, delivery -> deliveri), and
`comment_themes(language, comment)` the two arrays of one comment. The existing scores are filled
from their responses' comments and their surveys' languages (one statement; the scores'
statement triggers are held meanwhile, as these columns are in none of the sums they keep).

Revision ID: cem0021
Revises: cem0020
Create Date: 2026-12-05 18:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "cem0021"
down_revision: str | Sequence[str] | None = "cem0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DICTIONARIES = {
    "en": "english_stem",
    "de": "german_stem",
    "fr": "french_stem",
    "es": "spanish_stem",
    "it": "italian_stem",
    "nl": "dutch_stem",
    "pt": "portuguese_stem",
}
_WHENS = " ".join(f"WHEN '{code}' THEN '{name}'::regdictionary" for code, name in DICTIONARIES.items())

THEME_DICTIONARY = f"""
CREATE FUNCTION theme_dictionary(language text) RETURNS regdictionary
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE language {_WHENS} ELSE 'english_stem'::regdictionary END
$$"""

# Words of three letters or more, letters only, split by the 'simple' parser (which lower-cases
# and keeps every word), then stemmed: a stop word has no stem and is left out.
COMMENT_THEMES = """
CREATE FUNCTION comment_themes(language text, comment text, OUT stems text[], OUT words text[])
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN comment IS NOT NULL THEN coalesce(array_agg(stem ORDER BY stem), '{}') END,
           CASE WHEN comment IS NOT NULL THEN coalesce(array_agg(word ORDER BY stem), '{}') END
      FROM (SELECT stem, min(word) AS word
              FROM (SELECT w.lexeme AS word, (ts_lexize(theme_dictionary(language), w.lexeme))[1] AS stem
                      FROM unnest(to_tsvector('simple', coalesce(comment, ''))) AS w
                     WHERE length(w.lexeme) >= 3 AND w.lexeme ~ '^[[:alpha:]]+$') AS words
             WHERE stem IS NOT NULL
             GROUP BY stem) AS themes
$$"""

# A response's comment: its first text answer that holds words.
BACKFILL = """
UPDATE scores SET (theme_stems, theme_words) = (
    SELECT t.stems, t.words
      FROM comment_themes(
               surveys.language,
               jsonb_path_query_first(responses.answers, '$[*] ? (@.type == "text" && @.value.type() == "string").value')
                   #>> '{}'
           ) AS t
)
  FROM responses JOIN surveys ON surveys.id = responses.survey_id
 WHERE responses.id = scores.response_id
   AND jsonb_path_exists(responses.answers, '$[*] ? (@.type == "text" && @.value.type() == "string")')"""


def upgrade() -> None:
    op.add_column("scores", sa.Column("theme_stems", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column("scores", sa.Column("theme_words", postgresql.ARRAY(sa.Text()), nullable=True))
    op.execute(THEME_DICTIONARY)
    op.execute(COMMENT_THEMES)
    op.execute("ALTER TABLE scores DISABLE TRIGGER USER")
    op.execute(BACKFILL)
    op.execute("ALTER TABLE scores ENABLE TRIGGER USER")


def downgrade() -> None:
    op.execute("DROP FUNCTION comment_themes(text, text)")
    op.execute("DROP FUNCTION theme_dictionary(text)")
    op.drop_column("scores", "theme_words")
    op.drop_column("scores", "theme_stems")
