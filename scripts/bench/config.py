"""The bench's knobs, all from the environment (`BENCH_*`), with the defaults SPEC §6 asks for."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOCAL_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _bool(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def _only() -> tuple[str, ...]:
    return tuple(n.strip() for n in os.environ.get("BENCH_ONLY", "").split(",") if n.strip())


def _responses() -> int:
    """The answers are for the NPS series alone: a run of other scenarios only (BENCH_ONLY)
    seeds none unless BENCH_RESPONSES says so, rather than spend a minute on a million rows."""
    only = _only()
    return _int("BENCH_RESPONSES", 1_000_000 if not only or "nps_series" in only else 0)


@dataclass(frozen=True)
class BenchConfig:
    customers: int = field(default_factory=lambda: _int("BENCH_N", 200_000))
    seconds: float = field(default_factory=lambda: _float("BENCH_SECONDS", 10))
    rounds: int = field(default_factory=lambda: max(1, _int("BENCH_ROUNDS", 2)))
    connections: int = field(default_factory=lambda: _int("BENCH_CONNECTIONS", 32))
    threads: int = field(default_factory=lambda: _int("BENCH_THREADS", 2))
    warmup_seconds: float = field(default_factory=lambda: _float("BENCH_WARMUP_SECONDS", 2))
    events: int = field(default_factory=lambda: _int("BENCH_EVENTS", 100_000))
    ingest_timeout: float = field(default_factory=lambda: _float("BENCH_INGEST_TIMEOUT", 300))
    responses: int = field(default_factory=_responses)
    import_rows: int = field(default_factory=lambda: _int("BENCH_IMPORT_ROWS", 200_000))
    import_budget: float = field(default_factory=lambda: _float("BENCH_IMPORT_BUDGET", 60))
    pace_rate: float = field(default_factory=lambda: _float("BENCH_PACE_RATE", 200))
    pace_seconds: float = field(default_factory=lambda: _float("BENCH_PACE_SECONDS", 30))
    heavy_interactions: int = field(default_factory=lambda: _int("BENCH_HEAVY_INTERACTIONS", 200_000))
    nps_requests: int = field(default_factory=lambda: _int("BENCH_NPS_REQUESTS", 10))
    # Customers the HTTP scenarios spread their requests over (and that get seeded interactions).
    http_ids: int = field(default_factory=lambda: _int("BENCH_HTTP_IDS", 50_000))
    pg_dsn: str | None = field(default_factory=lambda: os.environ.get("BENCH_PG_DSN") or None)
    pg_embedded: bool = field(default_factory=lambda: _bool("BENCH_PG_EMBEDDED"))
    db_prefix: str = field(default_factory=lambda: os.environ.get("BENCH_DB_PREFIX", "bench"))
    drop_after: bool = field(default_factory=lambda: _bool("BENCH_DROP_AFTER"))
    loadgen: str = field(default_factory=lambda: os.environ.get("BENCH_LOADGEN", "auto"))  # auto | wrk | python
    work_dir: Path = field(default_factory=lambda: Path(os.environ.get("BENCH_DIR", ROOT / "var" / "bench")))
    # Comma-separated scenario names (get_customer, customer_view, post_interactions, search, duplicates, sorted_lists,
    # open_tasks, open_deals, nps_series, write_visible, heavy_customer, ingest, import_customers) to run only those; empty runs
    # every scenario.
    only: tuple[str, ...] = field(default_factory=_only)
    out: Path | None = field(default_factory=lambda: Path(os.environ["BENCH_OUT"]) if os.environ.get("BENCH_OUT") else None)

    @property
    def results_path(self) -> Path:
        return self.out or self.work_dir / "results.json"

    def as_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
