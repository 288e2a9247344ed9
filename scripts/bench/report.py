"""The result: one row per SPEC §6 target (metric, target, ours, baseline, ratio, pass/fail),
printed as a table and written as JSON with the run's context and every round's figures."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


@dataclass
class Metric:
    key: str
    label: str
    unit: str  # req/s, ms, ev/s, rows/s, MB, s, x
    target: str  # as SPEC §6 words it, e.g. ">= 1,500"
    ours: float | None
    baseline: float | None = None
    baseline_name: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


@dataclass
class Report:
    metrics: list[Metric] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    rounds: dict[str, Any] = field(default_factory=dict)  # every measurement, per scenario

    def add(self, *metrics: Metric) -> None:
        self.metrics.extend(metrics)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.context,
            "passed": sum(1 for m in self.metrics if m.passed),
            "failed": sum(1 for m in self.metrics if m.passed is False),
            "metrics": [m.as_json() for m in self.metrics],
            "rounds": self.rounds,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.as_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))

    def print(self, console: Console) -> None:
        table = Table("metric", "target", "ours", "baseline", "ratio", "result", title="SPEC §6 targets", title_justify="left")
        for m in self.metrics:
            result = "-" if m.passed is None else "[green]pass[/green]" if m.passed else "[red]FAIL[/red]"
            baseline = f"{_fmt(m.baseline, m.unit)} ({m.baseline_name})" if m.baseline is not None else "-"
            ratio = "-" if m.ratio is None else f"{m.ratio:.2f}x" if m.ratio >= 0.1 else f"{m.ratio:.4f}x"
            target = f"{m.target} {m.unit}" if m.target[-1:].isdigit() else m.target
            table.add_row(m.label, target, _fmt(m.ours, m.unit), baseline, ratio, result)
        console.print(table)
        console.print("  ratio = ours / baseline; each figure is the median of the rounds (all rounds in the JSON)")
        notes = [m for m in self.metrics if m.note]
        for m in notes:
            console.print(f"  * {m.label}: {m.note}")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("ms", "s", "x"):
        return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_mb": mem_kb // 1024,
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
