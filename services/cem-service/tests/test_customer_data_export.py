"""GET /v1/customers/{id}/data-export: everything the CEM holds about one customer (GDPR articles
15 and 20): by their id, and what was kept under their address; nothing about anyone else."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from cem.customer_data import customer_data, export_sections
from cxkit.testing import bearer

from .conftest import interaction
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
