"""Issue 5 end to end: both services as real processes, real PostgreSQL, real broker.
Interaction -> invitation (and a throttled second one; then withdrawn), detractor -> CRM task -> completed ->
recovery rate, an unsubscribe from a survey link, merge and erasure across the boundary."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from cxkit.dev_broker import DevBroker
from cxkit.testing import wait_for

pytestmark = pytest.mark.e2e


async def new_customer(crm: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"email": f"loop-{uuid.uuid4().hex[:10]}@example.com", "name": "Loop Customer", "owner": "sam@ourco.example", **fields}
    r = await crm.post("/v1/customers", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def known_to_cem(cem: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    async def probe() -> Any:
        r = await cem.get(f"/v1/customers/{customer_id}/experience")
        return r.json() if r.status_code == 200 else None

    return await wait_for(probe, timeout=15)


async def active_nps_survey(cem: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await cem.post("/v1/surveys", json={"name": f"NPS {uuid.uuid4().hex[:6]}", "kind": "nps", **fields})
    assert r.status_code == 201, r.text
    survey = r.json()
    r = await cem.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"}, headers={"If-Match": r.headers["etag"]})
    assert r.status_code == 200, r.text
    return r.json()


async def invitations_of(cem: httpx.AsyncClient, survey_id: str, customer_id: str) -> list[dict[str, Any]]:
    r = await cem.get(f"/v1/surveys/{survey_id}/invitations", params={"customer_id": customer_id})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def answer(
    cem: httpx.AsyncClient, survey_id: str, customer_id: str, score: int, comment: str | None = None
) -> dict[str, Any]:
    answers: dict[str, Any] = {"nps": score}
    if comment:
        answers["reason"] = comment
    r = await cem.post("/v1/responses", json={"survey_id": survey_id, "customer_id": customer_id, "answers": answers})
    assert r.status_code == 201, r.text
    return r.json()


async def test_interaction_invites_once_and_a_second_one_inside_the_throttle_window_is_throttled(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        customer = await new_customer(crm)
        await known_to_cem(cem, customer["id"])
        assert (await cem.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).status_code == 201
        survey = await active_nps_survey(
            cem, trigger={"interaction_type": "purchase", "touchpoint": "checkout", "delay_minutes": 0, "throttle_days": 30}
        )
        first = await crm.post(
            "/v1/interactions",
            json={
                "customer_id": customer["id"],
                "type": "purchase",
                "touchpoint": "checkout",
                "amount": "50.00",
                "currency": "EUR",
            },
        )
        assert first.status_code == 201, first.text
        invited = await wait_for(lambda: invitations_of(cem, survey["id"], customer["id"]), timeout=15)
        assert len(invited) == 1

        second = await crm.post(
            "/v1/interactions",
            json={
                "customer_id": customer["id"],
                "type": "purchase",
                "touchpoint": "checkout",
                "amount": "20.00",
                "currency": "EUR",
            },
        )
        assert second.status_code == 201

        async def throttled() -> Any:
            view = (await cem.get(f"/v1/customers/{customer['id']}/experience")).json()
            return [s for s in view.get("suppressions", []) if s["reason"] == "survey_throttle"]

        suppressed = await wait_for(throttled, timeout=15)
        assert suppressed[0]["survey_id"] == survey["id"]
        assert len(await invitations_of(cem, survey["id"], customer["id"])) == 1

        # The CRM learns both from cem.feedback.v1 and shows them on the customer's timeline.
        async def timeline_kinds() -> Any:
            items = (await crm.get(f"/v1/customers/{customer['id']}/timeline", params={"limit": 200})).json()["items"]
            kinds = {i.get("kind") or i.get("type") for i in items}
            return kinds if {"survey.invited", "survey.throttled"} <= kinds else None

        await wait_for(timeline_kinds, timeout=15)

        # Withdrawn on the CEM, the invitation shows as withdrawn on the CRM too.
        cancelled = await cem.post(f"/v1/invitations/{invited[0]['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text

        async def withdrawn() -> Any:
            params = {"kind": "survey.invitation_cancelled"}
            items = (await crm.get(f"/v1/customers/{customer['id']}/timeline", params=params)).json()["items"]
            return items or None

        [entry] = await wait_for(withdrawn, timeout=15)
        assert (entry["invitation_id"], entry["reason"], entry["survey_id"]) == (invited[0]["id"], "by_request", survey["id"])
        invitations = (await crm.get(f"/v1/customers/{customer['id']}/view")).json()["experience"]["invitations"]
        assert (invitations["sent"], invitations["cancelled"]) == (1, 1)


async def test_detractor_answer_makes_a_crm_task_and_completing_it_counts_as_recovery(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        customer = await new_customer(crm, owner="kim@ourco.example")
        await known_to_cem(cem, customer["id"])
        survey = await active_nps_survey(cem)
        await answer(cem, survey["id"], customer["id"], 3, "Delivery was late")

        async def followup_task() -> Any:
            r = await crm.get("/v1/tasks", params={"customer_id": customer["id"], "origin": "followup"})
            items = r.json()["items"] if r.status_code == 200 else []
            return items[0] if items else None

        task = await wait_for(followup_task, timeout=15)
        assert task["owner"] == "kim@ourco.example" and task["status"] == "open"

        view = (await crm.get(f"/v1/customers/{customer['id']}/view")).json()
        assert view["experience"]["latest_nps"]["score"] == 3
        assert view["experience"]["latest_nps"]["category"] == "detractor"
        assert view["experience"]["open_followups"] == 1

        done = await crm.patch(
            f"/v1/tasks/{task['id']}", json={"status": "completed"}, headers={"If-Match": f'"{task["version"]}"'}
        )
        assert done.status_code == 200, done.text

        async def followed_up() -> Any:
            rec = (await cem.get("/v1/analytics/recovery", params={"survey_id": survey["id"]})).json()
            return rec if rec.get("followed_up") == 1 else None

        recovery = await wait_for(followed_up, timeout=15)
        assert recovery["detractors"] == 1 and recovery["recovered"] == 0

        await answer(cem, survey["id"], customer["id"], 9)
        recovery = (await cem.get("/v1/analytics/recovery", params={"survey_id": survey["id"]})).json()
        assert recovery["recovered"] == 1 and recovery["recovery_rate"] == 1.0


async def test_a_recipient_who_unsubscribes_from_a_survey_link_is_opted_out_in_both_services(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        customer = await new_customer(crm)
        await known_to_cem(cem, customer["id"])
        survey = await active_nps_survey(cem)
        r = await cem.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": customer["id"]})
        assert r.status_code == 201, r.text
        link = r.json()
        page = await cem.post(f"/r/{link['token']}/unsubscribe", data={"List-Unsubscribe": "One-Click"})
        assert page.status_code == 200, page.text

        async def opted_out_in_crm() -> Any:
            record = (await crm.get(f"/v1/customers/{customer['id']}")).json()
            return record if record["survey_opt_out"] else None

        record = await wait_for(opted_out_in_crm, timeout=15)
        assert record["version"] == customer["version"] + 1
        [change] = (await crm.get(f"/v1/customers/{customer['id']}/history")).json()["items"]
        assert change["via"] == "survey_opt_out" and [c["field"] for c in change["changes"]] == ["survey_opt_out"]
        timeline = await crm.get(f"/v1/customers/{customer['id']}/timeline", params={"kind": "survey.opted_out"})
        assert [e["invitation_id"] for e in timeline.json()["items"]] == [link["id"]]

        def cem_copy_at(version: int) -> Any:
            async def probe() -> Any:
                view = (await cem.get(f"/v1/customers/{customer['id']}/experience")).json()
                return view if view["customer"]["crm_version"] == version else None

            return probe

        view = await wait_for(cem_copy_at(record["version"]), timeout=15)
        assert view["customer"]["survey_opt_out"] is True
        assert [i["status"] for i in view["invitations"]] == ["cancelled"]
        # A CRM user who clears the flag cannot undo the recipient's own request on the CEM side.
        cleared = await crm.patch(
            f"/v1/customers/{customer['id']}", json={"survey_opt_out": False}, headers={"If-Match": f'"{record["version"]}"'}
        )
        assert cleared.status_code == 200, cleared.text
        assert (await wait_for(cem_copy_at(cleared.json()["version"]), timeout=15))["customer"]["survey_opt_out"] is True
        again = await cem.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": customer["id"]})
        assert again.status_code == 409, again.text

        # The recipient asks for surveys again: both services follow.
        back = await cem.post(f"/r/{link['token']}/resubscribe")
        assert back.status_code == 200 and "You are subscribed again" in back.text
        r = await cem.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": customer["id"]})
        assert r.status_code == 201, r.text
        # The CRM had it cleared already (the PATCH above): no change, so no new version there.
        record = (await crm.get(f"/v1/customers/{customer['id']}")).json()
        assert record["survey_opt_out"] is False and record["version"] == cleared.json()["version"]

        async def opted_in_on_the_crm_timeline() -> Any:
            entries = (await crm.get(f"/v1/customers/{customer['id']}/timeline", params={"kind": "survey.opted_in"})).json()
            return entries["items"] or None

        [entry] = await wait_for(opted_in_on_the_crm_timeline, timeout=15)
        assert entry["invitation_id"] == link["id"]


async def test_an_answer_and_feedback_given_before_the_crm_knew_the_address_reach_both_views(
    stack_factory: Any, broker: DevBroker
) -> None:
    """A prospect answers and writes feedback under their address; when the CRM later records them
    as a customer, the CEM links both to that customer and announces them again, so the CRM's
    view shows them as well."""
    stack = stack_factory(broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        email = f"prospect-{uuid.uuid4().hex[:10]}@example.com"
        survey = await active_nps_survey(cem)
        r = await cem.post("/v1/responses", json={"survey_id": survey["id"], "email": email.upper(), "answers": {"nps": 8}})
        assert r.status_code == 201 and r.json()["customer_id"] is None, r.text
        response = r.json()
        r = await cem.post("/v1/feedback", json={"email": email, "channel": "web", "text": "Clear pricing page"})
        assert r.status_code == 201 and r.json()["customer_id"] is None, r.text

        customer = await new_customer(crm, email=email)

        async def linked() -> Any:
            view = (await cem.get(f"/v1/customers/{customer['id']}/experience")).json()
            return view if view.get("responses") and view.get("feedback") else None

        view = await wait_for(linked, timeout=15)
        assert [r["id"] for r in view["responses"]] == [response["id"]]

        async def shown_by_the_crm() -> Any:
            experience = (await crm.get(f"/v1/customers/{customer['id']}/view")).json()["experience"]
            return experience if experience and experience["responses"] == 1 and experience["feedback"] == 1 else None

        experience = await wait_for(shown_by_the_crm, timeout=15)
        assert experience["latest_nps"]["score"] == 8 and experience["latest_nps"]["category"] == "passive"
        assert experience["last_feedback"]["text"] == "Clear pricing page"


async def test_merge_on_crm_leaves_one_customer_with_all_answers_on_cem(stack_factory: Any, broker: DevBroker) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        survivor = await new_customer(crm, name="Ada Lovelace")
        duplicate = await new_customer(crm, name="A. Lovelace", phone="+44 1")
        await known_to_cem(cem, survivor["id"])
        await known_to_cem(cem, duplicate["id"])
        survey = await active_nps_survey(cem)
        await answer(cem, survey["id"], survivor["id"], 10)
        await answer(cem, survey["id"], duplicate["id"], 7)

        r = await crm.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
        assert r.status_code == 200, r.text

        async def merged() -> Any:
            view = (await cem.get(f"/v1/customers/{survivor['id']}/experience")).json()
            return view if len(view.get("responses", [])) == 2 else None

        view = await wait_for(merged, timeout=15)
        assert sorted(r["score"]["value"] for r in view["responses"]) == [7, 10]
        assert {r["customer_id"] for r in view["responses"]} == {survivor["id"]}
        assert view["summary"]["responses"] == 2
        gone = await cem.get(f"/v1/customers/{duplicate['id']}/experience", follow_redirects=False)
        assert gone.status_code in (404, 308), gone.text
        assert gone.json()["merged_into"] == survivor["id"]
        nps = (await cem.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()
        assert nps["n"] == 2 and nps["counts"] == {"promoter": 1, "passive": 1, "detractor": 0}


async def test_erasure_removes_personal_data_from_both_databases_and_keeps_anonymous_scores(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    marker = uuid.uuid4().hex[:8]
    personal = {
        "email": f"erase-{marker}@example.com",
        "name": f"Erin Erasable {marker}",
        "phone": f"+31 6 {marker}",
        "company": f"Erasable BV {marker}",
    }
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        customer = await new_customer(crm, **personal)
        await known_to_cem(cem, customer["id"])
        survey = await active_nps_survey(cem)
        await answer(cem, survey["id"], customer["id"], 4, f"My comment {marker}")
        r = await cem.post(
            "/v1/feedback", json={"customer_id": customer["id"], "text": f"Feedback text {marker}", "channel": "email"}
        )
        assert r.status_code == 201, r.text
        r = await crm.post(
            "/v1/interactions", json={"customer_id": customer["id"], "type": "call", "summary": f"Called {marker}"}
        )
        assert r.status_code == 201, r.text
        await wait_for(lambda: _crm_has_feedback(crm, customer["id"]), timeout=15)
        nps_before = (await cem.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()

        assert (await crm.delete(f"/v1/customers/{customer['id']}")).status_code in (200, 204)

        async def cem_erased() -> Any:
            view = (await cem.get(f"/v1/customers/{customer['id']}/experience")).json()
            return view if view["customer"]["email"] is None else None

        await wait_for(cem_erased, timeout=15)
        nps_after = (await cem.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()
    assert (nps_after["n"], nps_after["score"]) == (nps_before["n"], nps_before["score"]) == (1, -100.0)
    for db in (stack.crm_db, stack.cem_db):
        leaks = await find_text(db, marker)
        assert leaks == [], f"personal data left in {db.rsplit('/', 1)[1]}: {leaks}"


async def _crm_has_feedback(crm: httpx.AsyncClient, customer_id: str) -> bool:
    view = (await crm.get(f"/v1/customers/{customer_id}/view")).json()
    return bool(view.get("experience") and view["experience"].get("last_feedback"))


async def find_text(url: str, needle: str) -> list[str]:
    """Every (table.column) whose text holds `needle`, in every table of the database,
    outbox payloads and processed events included (bytea columns decoded)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'bytea')"
        )
        hits = []
        for col in columns:
            expr = (
                f"convert_from(\"{col['column_name']}\", 'UTF8')"
                if col["data_type"] == "bytea"
                else f'"{col["column_name"]}"::text'
            )
            found = await conn.fetchval(f'SELECT count(*) FROM "{col["table_name"]}" WHERE {expr} LIKE $1', f"%{needle}%")
            if found:
                hits.append(f"{col['table_name']}.{col['column_name']}")
        return hits
    finally:
        await conn.close()
