"""A heavy customer in the CEM database, seeded with a few set-based statements (generate_series),
for `make bench`'s heavy-customer scenario and the tests that check per-customer cost stays flat.

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/cem")
    seeded = await seed_heavy_customer(conn, customer_id)   # 200,000 touchpoint visits, ...

About 6 s for the defaults on a 2-core machine. The rows go in as the service itself would have
stored them (one survey of the customer's, NPS answers with their scores, detractors with a
follow-up); each call adds rows, so call it once per customer. The rows are spread over the past
(a visit every 3 minutes back from now), newest first as the lists read them. Nothing here
bypasses what the service keeps derived from these rows (the customer's experience totals are
kept by the database on insert), so the experience view is right straight after seeding."""

from __future__ import annotations

import uuid
from typing import NamedTuple

import asyncpg

# One survey for every heavy customer (made once per database), so that repeated seeding of
# several heavy customers does not fill the survey list.
HEAVY_SURVEY_ID = uuid.UUID("8e1d2c3b-4a59-4f6e-8d7c-0b1a2f3e4d5c")

_NPS_QUESTION = (
    '{"id": "nps", "type": "rating", "text": "How likely are you to recommend us to a friend or colleague?", '
    '"help_text": null, "required": true, "scale_min": 0, "scale_max": 10, "min_label": null, "max_label": null, '
    '"metric": "nps"}'
)

_PROFILE = """
INSERT INTO customer_profiles (id, email, email_lower, name, company, lifecycle_stage, owner, tags, survey_opt_out,
                               open_deal_value, crm_version, crm_created_at, crm_updated_at, synced_at)
VALUES ($1, $2::text, lower($2::text), 'Heavy Customer', 'Heavy Industries', 'customer', 'sam@example.com', '["heavy"]', false,
        0, 1, now(), now(), now())
ON CONFLICT (id) DO NOTHING
"""

_SURVEY = f"""
INSERT INTO surveys (id, name, kind, status, metric, touchpoint, questions, trigger_interaction_type,
                     trigger_touchpoint, trigger_throttle_days, version, created_at, updated_at, activated_at)
VALUES ($1, 'Heavy-customer NPS', 'nps', 'active', 'nps', 'checkout', '[{_NPS_QUESTION}]', 'purchase',
        'checkout', 30, 1, now(), now(), now())
ON CONFLICT (id) DO NOTHING
"""

_VISITS = """
INSERT INTO touchpoint_interactions (id, interaction_id, customer_id, touchpoint, type, channel, occurred_at,
                                     summary, amount, currency, metadata, source, recorded_at)
SELECT gen_random_uuid(), gen_random_uuid(), $1,
       (ARRAY['checkout', 'store-visit', 'support-call', 'web-login'])[1 + g % 4],
       (ARRAY['purchase', 'visit', 'support_ticket_closed', 'login'])[1 + g % 4],
       (ARRAY['web', 'store', 'phone', 'web'])[1 + g % 4],
       now() - g * interval '3 minutes',
       'visit ' || g, CASE WHEN g % 4 = 0 THEN (g % 500) + 0.99 END, CASE WHEN g % 4 = 0 THEN 'EUR' END,
       '{}', 'urn:cx:bench', now()
FROM generate_series(1, $2::int) AS g
"""

# Invitations every 30 minutes back from now; all sent, the older ones expired.
_INVITATIONS = """
INSERT INTO invitations (id, survey_id, customer_id, token_hash, touchpoint, channel, origin, created_at, send_at,
                         sent_at, expires_at)
SELECT gen_random_uuid(), $2, $1, md5(random()::text || g) || md5(g::text || random()::text), 'checkout', 'email',
       'trigger', now() - g * interval '30 minutes', now() - g * interval '30 minutes',
       now() - g * interval '30 minutes', now() - g * interval '30 minutes' + interval '14 days'
FROM generate_series(1, $3::int) AS g
"""

# API answers (no invitation) with their NPS score, one statement: the scores are the answers'.
_RESPONSES = """
WITH answered AS (
    INSERT INTO responses (id, survey_id, customer_id, touchpoint, source, answers, submitted_at, recorded_at)
    SELECT gen_random_uuid(), $2, $1, 'checkout', 'api',
           jsonb_build_array(jsonb_build_object('question_id', 'nps', 'type', 'rating',
               'text', 'How likely are you to recommend us to a friend or colleague?', 'value', g % 11,
               'scale_min', 0, 'scale_max', 10)),
           now() - g * interval '31 minutes', now()
    FROM generate_series(1, $3::int) AS g
    RETURNING id, survey_id, customer_id, touchpoint, (answers -> 0 ->> 'value')::smallint AS score, submitted_at
)
INSERT INTO scores (response_id, survey_id, metric, touchpoint, customer_id, score, scale_min, scale_max, category,
                    submitted_at, submitted_on)
SELECT id, survey_id, 'nps', touchpoint, customer_id, score, 0, 10,
       CASE WHEN score >= 9 THEN 'promoter' WHEN score >= 7 THEN 'passive' ELSE 'detractor' END,
       submitted_at, (submitted_at AT TIME ZONE 'UTC')::date
FROM answered
"""

