"""Issue 14: one customer with a long history (`BENCH_HEAVY_INTERACTIONS`, 200,000: a B2B account, a loyalty
member scanned at every visit) costs what a light one costs. Single requests, one at a time,
heavy against light in the same run; then the view under load with the heavy customer among
the ones asked for."""

from __future__ import annotations

import importlib.util
import statistics
import time
import uuid
from types import ModuleType

import httpx
from scripts.bench.config import ROOT
from scripts.bench.loadgen import Plan
from scripts.bench.report import Metric, at_least, at_most
from scripts.bench.scenarios.context import BenchContext, errors_note, interleaved, median_of

SAMPLES = 30  # requests per figure (the median is reported)
DEEP_PAGE = 20
TARGET_MS = 15


async def _seed_crm(ctx: BenchContext, customer_id: uuid.UUID) -> None:
    """200,000 interactions for one customer, in one statement (a third of them purchases), as
    the consumer would have written them over time."""
    await ctx.crm.execute(
        """
        INSERT INTO interactions (id, customer_id, type, channel, touchpoint, occurred_at, summary, amount, currency,
                                  metadata, source, recorded_at)
        SELECT gen_random_uuid(), $1,
               (ARRAY['purchase', 'visit', 'call'])[g % 3 + 1], 'pos', 'checkout',
               now() - make_interval(mins => g), 'Loyalty card scanned',
               CASE WHEN g % 3 = 0 THEN 12.50 END, CASE WHEN g % 3 = 0 THEN 'EUR' END, '{}'::jsonb, 'bench', now()
        FROM generate_series(1, $2) AS g
        """,
        customer_id,
        ctx.cfg.heavy_interactions,
    )
    await ctx.crm.execute("ANALYZE interactions")


def _cem_seed() -> ModuleType:
    """The CEM's heavy-customer seed, shared with its plan tests (services/cem-service/tests)."""
    path = ROOT / "services" / "cem-service" / "tests" / "heavy_seed.py"
    spec = importlib.util.spec_from_file_location("cem_heavy_seed", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _seed_cem(ctx: BenchContext, customer_id: uuid.UUID) -> None:
    """As many touchpoint visits on the CEM side, and a tenth as many invitations, answers and
    suppressions (feedback and follow-ups fewer still), all of the bench's checkout survey: a
    second active survey on that trigger would double what every later purchase event costs the
    CEM (an invitation or suppression per survey), which the ingest scenario would then measure."""
    seed = _cem_seed()
    n = ctx.cfg.heavy_interactions
    await seed.seed_heavy_customer(
        ctx.cem, customer_id, visits=n, invitations=n // 10, responses=n // 10, feedback=n // 40, suppressions=n // 10,
        survey_id=ctx.data.survey_id,
    )  # fmt: skip
    await seed.analyze(ctx.cem)


async def _median_ms(client: httpx.AsyncClient, path: str) -> float:
    times = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        r = await client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
    return statistics.median(times)


async def _page_path(client: httpx.AsyncClient, path: str, depth: int) -> str:
    """The path of the `depth`-th page (1-based) of a keyset list."""
    current = path
    for _ in range(depth - 1):
        cursor = (await client.get(current)).json().get("next_cursor")
        if not cursor:
            break
        current = f"{path}&cursor={cursor}"
    return current


async def _figures(client: httpx.AsyncClient, customer_id: uuid.UUID) -> dict[str, float]:
    timeline = f"/v1/customers/{customer_id}/timeline?limit=100"
    listed = f"/v1/interactions?customer_id={customer_id}&limit=100"
    return {
        "view": await _median_ms(client, f"/v1/customers/{customer_id}/view"),
        "timeline_first": await _median_ms(client, timeline),
        "timeline_deep": await _median_ms(client, await _page_path(client, timeline, DEEP_PAGE)),
        "interactions_first": await _median_ms(client, listed),
        "interactions_deep": await _median_ms(client, await _page_path(client, listed, DEEP_PAGE)),
    }


async def heavy_customer(ctx: BenchContext) -> None:
    heavy = ctx.data.customer_ids[-1]
    light = ctx.data.http_ids[0]
    started = time.perf_counter()
    await _seed_crm(ctx, heavy)
    await _seed_cem(ctx, heavy)
    seeded_s = time.perf_counter() - started
    headers = {"Authorization": f"Bearer {ctx.key}"}
    async with httpx.AsyncClient(base_url=ctx.stack.crm.url, headers=headers, timeout=30) as client:
        heavy_ms = await _figures(client, heavy)
        light_ms = await _figures(client, light)
    async with httpx.AsyncClient(base_url=ctx.stack.cem.url, headers=headers, timeout=30) as client:
        for figures, cid in ((heavy_ms, heavy), (light_ms, light)):
            figures["cem_experience"] = await _median_ms(client, f"/v1/customers/{cid}/experience")
    ctx.report.rounds["heavy_customer"] = {"heavy": heavy_ms, "light": light_ms, "seed_s": seeded_s}
    note = (
        f"one request at a time, median of {SAMPLES}; the heavy customer: {ctx.cfg.heavy_interactions:,} interactions "
        f"(CRM) and as many touchpoint visits, a tenth as many invitations, answers and suppressions (CEM)"
    )
    rows = [
        ("view", "heavy customer: view", "view"),
        ("timeline_first", "heavy customer: timeline, 1st page of 100", "timeline_first"),
        ("timeline_deep", f"heavy customer: timeline, page {DEEP_PAGE}", "timeline_deep"),
        ("interactions_first", "heavy customer: interactions, 1st page of 100", "interactions_first"),
        ("interactions_deep", f"heavy customer: interactions, page {DEEP_PAGE}", "interactions_deep"),
        ("cem_experience", "heavy customer: CEM experience view", "cem_experience"),
    ]
    ctx.report.add(
        *(
            Metric(f"heavy_{key}_ms", label, "ms", f"<= {TARGET_MS}", heavy_ms[figure], light_ms[figure], "light customer",
                   at_most(heavy_ms[figure], TARGET_MS), note if key == "view" else "")
            for key, label, figure in rows
        )
    )  # fmt: skip

    # Under load, the heavy customer among the ones asked for (one request in ten).
    paths = [f"/v1/customers/{cid}/view" for cid in ctx.data.http_ids]
    paths += [f"/v1/customers/{heavy}/view"] * max(1, len(paths) // 9)
    res = await interleaved(ctx, Plan("view_with_heavy", "random", paths), [("ours", ctx.stack.crm)])
    rps = median_of([r.rps for r in res["ours"]])
    ctx.report.add(
        Metric("heavy_view_rps", "view under load, 1 in 10 the heavy customer", "req/s", ">= 500", rps,
               passed=at_least(rps, 500), note=errors_note(res["ours"])),
    )  # fmt: skip
