"""GET /v1/customers/{id}/data-export: everything the CEM holds about one customer (GDPR articles
15 and 20): by their id, and what was kept under their address; nothing about anyone else."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cem.customer_data import customer_data, export_sections
from cxkit.events.payloads import CustomerCreated
from cxkit.testing import bearer

from .conftest import delivery, interaction, snapshot
from .test_address_links import FOLDED_OTHERWISE_IN_SQL
from .test_customer_events import merged


async def test_the_export_holds_the_customer_s_rows_and_what_was_kept_under_their_address(
    client: httpx.AsyncClient, make: Any, apply: Any, keys: dict[str, str], session_factory: Any
) -> None:
    cid = await make.customer(name="Ada")
    email = f"{cid.hex[:8]}@example.com"
    stranger = await make.customer()
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"], customer_id=str(cid))
    answer = await make.answer(survey["id"], {"nps": 3, "reason": "Slow delivery"}, customer_id=str(cid))
    theirs = await make.answer(survey["id"], {"nps": 10, "reason": "someone else's words"}, customer_id=str(stranger))
    feedback = await client.post(
        "/v1/feedback", json={"channel": "email", "text": "Where is my parcel?", "customer_id": str(cid)}
    )
    assert feedback.status_code == 201, feedback.text
    await apply(interaction(cid, touchpoint="checkout"))
    # A suppression kept under her address alone (as before the CRM announced her).
    async with session_factory() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO suppressions (id, survey_id, email, email_lower, origin, reason, created_at) "
                "VALUES (:id, :survey, :email, :email, 'trigger', 'opted_out', now())"
            ),
            {"id": uuid.uuid4(), "survey": uuid.UUID(survey["id"]), "email": email},
        )
    duplicate = await make.customer(name="Ada L.")
    await apply(merged(cid, duplicate))

    r = await client.get(f"/v1/customers/{cid}/data-export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"].startswith(f'attachment; filename="customer-{cid}-')
    export = r.json()
    assert (export["service"], export["customer_id"]) == ("cem-service", str(cid))
    sections = export["sections"]
    assert list(sections) == [s.name for s in export_sections()]
    assert customer_data().tables <= set(sections)

    assert {p["id"] for p in sections["customer_profiles"]} == {str(cid), str(duplicate)}
    assert [i["id"] for i in sections["invitations"]] == [invitation["id"]]
    assert [a["id"] for a in sections["responses"]] == [answer["id"]] and "Slow delivery" in r.text
    assert theirs["id"] not in r.text and "someone else" not in r.text
    assert [s["score"] for s in sections["scores"]] == [3]
    assert [f["id"] for f in sections["feedback"]] == [feedback.json()["id"]]
    assert [t["touchpoint"] for t in sections["touchpoint_interactions"]] == ["checkout"]
    assert [(s["customer_id"], s["email_lower"]) for s in sections["suppressions"]] == [(None, email)]
    assert len(sections["followups"]) == 1  # the detractor's follow-up
    assert [t["customer_id"] for t in sections["customer_experience_totals"]] == [str(cid)]

    assert (await client.get(f"/v1/customers/{duplicate}/data-export", follow_redirects=False)).status_code == 308
    missing = await client.get(f"/v1/customers/{uuid.uuid4()}/data-export")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/customers/{cid}/data-export", headers=bearer(keys["read"]))).status_code == 403
    assert (await client.get(f"/v1/customers/{cid}/data-export", headers=bearer(keys["revoked"]))).status_code == 401


@pytest.mark.parametrize("address", FOLDED_OTHERWISE_IN_SQL)
async def test_the_export_holds_what_was_given_under_an_address_sql_lowers_otherwise(
    address: str, client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    """Answers and feedback given under the address before the CRM announced its customer are in
    the customer's export: linked to them, or still kept under the address (found by it, as the
    CEM keys it, not by PostgreSQL's lower())."""
    email = address.format(marker=uuid.uuid4().hex[:10])
    survey = await make.survey("csat")
    answer = await make.answer(survey["id"], {"csat": 2}, email=email)
    r = await client.post("/v1/feedback", json={"email": email, "channel": "chat", "text": "Where is my parcel?"})
    assert r.status_code == 201, r.text
    feedback = r.json()
    customer = uuid.uuid4()
    await apply(delivery("customer.created", CustomerCreated(**snapshot(customer, email=email))))

    async def exported() -> dict[str, Any]:
        r = await client.get(f"/v1/customers/{customer}/data-export")
        assert r.status_code == 200, r.text
        sections: dict[str, Any] = r.json()["sections"]
        return sections

    sections = await exported()
    assert [(a["id"], a["customer_id"]) for a in sections["responses"]] == [(answer["id"], str(customer))]
    assert [(f["id"], f["customer_id"]) for f in sections["feedback"]] == [(feedback["id"], str(customer))]
    # Kept under the address without a customer (as if the link had missed them): found by it.
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE responses SET customer_id = NULL WHERE id = :id"), {"id": uuid.UUID(answer["id"])})
        await session.execute(text("UPDATE feedback SET customer_id = NULL WHERE id = :id"), {"id": uuid.UUID(feedback["id"])})
    sections = await exported()
    assert [(a["id"], a["email"]) for a in sections["responses"]] == [(answer["id"], email)]
    assert [(f["id"], f["email"]) for f in sections["feedback"]] == [(feedback["id"], email)]
