"""`crm api-keys`: the real commands in a child process, against the test database."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx

from cxkit import testing
from cxkit.http.auth import hash_key

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


async def test_create_with_a_given_key_is_refused_when_that_key_is_revoked_expired_or_scoped_otherwise(
    crm_database_url: str,
) -> None:
    """`--key` on a key that exists answers it again only if it is usable as asked (what
    `make run` relies on to make sure of its dev key); a revoked or expired key, or one with other
    scopes, is an error that says what to do, and the key is left as it was (never un-revoked,
    extended or widened by a create)."""
    key = f"cx_cli_{uuid.uuid4().hex}"
    code, out, err = await crm(crm_database_url, "create", "--name", "dev", "--scopes", "read", "--key", key)
    assert code == 0 and out.strip() == key, err
    code, out, err = await crm(crm_database_url, "create", "--name", "dev", "--scopes", "read", "--key", key)
    assert code == 0 and out.strip() == key, err  # the same key as asked: nothing to do

    code, out, err = await crm(crm_database_url, "create", "--name", "dev", "--scopes", "write,admin", "--key", key)
    assert code == 1 and out == "", (code, out, err)
    assert "scopes read" in err and "admin,write" in err and "api-keys revoke" in err, err

    assert (await crm(crm_database_url, "revoke", key[:10]))[0] == 0
    code, out, err = await crm(crm_database_url, "create", "--name", "dev", "--scopes", "read", "--key", key)
    assert code == 1 and out == "" and "revoked" in err and "another key" in err, (code, out, err)

    expired = f"cx_cli_{uuid.uuid4().hex}"
    assert (await crm(crm_database_url, "create", "--name", "dev", "--key", expired))[0] == 0
    await testing.db_rows(
        crm_database_url, "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE key_hash = $1", hash_key(expired)
    )
    code, out, err = await crm(crm_database_url, "create", "--name", "dev", "--key", expired)
    assert code == 1 and out == "" and "expired" in err, (code, out, err)

    [row] = await testing.db_rows(
        crm_database_url, "SELECT revoked_at IS NOT NULL, scopes::text FROM api_keys WHERE key_hash = $1", hash_key(key)
    )
    revoked_at, scopes = row
    assert revoked_at and scopes == '["read"]'  # left as it was
