"""`crm api-keys`: the real commands in a child process, against the test database."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx

from .conftest import crm_command


async def crm(database_url: str, *args: str) -> tuple[int, str, str]:
    return await crm_command(database_url, "api-keys", *args)


async def test_a_key_made_with_an_expiry_works_until_then_and_the_list_shows_it(crm_database_url: str, crm_app: Any) -> None:
    name = f"partner-{uuid.uuid4().hex[:6]}"
    code, out, err = await crm(crm_database_url, "create", "--name", name, "--scopes", "read", "--expires-in-days", "30")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("cx_") and "refused from" in err
    until = dt.datetime.fromisoformat(err.split("refused from ")[1].split()[0])
    assert abs((until - dt.datetime.now(dt.UTC)).total_seconds() - 30 * 86_400) < 120

    transport = httpx.ASGITransport(app=crm_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm") as api:
        assert (await api.get("/v1/customers", headers={"Authorization": f"Bearer {key}"})).status_code == 200

    code, out, err = await crm(crm_database_url, "list")
    assert code == 0, err
    [line] = [row for row in out.splitlines() if name in row]
    assert until.isoformat()[:19] in line and "(expired)" not in line

    for bad in ("0", "-1", "soon"):
        code, _, err = await crm(crm_database_url, "create", "--name", name, "--expires-in-days", bad)
        assert code == 2, (bad, err)
