"""Demo data: a small, realistic world poured into a running stack through the public APIs and
outside-system events (see `world` for what, `fill` for how). `crm seed-demo` and `cem
seed-demo` run it (`make demo` calls the first); a second run adds nothing."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cxkit.demo.fill import DemoError, Filler, Tally, Target
from cxkit.demo.world import build

__all__ = ["DEV_PORTS", "KINDS", "DemoError", "Tally", "Target", "anchor_of", "dev_port", "fill", "summary", "target_from"]

# The ports `make run` (scripts/dev_run.py) serves on, each overridden by its variable; the demo
# looks for the stack on the same ones.
DEV_PORTS = {"CRM_PORT": 8001, "CEM_PORT": 8002, "KAFKA_PORT": 9092, "PG_PORT": 5488}


KINDS = (
    "customers",
    "leads",
    "conversions",
    "deals",
    "stage changes",
    "interactions",
    "outside events",
    "tasks",
    "touchpoints",
    "journeys",
    "surveys",
    "invitations",
    "responses",
    "feedback",
    "opt-outs",
    "follow-ups done",
)


def dev_port(name: str) -> int:
    """A `make run` port: the variable `name` (one of DEV_PORTS) if set, else its default."""
    return int(os.environ.get(name) or DEV_PORTS[name])


def target_from(
    var_dir: Path,
    *,
    crm_url: str | None = None,
    cem_url: str | None = None,
    api_key: str | None = None,
    kafka_bootstrap: str | None = None,
) -> Target:
    """The stack to fill, found as `make run` prints it: what is given, else API_KEY / CRM_URL /
    CEM_URL / KAFKA_BOOTSTRAP, else `make run`'s ports on this machine (`dev_port`: CRM_PORT,
    CEM_PORT, KAFKA_PORT) and the key it wrote to var/dev-api-key."""
    key = api_key or os.environ.get("API_KEY")
    if not key:
        key_file = var_dir / "dev-api-key"
        if not key_file.exists():
            raise DemoError(f"no API key given, no API_KEY and no {key_file}: start the stack with `make run` first")
        key = key_file.read_text().strip()
    return Target(
        crm_url=crm_url or os.environ.get("CRM_URL") or f"http://127.0.0.1:{dev_port('CRM_PORT')}",
        cem_url=cem_url or os.environ.get("CEM_URL") or f"http://127.0.0.1:{dev_port('CEM_PORT')}",
        api_key=key,
        kafka_bootstrap=kafka_bootstrap or os.environ.get("KAFKA_BOOTSTRAP") or f"127.0.0.1:{dev_port('KAFKA_PORT')}",
    )


def anchor_of(value: str | None, var_dir: Path) -> dt.datetime:
    """The end of the 90 days of history: `value` (ISO date-time, UTC when it names no zone), else
    the one kept in var/demo-anchor (next to the data in var/pgdata), so that later runs send the
    very same requests as the first and recognise what it made; else now, kept there."""
    if value:
        anchor = dt.datetime.fromisoformat(value)
        return anchor.replace(tzinfo=dt.UTC) if anchor.tzinfo is None else anchor.astimezone(dt.UTC)
    anchor_file = var_dir / "demo-anchor"
    if anchor_file.exists():
        return dt.datetime.fromisoformat(anchor_file.read_text().strip())
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    var_dir.mkdir(parents=True, exist_ok=True)
    anchor_file.write_text(now.isoformat() + "\n")
    return now


async def fill(target: Target, customers: int, anchor: dt.datetime, seed: int = 7, concurrency: int = 8) -> Tally:
    return await Filler(target, build(customers, anchor, seed), concurrency).run()


def summary(tally: Tally, took_s: float) -> str:
    """What was created and what was there already, kind by kind."""
    lines = [f"done in {took_s:.0f}s", f"  {'':<16}{'created':>9}{'already there':>15}"]
    lines += [f"  {kind:<16}{tally.created[kind]:>9}{tally.existing[kind]:>15}" for kind in KINDS]
    lines.append(f"  follow-up tasks made by the CRM from detractors' answers: {tally.existing['follow-ups']}")
    lines.append(f"  created in all: {sum(tally.created[k] for k in KINDS)}")
    return "\n".join(lines)
