"""The admin CLI (`cxkit.cli.build_cli`, shared by `crm` and `cem`): a command whose database
cannot be reached says so in one line, naming the setting, and exits 1, without a traceback."""

from __future__ import annotations

import socket
import uuid

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from cem.config import CEMSettings
from cem.consumers import live_consumers
from cem.main import build_consumers

from .conftest import run_cem_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_command_whose_database_cannot_be_reached_says_so_in_one_line(cem_database_url: str) -> None:
    url = make_url(cem_database_url)
    missing = f"missing_{uuid.uuid4().hex[:8]}"
    for database_url, command, reason in (
        (url.set(database=missing), "rebuild-score-days", f'database "{missing}" does not exist'),
        (url.set(host="127.0.0.1", port=_free_port()), "migrate", "ConnectionRefusedError"),
        (url.set(username="nobody_here"), "api-keys", 'role "nobody_here" does not exist'),
    ):
        args = (command, "list") if command == "api-keys" else (command,)
        out = await run_cem_command(database_url.render_as_string(hide_password=False), *args, exit_code=1)
        assert "Traceback" not in out, out[-2000:]
        [line] = [line for line in out.splitlines() if line.strip()]
        assert line.startswith("cannot reach the database (CEM_DATABASE_URL): ") and reason in line, line


def test_the_dlq_commands_know_every_live_consumer_and_its_topics(cem_settings: CEMSettings, cem_app: FastAPI) -> None:
    built = build_consumers(cem_settings, cem_app.state.customer_data)(None)
    assert live_consumers(cem_settings) == {c.name: c.topics for c in built}
