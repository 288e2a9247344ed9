"""GET /v1/customers/{id}/data-export: everything the CRM holds about one customer (GDPR articles
15 and 20), from every domain that owns customer data, and nothing about anyone else."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from crm.customer_data import customer_data, export_sections
from crm.customers.repository import EXPORT_SECTIONS
from cxkit.http.data_export import data_export
from cxkit.testing import bearer


def _ids(rows: list[dict[str, Any]], key: str = "id") -> set[str]:
    return {str(row[key]) for row in rows}


async def test_the_export_holds_the_customer_s_rows_of_every_domain_and_only_theirs(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, keys: dict[str, str], crm_app: FastAPI
) -> None:
    customer = await make.customer(name="Ada", email=f"ada-{uuid.uuid4().hex[:6]}@example.com")
    cid = customer["id"]
    stranger = (await make.customer())["id"]
    assert (await client.patch(f"/v1/customers/{cid}", json={"owner": "kim"})).status_code == 200
    call = await make.interaction(customer_id=cid, summary="Ada called")
    not_hers = await make.interaction(customer_id=stranger, summary="someone else")
    deal = await make.deal(cid, title="Ada's order", amount="100.00")
    await make.move(deal["id"], stage="Proposal")
    task = await make.task(cid, title="Call Ada")
    document = (
        await client.post("/v1/documents", data={"customer_id": cid}, files={"file": ("o.pdf", b"%PDF", "application/pdf")})
    ).json()
    campaign = await make.campaign()
    member = await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"customer_id": cid})
    assert member.status_code == 201, member.text
    lead = await make.lead(email=customer["email"].upper(), name="Ada as a lead")  # her address: hers
    await apply_cem(cem.response(uuid.UUID(cid), 9))
    duplicate = await make.customer(name="Ada L.", phone="+44 1")
    assert (await client.post(f"/v1/customers/{cid}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200

    r = await client.get(f"/v1/customers/{cid}/data-export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"].startswith(f'attachment; filename="customer-{cid}-')
    export = r.json()
    assert (export["service"], export["customer_id"]) == ("crm-service", cid)
    sections = export["sections"]
    assert list(sections) == [s.name for s in (*EXPORT_SECTIONS, *export_sections())]
    assert customer_data().tables <= set(sections)  # every table of a domain that owns customer data

    assert _ids(sections["customers"]) == {cid, duplicate["id"]}
    hers = next(c for c in sections["customers"] if c["id"] == cid)
    assert (hers["name"], hers["owner"], hers["email"]) == ("Ada", "kim", customer["email"])
    assert {c["via"] for c in sections["customer_changes"]} >= {"update", "merge"}
    assert _ids(sections["interactions"]) == {call["id"]} and not_hers["id"] not in r.text
    assert [row["interactions"] for row in sections["customer_interaction_stats"]] == [1]
    assert _ids(sections["deals"]) == {deal["id"]} and sections["deals"][0]["amount"] == "100.00"
    assert [c["to_stage"] for c in sections["deal_stage_changes"]] == ["Qualification", "Proposal"]
    assert _ids(sections["tasks"]) == {task["id"]}
    assert _ids(sections["documents"]) == {document["id"]}
    assert _ids(sections["campaign_members"], "customer_id") == {cid}
    assert _ids(sections["leads"]) == {lead["id"]}
    assert [e["kind"] for e in sections["experience_events"]] == ["survey.response.submitted"]

    # Read a row at a time, the document is the same.
    every = [*EXPORT_SECTIONS, *export_sections()]
    small = await data_export(crm_app.state.pg_pool, "crm-service", uuid.UUID(cid), every, chunk_rows=1)
    body = b"".join([chunk async for chunk in small.body_iterator])  # type: ignore[misc]
    assert orjson.loads(body)["sections"] == sections

    assert (await client.get(f"/v1/customers/{duplicate['id']}/data-export", follow_redirects=False)).status_code == 308
    missing = await client.get(f"/v1/customers/{uuid.uuid4()}/data-export")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/customers/{cid}/data-export", headers=bearer(keys["read"]))).status_code == 403
    assert (await client.get(f"/v1/customers/{cid}/data-export", headers=bearer(keys["revoked"]))).status_code == 401


async def test_an_erased_customer_s_export_shows_what_the_erasure_left(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(name="Grace Hopper", phone="+1 555 0100")
    cid = customer["id"]
    await make.interaction(customer_id=cid, summary="Grace asked about COBOL")
    assert (await client.delete(f"/v1/customers/{cid}")).status_code == 204
    r = await client.get(f"/v1/customers/{cid}/data-export")
    assert r.status_code == 200, r.text
    # (the whole phone number: a bare "555" can be part of an id or a time)
    assert "Grace" not in r.text and "COBOL" not in r.text and "+1 555 0100" not in r.text
    [record] = r.json()["sections"]["customers"]
    assert record["erased_at"] is not None and record["name"] is None
