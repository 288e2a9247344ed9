"""The whole run: fresh databases, seed, the stack, every scenario, the report."""

from __future__ import annotations

import asyncio
import gc
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import asyncpg
from rich.console import Console
from scripts.bench import scenarios
from scripts.bench.bare_app import seed_bare_tables
from scripts.bench.config import BenchConfig
from scripts.bench.database import PgServer, connect, drop_database, migrate, open_server, recreate_database
from scripts.bench.loadgen import LoadGenerator
from scripts.bench.report import Metric, Report, machine
from scripts.bench.seed import add_api_key, create_survey, seed_customers, seed_responses
from scripts.bench.stack import Stack

Scenario = Callable[[scenarios.BenchContext], Awaitable[None]]
# In this order: the import and the ingest add rows, so they come after the reads.
SCENARIOS: list[tuple[str, Scenario, list[str]]] = [
    ("GET /v1/customers/{id}", scenarios.get_customer, ["get_customer_rps", "get_customer_p99", "get_customer_vs_bare"]),
    ("GET /v1/customers/{id}/view", scenarios.customer_view, ["view_rps", "view_p99"]),
    ("POST /v1/interactions", scenarios.post_interactions, ["post_interactions_rps", "post_interactions_p99"]),
    ("search", scenarios.search, [f"search_{k}_p95" for k in ("common", "rare", "no_match", "email_substring")]),
    ("duplicates", scenarios.duplicates, [f"duplicates_{k}_p95" for k in ("common", "rare", "random")]),
    (
        "customer list sorted",
        scenarios.sorted_lists,
        [f"list_by_{k}_{p}_p95" for k in ("name", "email", "desc_name") for p in ("first", "deep")],
    ),
    ("open tasks", scenarios.open_tasks, ["tasks_open_p95", "tasks_overdue_p95", "tasks_rep_open_p95"]),
    ("open deals", scenarios.open_deals, ["deals_forecast_p95"]),
    ("NPS series and experience reports", scenarios.nps_series, ["nps_week_ms", "touchpoints_report_ms", "drivers_report_ms"]),
    ("CRM write -> CEM view", scenarios.write_visible, ["write_visible_p50", "write_visible_p99"]),
    (
        "heavy customer",
        scenarios.heavy_customer,
        [
            "heavy_view_ms",
            "heavy_timeline_first_ms",
            "heavy_timeline_deep_ms",
            "heavy_interactions_first_ms",
            "heavy_interactions_deep_ms",
            "heavy_cem_experience_ms",
            "heavy_view_rps",
        ],
    ),
    ("ingest", scenarios.ingest, [f"ingest_{s}_{m}" for s in ("crm", "cem") for m in ("eps", "vs_raw")] + ["ingest_overlap_s"]),
    ("import", scenarios.import_customers, ["import_rows_per_s"]),
]


