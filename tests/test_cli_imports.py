"""The admin CLIs (`crm`, `cem`) load what a command runs when it runs. Importing the CLI, which
`--help` and every command do first, loads the models and the settings, not the web
application (FastAPI, the routers, the consumers, the scheduler), Alembic or the broker client:
`crm --help`, `crm api-keys list` and `cem outbox-requeue` start in about half the time they
took when the CLI imported all of it up front (1.2-1.5 s against 2.5-3.1 s here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Libraries only some commands need: each is imported inside the commands that use it.
LATE_LIBRARIES = ("fastapi", "starlette", "alembic", "aiokafka", "httpx", "scipy", "numpy", "rich.progress")


@pytest.mark.parametrize(
    ("cli", "service"),
    [("crm.cli", "crm"), ("cem.cli", "cem")],
)
def test_the_cli_starts_without_the_web_application_alembic_or_the_broker_client(cli: str, service: str) -> None:
    code = f"import json, sys, {cli}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    libraries = [lib for lib in LATE_LIBRARIES if any(name == lib or name.startswith(lib + ".") for name in loaded)]
    assert libraries == [], libraries
    own = sorted(name for name in loaded if name.startswith(f"{service}."))
    # The settings, the tables and the CLI itself; the CEM's settings read its follow-up policy.
    allowed = {f"{service}.cli", f"{service}.config", f"{service}.db", "cem.followups", "cem.followups.sla"}
    assert set(own) <= allowed, sorted(set(own) - allowed)


def test_every_command_is_still_listed() -> None:
    """The commands themselves are unchanged: each CLI lists the shared and its own."""
    for cli, own in (("crm", ("import-customers", "rebuild-interaction-stats")), ("cem", ("run-scheduler-once",))):
        out = subprocess.run([sys.executable, "-m", f"{cli}.cli", "--help"], check=True, capture_output=True, text=True).stdout
        for command in ("migrate", "api-keys", "outbox-requeue", "replay", "dlq", "seed-demo", *own):
            assert command in out, (cli, command, out)
