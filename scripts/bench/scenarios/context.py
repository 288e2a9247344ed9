"""What the scenarios share: the context, the interleaved ours/baseline runs, memory samples."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from dataclasses import asdict, dataclass, field

import asyncpg
from scripts.bench.config import BenchConfig
from scripts.bench.database import PgServer
from scripts.bench.loadgen import LoadGenerator, LoadResult, Plan
from scripts.bench.report import Metric, Report, at_most
from scripts.bench.seed import SeededData
from scripts.bench.stack import Stack, UvicornProcess, rss_mb


@dataclass
class BenchContext:
    """Everything the scenarios share."""

    cfg: BenchConfig
    server: PgServer
    crm_db: str
    cem_db: str
    stack: Stack
    loadgen: LoadGenerator
    data: SeededData
    key: str
    report: Report
    crm: asyncpg.Connection  # watching the CRM database
    cem: asyncpg.Connection  # watching the CEM database
    rss: dict[str, list[float]] = field(default_factory=lambda: {"crm-service": [], "cem-service": []})
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    def sample_rss(self) -> None:
        for proc in self.stack.services:
            self.rss[proc.name].append(rss_mb(proc.pid))

    async def settle(self, limit_s: float = 120) -> None:
        """Until both relays have sent everything and the pages the scenario dirtied are written
        (`checkpoint`), so the next scenario does not pay for the last one."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            unsent = [await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") for conn in (self.crm, self.cem)]
            if not any(unsent):
                break
            await asyncio.sleep(0.5)
        await checkpoint(self.crm)
        await asyncio.sleep(1)


async def checkpoint(conn: asyncpg.Connection) -> None:
    """Write out the server's dirty pages now (CHECKPOINT). A bulk write (seeding, ingest, an
    import) leaves PostgreSQL with a backlog of WAL-triggered checkpoints; left alone, their
    writes and the full-page images after each one fall on the next scenario (PATCHes stalled
    for 100-300 ms every few seconds of the paced write -> view run while the checkpoints that
    the seed had started went on). Skipped
    for a role not allowed to checkpoint (superuser or pg_checkpoint)."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


def median_of(values: list[float]) -> float:
    return statistics.median(values)


def errors_note(results: list[LoadResult]) -> str:
    errors = sum(r.errors for r in results)
    return f"{errors} failed requests" if errors else ""


async def interleaved(
    ctx: BenchContext, plan: Plan, targets: list[tuple[str, UvicornProcess]], connections: int | None = None
) -> dict[str, list[LoadResult]]:
    """Warm each target up, then `rounds` x (each target in turn)."""
    cfg = ctx.cfg
    conns = connections or cfg.connections
    threads = 1 if conns == 1 else cfg.threads
    if cfg.warmup_seconds > 0:
        for _, proc in targets:
            await ctx.loadgen.run(plan, proc.url, cfg.warmup_seconds, conns, threads)
    results: dict[str, list[LoadResult]] = {name: [] for name, _ in targets}
    for _ in range(cfg.rounds):
        for name, proc in targets:
            results[name].append(await ctx.loadgen.run(plan, proc.url, cfg.seconds, conns, threads))
    ctx.report.rounds[plan.name] = {name: [{**asdict(r), "rps": r.rps} for r in rs] for name, rs in results.items()}
    ctx.sample_rss()
    return results


def memory(ctx: BenchContext) -> None:
    ctx.sample_rss()
    for name, samples in ctx.rss.items():
        peak = max(samples)
        short = name.split("-")[0]
        ctx.report.add(
            Metric(f"rss_{short}_mb", f"resident memory ({short}), peak", "MB", "<= 200", peak, passed=at_most(peak, 200),
                   note=f"sampled {len(samples)} times during the run: {', '.join(f'{s:.0f}' for s in samples)} MB"),
        )  # fmt: skip
    ctx.report.rounds["rss_mb"] = ctx.rss