class Clock:
    """Named phase durations, printed as they end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, bucket: str) -> Iterator[None]:
        self.console.print(f"[bold]-> {name}[/bold]")
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.phases[bucket] = self.phases.get(bucket, 0.0) + elapsed
            self.console.print(f"   {name}: {elapsed:.1f} s")


async def _vacuum(server: PgServer, database: str) -> None:
    conn = await connect(server.dsn(database))
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def run(cfg: BenchConfig, console: Console) -> Report:
    # A misspelt BENCH_ONLY is told before the seeding, not after it.
    unknown = set(cfg.only) - {scenario.__name__ for _, scenario, _ in SCENARIOS}
    if unknown:
        known = ", ".join(scenario.__name__ for _, scenario, _ in SCENARIOS)
        raise SystemExit(f"BENCH_ONLY names no scenario: {', '.join(sorted(unknown))} (known: {known})")
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    clock = Clock(console)
    loadgen = LoadGenerator(cfg.work_dir, "", cfg.loadgen)
    console.print(f"load generator: {loadgen.description}")
    info = machine()
    console.print(f"machine: {info['nproc']} CPUs, {info['memory_mb']:,} MB memory, load {info['load_average'][0]:.2f}")
    server = await open_server(cfg)
    console.print(f"PostgreSQL {server.version}: {server.kind}")
    crm_db, cem_db = f"{cfg.db_prefix}_crm", f"{cfg.db_prefix}_cem"
    stack: Stack | None = None
    conns: list[asyncpg.Connection] = []
    started = time.perf_counter()
    try:
        with clock.phase("fresh databases, migrations", "setup"):
            await asyncio.gather(recreate_database(server, crm_db), recreate_database(server, cem_db))
            await asyncio.gather(
                migrate("crm", "CRM", server.sqlalchemy_url(crm_db)), migrate("cem", "CEM", server.sqlalchemy_url(cem_db))
            )
        crm, cem = await connect(server.dsn(crm_db)), await connect(server.dsn(cem_db))
        conns += [crm, cem]
        key = "cx_bench_" + secrets.token_urlsafe(24)
        with clock.phase(f"seed {cfg.customers:,} customers (CRM + CEM projection) and interactions", "seed"):
            data = await seed_customers(crm, cem, cfg.customers, cfg.http_ids)
            for conn in (crm, cem):
                await add_api_key(conn, key)
            await seed_bare_tables(crm)
        stack = Stack(cfg.work_dir, server.sqlalchemy_url(crm_db), server.sqlalchemy_url(cem_db), server.dsn(crm_db))
        with clock.phase("broker, crm-service, cem-service, bare app (until /ready)", "setup"):
            await asyncio.to_thread(stack.start)
        with clock.phase(f"seed a survey and {cfg.responses:,} answers, VACUUM ANALYZE, CHECKPOINT", "seed"):
            data.survey_id, template_id = await create_survey(stack.cem.url, key)
            cem_b = await connect(server.dsn(cem_db))
            conns.append(cem_b)
            data.responses = await seed_responses((cem, cem_b), data.survey_id, template_id, data.customer_ids, cfg.responses)
            await asyncio.gather(_vacuum(server, crm_db), _vacuum(server, cem_db))
            await scenarios.checkpoint(crm)
        loadgen.auth = f"Bearer {key}"
        # The seeded ids (hundreds of thousands of objects) stay for the whole run: out of the
        # collector's reach, so a full collection in this process does not stall a paced
        # scenario's client mid-measurement (a 250 ms pause showed as a burst of slow PATCHes).
        gc.collect()
        gc.freeze()
        ctx = scenarios.BenchContext(cfg, server, crm_db, cem_db, stack, loadgen, data, key, report, crm, cem)
        ctx.sample_rss("the seed")
        for name, scenario, keys in SCENARIOS:
            if cfg.only and scenario.__name__ not in cfg.only:
                continue
            with clock.phase(name, "measure"):
                try:
                    await scenario(ctx)
                except Exception as exc:  # one broken scenario must not hide the others' figures
                    console.print(f"[red]{name} failed: {exc!r}[/red]")
                    traceback.print_exc()
                    done = {m.key for m in report.metrics}
                    report.add(*(Metric(k, k, "", "", None, passed=False, note=f"error: {exc!r}") for k in keys if k not in done))
                # Each scenario starts from a settled server: the relays drained, the last one's
                # dirty pages written (a bulk seed's checkpoints otherwise fall on the next one).
                await ctx.settle()
        scenarios.memory(ctx)
    finally:
        for conn in conns:
            await conn.close()
        if stack is not None:
            await asyncio.to_thread(stack.stop)
        if cfg.drop_after:
            await asyncio.gather(drop_database(server, crm_db), drop_database(server, cem_db))
        server.stop()
    total = time.perf_counter() - started
    report.context = {
        "load_generator": loadgen.description,
        "machine": info,
        "database": {"kind": server.kind, "version": server.version, "databases": [crm_db, cem_db]},
        "rows": {
            "customers": cfg.customers,
            "seeded_interactions": data.interactions,
            "survey_responses": data.responses,
            "events_per_ingest_round": cfg.events,
            "import_rows": cfg.import_rows,
        },
        "durations_s": {**clock.phases, "total": total},
        "config": cfg.as_json(),
    }
    return report


def main() -> int:
    console = Console(width=180, highlight=False)
    cfg = BenchConfig()
    report = asyncio.run(run(cfg, console))
    report.write(cfg.results_path)
    console.print()
    report.print(console)
    ctx = report.context
    d = ctx["durations_s"]
    passed = sum(1 for m in report.metrics if m.passed)
    failed = sum(1 for m in report.metrics if m.passed is False)
    console.print(
        f"\nload generator: {ctx['load_generator']}\n"
        f"machine: {ctx['machine']['nproc']} CPUs, {ctx['machine']['memory_mb']:,} MB; "
        f"PostgreSQL {ctx['database']['version']} ({ctx['database']['kind']})\n"
        f"rows: {cfg.customers:,} customers, {ctx['rows']['survey_responses']:,} survey responses, "
        f"{ctx['rows']['seeded_interactions']:,} seeded interactions; {cfg.events:,} events per ingest round\n"
        f"each HTTP figure: median of {cfg.rounds} rounds of {cfg.seconds:g} s at {cfg.connections} connections\n"
        f"durations: setup {d.get('setup', 0):.0f} s, seed {d.get('seed', 0):.0f} s, "
        f"measurements {d.get('measure', 0):.0f} s, total {d['total']:.0f} s\n"
        f"{passed} targets met, {failed} missed; JSON: {cfg.results_path}"
    )
    if d.get("seed", 0) > d.get("measure", 0):
        console.print("[yellow]seeding took longer than the measurements[/yellow]")
    return 0
