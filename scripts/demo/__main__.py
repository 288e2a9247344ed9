"""`make demo` / `python -m scripts.demo [--customers N]`: fills the stack `make run` started.
Finds it like `make run` prints it: CRM_URL / CEM_URL / KAFKA_BOOTSTRAP default to the ports of
CRM_PORT / CEM_PORT / KAFKA_PORT (8001, 8002, 9092), API_KEY to var/dev-api-key."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from pathlib import Path

from scripts.demo.fill import DemoError, Filler, Tally, Target
from scripts.demo.world import build

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
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


def target_from_env() -> Target:
    key = os.environ.get("API_KEY")
    if not key:
        key_file = VAR / "dev-api-key"
        if not key_file.exists():
            raise DemoError("no API_KEY and no var/dev-api-key: start the stack with `make run` first")
        key = key_file.read_text().strip()
    return Target(
        crm_url=os.environ.get("CRM_URL", f"http://127.0.0.1:{os.environ.get('CRM_PORT', '8001')}"),
        cem_url=os.environ.get("CEM_URL", f"http://127.0.0.1:{os.environ.get('CEM_PORT', '8002')}"),
        api_key=key,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"),
    )


def anchor_of(value: str | None) -> dt.datetime:
    """The end of the 90 days of history. Kept in var/demo-anchor (next to the data in var/pgdata)
    so that later runs send the very same requests as the first and recognise what it made."""
    if value:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    anchor_file = VAR / "demo-anchor"
    if anchor_file.exists():
        return dt.datetime.fromisoformat(anchor_file.read_text().strip())
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    VAR.mkdir(exist_ok=True)
    anchor_file.write_text(now.isoformat() + "\n")
    return now


async def fill(target: Target, customers: int, anchor: dt.datetime, seed: int = 7, concurrency: int = 8) -> Tally:
    return await Filler(target, build(customers, anchor, seed), concurrency).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--customers", type=int, default=500, help="how many customers (default 500)")
    parser.add_argument("--seed", type=int, default=7, help="random seed: the same seed makes the same world")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    parser.add_argument("--anchor", help="end of the 90 days of history, ISO date-time (default: var/demo-anchor, else now)")
    args = parser.parse_args(argv)
    try:
        target = target_from_env()
        anchor = anchor_of(args.anchor)
        print(
            f"demo: {args.customers} customers, 90 days up to {anchor:%Y-%m-%d %H:%M}Z, into {target.crm_url}, {target.cem_url}"
        )
        started = time.monotonic()
        tally = asyncio.run(fill(target, args.customers, anchor, args.seed, args.concurrency))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - started:.0f}s")
    print(f"  {'':<16}{'created':>9}{'already there':>15}")
    for kind in KINDS:
        print(f"  {kind:<16}{tally.created[kind]:>9}{tally.existing[kind]:>15}")
    print(f"  follow-up tasks made by the CRM from detractors' answers: {tally.existing['follow-ups']}")
    print(f"  created in all: {sum(tally.created[k] for k in KINDS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
