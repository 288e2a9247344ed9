"""Both services against their own OpenAPI documents, as an outside client meets them:
Schemathesis 4 with every check and every phase (examples, coverage, fuzzing, stateful), on
real processes with fresh databases. Bounded and repeatable: the settings (examples per
operation, stateful steps, a fixed seed, deterministic generation) are in
tests/schemathesis.toml, the hooks in tests/schemathesis_hooks.py.

The command, for a run by hand against `make run` (from the repository root):
    CX_API_KEY=<admin key> .venv/bin/schemathesis --config-file tests/schemathesis.toml run \\
        http://127.0.0.1:8001/openapi.json        # and :8002 for the CEM
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from cxkit.dev_broker import DevBroker

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
RUN_TIMEOUT_S = 480

# Only the HTTP API is under test: no relay, consumers or scheduler changing data behind the
# generator's back, and no rate limit turning a run's later requests into 429s. Loopback webhook
# targets are allowed: the hooks point the generated ones there (nothing resolves here). The one
# exception: the CEM's consumers, on a broker of the run's own that nothing else publishes to, so
# that the customer the hooks announce there reaches the CEM (it makes none itself) and its
# operations on a customer are reached.
QUIET = {
    f"{prefix}_{name}": value
    for prefix in ("CRM", "CEM")
    for name, value in {
        "RUN_RELAY": "false",
        "RUN_CONSUMERS": "false",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
    }.items()
} | {"CEM_RUN_SCHEDULER": "false", "CEM_RUN_CONSUMERS": "true"}


async def _schemathesis(url: str, key: str, out: Path, bootstrap: str) -> int:
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            cwd=ROOT,
            env={
                "PATH": str(SCHEMATHESIS.parent),
                "CX_API_KEY": key,
                "CX_KAFKA_BOOTSTRAP": bootstrap,
                "HOME": str(out.parent),
                "HYPOTHESIS_STORAGE_DIRECTORY": str(out.parent / ".hypothesis"),  # not in the work tree
                "NO_COLOR": "1",
            },
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            return await asyncio.wait_for(proc.wait(), RUN_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise


def _report(name: str, text: str, passed: bool) -> str:
    """The failures (when any) and the summary of one run."""
    start = text.find("=" * 10 + " FAILURES") if not passed else -1
    if start < 0:
        start = text.find("=" * 10 + " SUMMARY")
    return f"--- {name} ---\n" + (text[start:] if start >= 0 else text[-4000:])


@pytest.mark.e2e
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
async def test_both_services_keep_their_openapi_contract(stack_factory: Any, tmp_path: Path) -> None:
    broker = DevBroker(log_path=tmp_path / "broker.log")
    broker.start()
    try:
        stack = stack_factory(broker.bootstrap)
        stack.extra_env = QUIET
        crm, cem = stack.start()
        runs = {"crm-service": (crm.url, tmp_path / "crm.txt"), "cem-service": (cem.url, tmp_path / "cem.txt")}
        codes = await asyncio.gather(*(_schemathesis(url, stack.key, out, broker.bootstrap) for url, out in runs.values()))
        stack.stop()
    finally:
        broker.stop()

    texts = {name: out.read_text(errors="replace") for name, (_, out) in runs.items()}
    reports = [_report(name, texts[name], code == 0) for name, code in zip(texts, codes, strict=True)]
    print("\n".join(reports))
    assert codes == [0, 0], "\n".join(reports)
    for name, text in texts.items():
        # Every phase ran and tested something; nothing failed or errored.
        for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
            assert re.search(rf"✅\s+{phase} \(in ", text), f"{name}: {phase} phase did not pass:\n{text[-3000:]}"
        assert re.search(r"Scenarios:\s+[1-9]", text), f"{name}: no stateful scenario ran"
        # Subscriptions get made, so the stateful phase goes on to the operations on one.
        assert "POST /v1/webhooks appears to supply" not in text, f"{name}: no webhook was subscribed:\n{text[-3000:]}"
    # A body's customer_id names the run's customer (the hooks), so tasks get made and the
    # operations on one are reached.
    assert "POST /v1/tasks appears to supply" not in texts["crm-service"], texts["crm-service"][-3000:]
    # A token of the run's invitations goes to the respondent pages (the hooks), so they are
    # reached: before, every call met 404 ("POST /r/{token} appears to supply the data they need").
    assert "POST /r/{token} appears to supply" not in texts["cem-service"], texts["cem-service"][-3000:]
    # A customer announced to the CEM stands in a path's customer_id (the hooks), so its operations
    # on a customer are reached: before, each met only 404 ("Missing test data").
    for operation in ("GET /v1/customers/{customer_id}/experience", "GET /v1/customers/{customer_id}/data-export"):
        assert f"- {operation}\n" not in texts["cem-service"], texts["cem-service"][-3000:]