# A follow-up for one detractor answer in ten, every other one closed.
_FOLLOWUPS = """
INSERT INTO followups (id, customer_id, response_id, survey_id, metric, score, touchpoint, reason, status,
                       created_at, closed_at)
SELECT gen_random_uuid(), s.customer_id, s.response_id, s.survey_id, 'nps', s.score, s.touchpoint,
       'NPS ' || s.score || ' on 0-10 (detractor)', CASE WHEN s.n % 20 = 0 THEN 'open' ELSE 'closed' END,
       s.submitted_at, CASE WHEN s.n % 20 <> 0 THEN s.submitted_at + interval '1 day' END
FROM (SELECT sc.*, row_number() OVER (ORDER BY sc.submitted_at) AS n
      FROM scores sc
      WHERE sc.customer_id = $1 AND sc.category = 'detractor'
        AND NOT EXISTS (SELECT 1 FROM followups f WHERE f.response_id = sc.response_id)) AS s
WHERE s.n % 10 = 0
"""

_FEEDBACK = """
INSERT INTO feedback (id, customer_id, touchpoint, channel, text, rating, rating_scale_min, rating_scale_max,
                      sentiment_label, sentiment_score, received_at, recorded_at)
SELECT gen_random_uuid(), $1, 'support-call', 'email', 'feedback ' || g, 1 + g % 5, 1, 5,
       (ARRAY['negative', 'neutral', 'positive'])[1 + g % 3], ((g % 3) - 1) * 0.5,
       now() - g * interval '47 minutes', now()
FROM generate_series(1, $2::int) AS g
"""

_SUPPRESSIONS = """
INSERT INTO suppressions (id, survey_id, customer_id, interaction_id, touchpoint, origin, reason, created_at)
SELECT gen_random_uuid(), $2, $1, gen_random_uuid(), 'checkout', 'trigger',
       (ARRAY['survey_throttle', 'fatigue'])[1 + g % 2], now() - g * interval '7 minutes'
FROM generate_series(1, $3::int) AS g
"""


class HeavyCustomer(NamedTuple):
    customer_id: uuid.UUID
    survey_id: uuid.UUID
    visits: int
    invitations: int
    responses: int
    followups: int
    feedback: int
    suppressions: int


async def seed_heavy_customer(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID | None = None,
    *,
    visits: int = 200_000,
    invitations: int = 20_000,
    responses: int = 20_000,
    feedback: int = 5_000,
    suppressions: int = 20_000,
    email: str | None = None,
    survey_id: uuid.UUID = HEAVY_SURVEY_ID,
) -> HeavyCustomer:
    """Give one customer (announced here if the CRM has not yet) `visits` touchpoint visits and
    that many invitations, answers (with scores, and follow-ups for some detractors), feedback
    and suppressions, in one transaction. The invitations, answers and suppressions are of
    `survey_id` (an NPS survey made with that id unless one exists). Returns what was added."""
    customer_id = customer_id or uuid.uuid4()
    async with conn.transaction():
        await conn.execute(_PROFILE, customer_id, email or f"heavy-{customer_id.hex[:12]}@example.com")
        await conn.execute(_SURVEY, survey_id)
        await conn.execute(_VISITS, customer_id, visits)
        await conn.execute(_INVITATIONS, customer_id, survey_id, invitations)
        await conn.execute(_RESPONSES, customer_id, survey_id, responses)
        followups = int((await conn.execute(_FOLLOWUPS, customer_id)).rsplit(" ", 1)[1])
        await conn.execute(_FEEDBACK, customer_id, feedback)
        await conn.execute(_SUPPRESSIONS, customer_id, survey_id, suppressions)
    return HeavyCustomer(customer_id, survey_id, visits, invitations, responses, followups, feedback, suppressions)


async def analyze(conn: asyncpg.Connection) -> None:
    """Fresh planner statistics after a bulk seed (autovacuum would get there, later)."""
    await conn.execute("ANALYZE")
