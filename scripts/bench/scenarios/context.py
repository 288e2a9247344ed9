"""What the scenarios share: the context, the interleaved ours/baseline runs, memory samples."""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import asyncpg
from scripts.bench.config import BenchConfig
from scripts.bench.database import PgServer
from scripts.bench.loadgen import LoadGenerator, LoadResult, Plan
from scripts.bench.report import Metric, Report, at_most
from scripts.bench.seed import SeededData
from scripts.bench.stack import Stack, UvicornProcess, cpu_s, machine_busy_s, rss_mb


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
    rss_after: list[str] = field(default_factory=list)  # what ran before each sample
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    def cpu_meter(self, commands: str | None = None, running: Iterable[int] = ()) -> CpuMeter:
        """A meter of the CPU each part of the machine uses from now (see `CpuMeter`)."""
        return CpuMeter(self.stack, commands, running).start()

    def sample_rss(self, after: str) -> None:
        """Each service's resident memory now, `after` what (a scenario, a load plan, a round)."""
        self.rss_after.append(after)
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


OTHERS = "PostgreSQL and the rest"


@dataclass
class CpuUse:
    """CPU seconds each part of the machine used over `wall_s` seconds: the services, the broker,
    the bench process itself, the commands it ran (e.g. the import), and what is left of the
    machine's busy time (PostgreSQL above all)."""

    wall_s: float
    parts: dict[str, float]

    @property
    def busy_s(self) -> float:
        return sum(self.parts.values())

    def describe(self, per: int | None = None) -> str:
        """`name 1.2, ...` in CPU-seconds, or in microseconds per item when `per` items were done."""
        scale, unit = (1e6 / per, " µs") if per else (1.0, " s")
        shown = ", ".join(f"{name} {value * scale:,.1f}" for name, value in self.parts.items())
        return f"{self.busy_s * scale:,.1f}{unit} ({shown})"

    @staticmethod
    def median(uses: list[CpuUse]) -> CpuUse:
        return CpuUse(median_of([u.wall_s for u in uses]), {k: median_of([u.parts[k] for u in uses]) for k in uses[0].parts})


class CpuMeter:
    """What each part of the machine uses between `start()` and `stop()` (Linux /proc and
    getrusage). `commands` names the CPU of the child processes the bench reaped in between (the
    import command, the raw consumers), less what those among them already running at the
    start (`running`, their pids) had used by then; without a name, that goes to the rest."""

    def __init__(self, stack: Stack, commands: str | None = None, running: Iterable[int] = ()) -> None:
        self._stack = stack
        self._commands = commands
        self._running = list(running)
        self._start: dict[str, float] = {}
        self._started = 0.0

    def _sample(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        sample = {proc.name: cpu_s(proc.pid) for proc in self._stack.services}
        broker = self._stack.broker.pid
        sample["broker"] = cpu_s(broker) if broker is not None else 0.0
        sample["bench"] = own.ru_utime + own.ru_stime
        if self._commands is not None:
            sample[self._commands] = children.ru_utime + children.ru_stime
        sample["machine"] = machine_busy_s()
        return sample

    def start(self) -> CpuMeter:
        self._start = self._sample()
        if self._commands is not None:
            self._start[self._commands] += sum(cpu_s(pid) for pid in self._running)
        self._started = time.perf_counter()
        return self

    def stop(self) -> CpuUse:
        wall = time.perf_counter() - self._started
        end = self._sample()
        used = {name: max(end[name] - self._start[name], 0.0) for name in end}
        machine = used.pop("machine")
        used[OTHERS] = max(machine - sum(used.values()), 0.0)
        return CpuUse(wall, used)


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
    ctx: BenchContext,
    plan: Plan,
    targets: list[tuple[str, UvicornProcess]],
    connections: int | None = None,
    seconds: float | None = None,
) -> dict[str, list[LoadResult]]:
    """Warm each target up, then `rounds` x (each target in turn), each round `seconds` long
    (BENCH_SECONDS unless told, and never longer)."""
    cfg = ctx.cfg
    conns = connections or cfg.connections
    length = cfg.seconds if seconds is None else min(seconds, cfg.seconds)
    threads = 1 if conns == 1 else cfg.threads
    if cfg.warmup_seconds > 0:
        for _, proc in targets:
            await ctx.loadgen.run(plan, proc.url, cfg.warmup_seconds, conns, threads)
    results: dict[str, list[LoadResult]] = {name: [] for name, _ in targets}
    for _ in range(cfg.rounds):
        for name, proc in targets:
            results[name].append(await ctx.loadgen.run(plan, proc.url, length, conns, threads))
    ctx.report.rounds[plan.name] = {name: [{**asdict(r), "rps": r.rps} for r in rs] for name, rs in results.items()}
    ctx.sample_rss(plan.name)
    return results


def memory(ctx: BenchContext) -> None:
    ctx.sample_rss("the end")
    for name, samples in ctx.rss.items():
        peak = max(samples)
        short = name.split("-")[0]
        after = ctx.rss_after[samples.index(peak)]
        ctx.report.add(
            Metric(f"rss_{short}_mb", f"resident memory ({short}), peak", "MB", "<= 200", peak, passed=at_most(peak, 200),
                   note=f"the peak after {after}; sampled {len(samples)} times during the run: "
                   f"{', '.join(f'{s:.0f}' for s in samples)} MB"),
        )  # fmt: skip
    ctx.report.rounds["rss_mb"] = ctx.rss
    ctx.report.rounds["rss_sampled_after"] = ctx.rss_after
