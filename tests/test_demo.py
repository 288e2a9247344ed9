"""`make demo` (`crm seed-demo`) against both services as processes: a small world goes in
through the public APIs and outside-system events, every analytics answer then has data, and a
second run (through the `cem seed-demo` command) adds nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from cxkit.demo import KINDS, Target, fill
from cxkit.dev_broker import DevBroker
from cxkit.testing import wait_for

pytestmark = pytest.mark.e2e


async def test_the_demo_fills_every_view_once(stack_factory: Any, broker: DevBroker) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    assert stack.crm is not None and stack.cem is not None
    target = Target(crm_url=stack.crm.url, cem_url=stack.cem.url, api_key=stack.key, kafka_bootstrap=broker.bootstrap)
    anchor = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)

    first = await fill(target, 40, anchor)
    for kind in (
        "customers",
        "leads",
        "deals",
        "stage changes",
        "interactions",
        "outside events",
        "surveys",
        "invitations",
        "responses",
        "opt-outs",
    ):
        assert first.created[kind] > 0, kind
    assert first.created["customers"] == 40

    async with stack.crm_client() as crm, stack.cem_client() as cem:
        # Interactions are spread over 90 days, some of them from outside systems.
        interactions = (await crm.get("/v1/interactions", params={"limit": 200})).json()["items"]
        times = sorted(dt.datetime.fromisoformat(i["occurred_at"]) for i in interactions)
        assert times[-1] - times[0] > dt.timedelta(days=45)
        funnel = (await crm.get("/v1/funnel")).json()
        assert sum(s["open_count"] for s in funnel["stages"]) > 0
        for metric in ("nps", "csat", "ces"):
            report = (await cem.get(f"/v1/analytics/{metric}", params={"interval": "month"})).json()
            assert report["n"] > 0 and report["score"] is not None and report["series"], (metric, report)
        touchpoints = (await cem.get("/v1/analytics/touchpoints")).json()["items"]
        assert sum(t["interactions"] for t in touchpoints) > 0 and sum(t["responses"] for t in touchpoints) > 0
        assert (await cem.get("/v1/feedback")).json()["items"]

        async def recovery() -> Any:
            # The CEM hears of the follow-ups done from the CRM's task.completed events.
            report = (await cem.get("/v1/analytics/recovery")).json()
            return report["detractors"] > 0 and report["followed_up"] > 0 and report["answered_again"] > 0 and report

        assert await wait_for(recovery, timeout=20)
        assert (await cem.get("/v1/analytics/suppressions")).status_code == 200
        # A few recipients unsubscribed from a survey mail's link: listed, counted, and opted out in the CRM too.
        assert first.created["opt-outs"] > 0
        opted_out = (await cem.get("/v1/opt-outs", params={"limit": 200})).json()["items"]
        assert len(opted_out) == first.created["opt-outs"]
        assert (await cem.get("/v1/analytics/suppressions")).json()["opt_outs"] == len(opted_out)

        async def crm_knows() -> bool:
            flags = [(await crm.get(f"/v1/customers/{o['customer_id']}")).json()["survey_opt_out"] for o in opted_out]
            return all(flags)

        assert await wait_for(crm_knows, timeout=20)
        counts_before = await _totals(crm, cem)

        # Again, through the command line this time (the other service's: both have it).
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("cem")), "seed-demo", "--customers", "40", "--anchor", anchor.isoformat(),
            "--crm-url", target.crm_url, "--cem-url", target.cem_url, "--api-key", target.api_key,
            "--kafka-bootstrap", target.kafka_bootstrap,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await asyncio.wait_for(proc.communicate(), timeout=300))[0].decode()
        assert proc.returncode == 0, out
        created = {kind: int(n) for kind, n, _ in re.findall(r"^  (\w[\w -]*?) +(\d+) +(\d+)$", out, re.M)}
        assert set(created) == set(KINDS), out
        assert not any(created.values()), out
        assert re.search(r"^  customers +0 +40$", out, re.M), out
        assert "created in all: 0" in out
        assert await _totals(crm, cem) == counts_before


async def test_seed_demo_says_what_it_misses(tmp_path: Path) -> None:
    """No key given and none where `make run` keeps it; then a stack that is not there: one line
    each and exit code 1, no traceback."""
    crm_cli = str(Path(sys.executable).with_name("crm"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for args, says in (
        (["--var-dir", str(tmp_path)], "no API key given"),
        (
            [
                "--var-dir",
                str(tmp_path),
                "--api-key",
                "cx_x",
                "--crm-url",
                "http://127.0.0.1:9",
                "--cem-url",
                "http://127.0.0.1:9",
            ],
            "is `make run` up?",
        ),
    ):
        proc = await asyncio.create_subprocess_exec(
            crm_cli, "seed-demo", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 1, (out, err)
        assert says in err.decode() and "Traceback" not in err.decode(), err


async def _count(client: Any, path: str, **params: Any) -> int:
    total, cursor = 0, None
    while True:
        page = (await client.get(path, params={"limit": 200, **params, **({"cursor": cursor} if cursor else {})})).json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


async def _totals(crm: Any, cem: Any) -> dict[str, int]:
    return {
        "customers": await _count(crm, "/v1/customers"),
        "leads": await _count(crm, "/v1/leads"),
        "deals": await _count(crm, "/v1/deals"),
        "interactions": await _count(crm, "/v1/interactions"),
        "tasks": await _count(crm, "/v1/tasks"),
        "responses": await _count(cem, "/v1/responses"),
        "feedback": await _count(cem, "/v1/feedback"),
        "surveys": await _count(cem, "/v1/surveys"),
    }
