"""The HTTP targets: GET by id, the joined view, POST interactions, search, the NPS series;
reported without a target: a customer's duplicates, the customer list sorted deep, the open tasks,
the open deals, the touchpoint report and the key drivers."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from scripts.bench.loadgen import Plan
from scripts.bench.report import Metric, at_least, at_most
from scripts.bench.scenarios.context import BenchContext, checkpoint, errors_note, interleaved, median_of

from cxkit.http.pagination import encode_cursor

POST_BODY = orjson.dumps(
    {
        "customer_id": "__ID__",
        "type": "purchase",
        "channel": "web",
        "touchpoint": "checkout",
        "summary": "Order placed in the web shop",
        "amount": "49.90",
        "currency": "EUR",
        "metadata": {"order_id": "bench"},
    }
).decode()
BARE = "bare Starlette+asyncpg"


async def get_customer(ctx: BenchContext) -> None:
    plan = Plan("get_customer", "random", [f"/v1/customers/{cid}" for cid in ctx.data.http_ids])
    res = await interleaved(ctx, plan, [("ours", ctx.stack.crm), ("bare", ctx.stack.bare)])
    rps, p99 = median_of([r.rps for r in res["ours"]]), median_of([r.p99_ms for r in res["ours"]])
    bare_rps, bare_p99 = median_of([r.rps for r in res["bare"]]), median_of([r.p99_ms for r in res["bare"]])
    note = errors_note(res["ours"] + res["bare"])
    ctx.report.add(
        Metric("get_customer_rps", "GET /v1/customers/{id}", "req/s", ">= 1,500", rps, bare_rps, BARE, at_least(rps, 1500), note),
        Metric("get_customer_p99", "GET /v1/customers/{id} p99", "ms", "<= 25", p99, bare_p99, BARE, at_most(p99, 25)),
        Metric(
            "get_customer_vs_bare", "GET /v1/customers/{id} vs bare", "req/s", ">= 0.5x bare", rps, bare_rps, BARE,
            at_least(rps / bare_rps if bare_rps else None, 0.5),
        ),
    )  # fmt: skip


async def customer_view(ctx: BenchContext) -> None:
    plan = Plan("customer_view", "random", [f"/v1/customers/{cid}/view" for cid in ctx.data.http_ids])
    res = await interleaved(ctx, plan, [("ours", ctx.stack.crm)])
    rps, p99 = median_of([r.rps for r in res["ours"]]), median_of([r.p99_ms for r in res["ours"]])
    note = errors_note(res["ours"])
    ctx.report.add(
        Metric("view_rps", "GET /v1/customers/{id}/view", "req/s", ">= 500", rps, passed=at_least(rps, 500), note=note),
        Metric("view_p99", "GET /v1/customers/{id}/view p99", "ms", "<= 100", p99, passed=at_most(p99, 100)),
    )


async def post_interactions(ctx: BenchContext) -> None:
    plan = Plan("post_interactions", "post", [str(cid) for cid in ctx.data.http_ids], "/v1/interactions", POST_BODY)
    res = await interleaved(ctx, plan, [("ours", ctx.stack.crm), ("bare", ctx.stack.bare)])
    rps, p99 = median_of([r.rps for r in res["ours"]]), median_of([r.p99_ms for r in res["ours"]])
    bare_rps, bare_p99 = median_of([r.rps for r in res["bare"]]), median_of([r.p99_ms for r in res["bare"]])
    note = "unique Idempotency-Key per request; bare = the same 3 rows (interaction, key, outbox) in one transaction"
    errors = errors_note(res["ours"] + res["bare"])
    ctx.report.add(
        Metric("post_interactions_rps", "POST /v1/interactions", "req/s", ">= 600", rps, bare_rps, BARE, at_least(rps, 600),
               "; ".join(x for x in (note, errors) if x)),
        Metric("post_interactions_p99", "POST /v1/interactions p99", "ms", "<= 50", p99, bare_p99, BARE, at_most(p99, 50)),
    )  # fmt: skip
    await ctx.settle()


async def search(ctx: BenchContext) -> None:
    """One connection, one kind of term at a time (its terms in turn), p95 per kind."""
    rows = await ctx.crm.fetchval("SELECT count(*) FROM customers")
    scale = f"{rows:,} customers" + ("" if rows >= 1_000_000 else " (SPEC states the target at 1,000,000: BENCH_N=1000000)")
    for kind, terms in ctx.data.search_terms.items():
        plan = Plan(f"search_{kind}", "cycle", [f"/v1/customers?q={quote(t)}" for t in terms])
        res = (await interleaved(ctx, plan, [("ours", ctx.stack.crm)], connections=1))["ours"]
        p95 = median_of([r.p95_ms for r in res])
        matches = [
            await ctx.crm.fetchval(
                "SELECT count(*) FROM customers WHERE name ILIKE $1 OR email_normalized ILIKE $1 OR company ILIKE $1",
                f"%{t.lower() if kind == 'email_substring' else t}%",
            )
            for t in terms
        ]
        ctx.report.rounds[plan.name]["terms"] = dict(zip(terms, matches, strict=True))
        terms_note = ", ".join(f"{t!r} ({m:,} matches)" for t, m in zip(terms, matches, strict=True))
        note = (f"{scale}; " if kind == "common" else "") + f"terms {terms_note}"
        errors = errors_note(res)
        ctx.report.add(
            Metric(f"search_{kind}_p95", f"search q= {kind.replace('_', ' ')} p95", "ms", "<= 50", p95,
                   passed=at_most(p95, 50), note="; ".join(x for x in (note, errors) if x)),
        )  # fmt: skip


async def duplicates(ctx: BenchContext) -> None:
    """`GET /v1/customers/{id}/duplicates` (no SPEC row: reported, not judged): one connection,
    p95 for customers with the most common full name, with a rare last name, and picked at
    random."""
    name, sharing = await ctx.crm.fetchrow("SELECT name, count(*) FROM customers GROUP BY name ORDER BY count(*) DESC LIMIT 1")
    common = await ctx.crm.fetch("SELECT id FROM customers WHERE name = $1 ORDER BY id LIMIT 20", name)
    rare = await ctx.crm.fetch("SELECT id FROM customers WHERE name LIKE ANY($1) ORDER BY id LIMIT 20", [
        f"% {last}" for last in ctx.data.search_terms.get("rare", [])
    ])  # fmt: skip
    kinds = {"common": [r["id"] for r in common], "rare": [r["id"] for r in rare], "random": ctx.data.http_ids[:20]}
    for kind, ids in kinds.items():
        if not ids:
            continue
        plan = Plan(f"duplicates_{kind}", "cycle", [f"/v1/customers/{cid}/duplicates" for cid in ids])
        res = (await interleaved(ctx, plan, [("ours", ctx.stack.crm)], connections=1))["ours"]
        p95 = median_of([r.p95_ms for r in res])
        note = "no SPEC target" + (f"; {name!r}, the name of {sharing:,} customers" if kind == "common" else "")
        errors = errors_note(res)
        ctx.report.add(
            Metric(f"duplicates_{kind}_p95", f"duplicates of a customer, {kind} name, p95", "ms", "(reported)", p95,
                   note="; ".join(x for x in (note, errors) if x)),
        )  # fmt: skip


# The rounds of a list reported without a target are shorter (one connection, ~3 ms a page: a
# thousand pages a round).
REPORTED_SECONDS = 3.0
SORTED_BY = {"name": "name", "email": "email_normalized", "-name": "name"}  # the list's sort: its column
DEEP_CURSORS = 20


async def _one_connection_p95(ctx: BenchContext, paths: dict[str, list[str]]) -> tuple[dict[str, float | None], list[str]]:
    """For each named plan (its paths cycled), the p95 on one connection in short rounds, and the
    error notes of the rounds that had any."""
    p95: dict[str, float | None] = {}
    errors = []
    for name, cycled in paths.items():
        plan = Plan(name, "cycle", cycled)
        res = (await interleaved(ctx, plan, [("ours", ctx.stack.crm)], connections=1, seconds=REPORTED_SECONDS))["ours"]
        p95[name] = median_of([r.p95_ms for r in res])
        errors.append(errors_note(res))
    return p95, [e for e in errors if e]


async def sorted_lists(ctx: BenchContext) -> None:
    """`GET /v1/customers?sort=name` (and `email`, `-name`), 50 a page (no SPEC row: reported,
    not judged): one connection, p95 of pages deep into the list (from cursors at 20 places
    between its middle and its end) beside the first page's."""
    rows = await ctx.crm.fetchval("SELECT count(*) FROM customers")
    for sort, column in SORTED_BY.items():
        way = "DESC" if sort.startswith("-") else "ASC"
        deep = await ctx.crm.fetch(
            f"SELECT {column} AS value, id FROM (SELECT {column}, id, row_number() OVER (ORDER BY {column} {way}, id {way}) "
            f"AS n FROM customers WHERE {column} IS NOT NULL) AS ranked WHERE n % $1 = 0 AND n > $2 ORDER BY n",
            max(1, rows // (2 * DEEP_CURSORS)), rows // 2,
        )  # fmt: skip
        cursors = [encode_cursor([sort, r["value"], str(r["id"])]) for r in deep[:DEEP_CURSORS]]
        key = sort.replace("-", "desc_")
        first, deep_page = f"list_by_{key}_first", f"list_by_{key}_deep"
        p95, errors = await _one_connection_p95(ctx, {
            first: [f"/v1/customers?sort={sort}&limit=50"],
            deep_page: [f"/v1/customers?sort={sort}&limit=50&cursor={c}" for c in cursors],
        })  # fmt: skip
        note = f"no SPEC target; {rows:,} customers, pages after 20 cursors from the middle of the list to its end"
        ctx.report.add(
            Metric(f"{first}_p95", f"customers by {sort}, the first page, p95", "ms", "(reported)", p95[first],
                   note="; ".join(("no SPEC target", *errors))),
            Metric(f"{deep_page}_p95", f"customers by {sort}, a deep page, p95", "ms", "(reported)", p95[deep_page],
                   p95[first], "the first page", note="; ".join((note, *errors))),
        )  # fmt: skip


# As many tasks as customers, due over two years up to two weeks ahead: the ones due in the last
# two weeks or ahead are open, and one in 2,000 of the older ones; the rest were completed. The
# open ones past due were announced overdue already (the scheduler's pass would otherwise run
# during the measurement).
TASKS_SEED = """
INSERT INTO tasks (id, customer_id, title, due_at, status, priority, owner, origin, version, created_at, updated_at,
                   completed_at, overdue_announced_at)
SELECT gen_random_uuid(), t.id, 'Call back', t.due, t.status, 'normal', 'rep' || (t.n % 50) || '@bench.example',
       'manual', 1, t.due - interval '3 days', t.due, CASE WHEN t.status = 'completed' THEN t.due END,
       CASE WHEN t.status = 'open' AND t.due < now() THEN t.due END
FROM (SELECT d.*, CASE WHEN d.due > now() - interval '14 days' OR d.n % 2000 = 0 THEN 'open' ELSE 'completed' END AS status
      FROM (SELECT c.id, c.n, now() - interval '730 days' + random() * interval '744 days' AS due
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM customers) AS c) AS d) AS t
"""


async def open_tasks(ctx: BenchContext) -> None:
    """`GET /v1/tasks?status=open` (the to-do list, by due time, the default sort), the overdue list
    and a rep's open tasks, 50 a page (no SPEC row: reported, not judged): one connection, p95,
    beside every task's first page by due time, over as many tasks as customers, most of them
    completed long ago (seeded here, once)."""
    if not await ctx.crm.fetchval("SELECT count(*) FROM tasks"):
        await ctx.crm.execute(TASKS_SEED)
        await ctx.crm.execute("VACUUM ANALYZE tasks")
        await checkpoint(ctx.crm)
    tasks, open_ = await ctx.crm.fetchrow("SELECT count(*), count(*) FILTER (WHERE status = 'open') FROM tasks")
    now = quote(dt.datetime.now(dt.UTC).isoformat())
    p95, errors = await _one_connection_p95(ctx, {
        "tasks_all": ["/v1/tasks?limit=50"],
        "tasks_open": ["/v1/tasks?status=open&limit=50"],
        "tasks_overdue": [f"/v1/tasks?status=open&due_before={now}&limit=50"],
        "tasks_rep": ["/v1/tasks?owner=rep7@bench.example&status=open&limit=50"],
    })  # fmt: skip
    note = "; ".join((f"no SPEC target; {tasks:,} tasks, {open_:,} open", *errors))
    base = (p95["tasks_all"], "every task's first page by due time")
    ctx.report.add(
        Metric("tasks_open_p95", "open tasks by due time, p95", "ms", "(reported)", p95["tasks_open"], *base, note=note),
        Metric("tasks_overdue_p95", "overdue tasks, p95", "ms", "(reported)", p95["tasks_overdue"], *base),
        Metric("tasks_rep_open_p95", "a rep's open tasks, p95", "ms", "(reported)", p95["tasks_rep"], *base),
    )


# Half as many deals as customers in a pipeline of the bench's own, expected to close over two
# years up to two months ahead: those expected in the last month or later are open, the older
# ones won (one in three) or lost.
DEALS_SEED = """
WITH pipeline AS (
    INSERT INTO pipelines (id, name, is_default, version, created_at, updated_at)
    VALUES (gen_random_uuid(), 'Bench forecast', false, 1, now(), now()) RETURNING id
), stages AS (
    INSERT INTO pipeline_stages (id, pipeline_id, name, position, probability, is_won, is_lost)
    SELECT gen_random_uuid(), pipeline.id, s.name, s.position, s.probability, s.name = 'Won', s.name = 'Lost'
    FROM pipeline, (VALUES ('Proposal', 0, 0.5), ('Won', 1, 1.0), ('Lost', 2, 0.0)) AS s (name, position, probability)
    RETURNING id, pipeline_id, name
)
INSERT INTO deals (id, customer_id, title, currency, amount, pipeline_id, stage_id, status, stage_entered_at,
                   expected_close_date, owner, closed_at, version, created_at, updated_at)
SELECT gen_random_uuid(), d.id, 'Renewal', 'EUR', 100 * (d.n % 100 + 1), st.pipeline_id, st.id, d.status, d.closes,
       d.closes::date, 'rep' || (d.n % 50) || '@bench.example', CASE WHEN d.status <> 'open' THEN d.closes END, 1,
       d.closes - interval '60 days', d.closes
FROM (SELECT c.*, CASE WHEN c.closes > now() - interval '30 days' THEN 'open' WHEN c.n % 3 = 0 THEN 'won' ELSE 'lost' END
             AS status
      FROM (SELECT id, n, now() - interval '730 days' + random() * interval '790 days' AS closes
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM customers) AS numbered WHERE n % 2 = 0) AS c) AS d
JOIN stages st ON st.name = CASE d.status WHEN 'open' THEN 'Proposal' WHEN 'won' THEN 'Won' ELSE 'Lost' END
"""


async def open_deals(ctx: BenchContext) -> None:
    """`GET /v1/deals?status=open&sort=expected_close_date` (the forecast: what should close next),
    50 a page (no SPEC row: reported, not judged): one connection, p95, beside every deal's first
    page (newest first), over half as many deals as customers, most of them closed (seeded here,
    once)."""
    if not await ctx.crm.fetchval("SELECT count(*) FROM deals"):
        await ctx.crm.execute(DEALS_SEED)
        await ctx.crm.execute("VACUUM ANALYZE deals")
        await checkpoint(ctx.crm)
    deals, open_ = await ctx.crm.fetchrow("SELECT count(*), count(*) FILTER (WHERE status = 'open') FROM deals")
    p95, errors = await _one_connection_p95(ctx, {
        "deals_all": ["/v1/deals?limit=50"],
        "deals_forecast": ["/v1/deals?status=open&sort=expected_close_date&limit=50"],
    })  # fmt: skip
    note = "; ".join((f"no SPEC target; {deals:,} deals, {open_:,} open", *errors))
    ctx.report.add(
        Metric("deals_forecast_p95", "open deals by expected close date, p95", "ms", "(reported)", p95["deals_forecast"],
               p95["deals_all"], "every deal's first page, newest first", note=note),
    )  # fmt: skip


async def _median_ms(client: httpx.AsyncClient, path: str, requests: int) -> tuple[float | None, list[float], dict[str, Any]]:
    """`requests` single requests one after the other, after one that warms the caches up: their
    median and each time (ms), and the last answer."""
    timings: list[float] = []
    for i in range(requests + 1):
        started = time.perf_counter()
        r = await client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        r.raise_for_status()
        if i:
            timings.append(elapsed)
    return median_of(timings), timings, dict(r.json())


async def nps_series(ctx: BenchContext) -> None:
    """The NPS weekly series, then the touchpoint report and the key drivers (reported) over the
    same answers: single requests, one after the other; the median."""
    headers = {"Authorization": f"Bearer {ctx.key}"}
    requests = ctx.cfg.nps_requests
    async with httpx.AsyncClient(base_url=ctx.stack.cem.url, headers=headers, timeout=120) as client:
        median, timings, answer = await _median_ms(
            client, f"/v1/analytics/nps?interval=week&survey_id={ctx.data.survey_id}", requests
        )
        touchpoints, touchpoint_timings, _ = await _median_ms(client, "/v1/analytics/touchpoints", requests)
        # The drivers look up each answer's visits: a few seconds at a million answers, so fewer requests.
        drivers, driver_timings, report = await _median_ms(client, "/v1/analytics/drivers?metric=nps", max(1, requests // 3))
    points = len(answer.get("series", []))
    ctx.report.rounds["nps_series"] = {"ms": timings, "series_points": points}
    ctx.report.rounds["experience_reports"] = {"touchpoints_ms": touchpoint_timings, "drivers_ms": driver_timings}
    answers = f"{ctx.data.responses:,} responses"
    ctx.report.add(
        Metric("nps_week_ms", "NPS weekly series (median)", "ms", "<= 300", median, passed=at_most(median, 300),
               note=f"{answers}, {points} weekly points, {len(timings)} requests"),
        Metric("touchpoints_report_ms", "touchpoint report (median)", "ms", "(reported)", touchpoints,
               note=f"no SPEC target; {answers}, {len(touchpoint_timings)} requests"),
        Metric("drivers_report_ms", "key drivers of NPS (median)", "ms", "(reported)", drivers,
               note=f"no SPEC target; {answers}, {report.get('n', 0):,} of known customers, {len(driver_timings)} requests"),
    )  # fmt: skip
    ctx.sample_rss("the NPS series and experience reports")
