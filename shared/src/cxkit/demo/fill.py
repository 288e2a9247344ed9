"""Fills a running stack with the demo world through the public APIs, as a frontend and outside
systems would: HTTP for what people do in the apps, CloudEvents on `cx.interactions.v1` for what
the till, the courier and billing report. Everything is made at most once: each write carries an
Idempotency-Key derived from what it makes, and before writing, what exists is looked up by its
natural key (email, name, external ref, an interaction's `metadata.demo_ref`), so a second run
also finds what a first run made days ago (after idempotency keys expired)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from cxkit.demo import world as W

TOPIC = "cx.interactions.v1"
QUESTIONS = {"nps": ("nps", "reason"), "csat": ("csat", "improve"), "ces": ("ces", "reason")}
DETRACTOR = {"nps": 6, "csat": 2, "ces": 2}  # at or below: the CEM asks the CRM for a follow-up


class DemoError(RuntimeError):
    pass


@dataclass
class Target:
    crm_url: str
    cem_url: str
    api_key: str
    kafka_bootstrap: str


@dataclass
class Tally:
    """What this run made, and what it found already there."""

    created: Counter[str] = field(default_factory=Counter)
    existing: Counter[str] = field(default_factory=Counter)

    def line(self, kinds: Iterable[str]) -> str:
        return ", ".join(f"{k} {self.created[k]} new / {self.existing[k]} there" for k in kinds)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """One service's HTTP API with the demo's rules: bounded concurrency, retries on 429/503,
    a replayed idempotent write or a 409 counted as 'already there'."""

    def __init__(self, base_url: str, key: str, tally: Tally, limit: asyncio.Semaphore) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.tally = tally
        self.limit = limit

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(8):
            async with self.limit:
                try:
                    r = await self.client.request(method, path, **kwargs)
                except httpx.TransportError as exc:
                    if attempt == 7:
                        raise DemoError(f"{method} {self.client.base_url}{path}: {exc!r}; is `make run` up?") from None
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
            if r.status_code not in (429, 502, 503):
                return r
            await asyncio.sleep(float(r.headers.get("Retry-After", "0") or 0) or 0.2 * (attempt + 1))
        return r

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.call("GET", path, params={k: v for k, v in params.items() if v is not None})
        if r.status_code != 200:
            raise DemoError(f"GET {path} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    async def all_items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.get(path, limit=200, cursor=cursor, **params)
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    async def write(self, kind: str, method: str, path: str, idem: str, body: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """The answer's JSON, or None for a 409 (it exists). Counts it as created or existing."""
        headers = {"Idempotency-Key": idem}
        r = await self.call(method, path, json=body, headers=headers, **kwargs)
        if r.status_code == 409:
            self.tally.existing[kind] += 1
            return None
        if r.status_code not in (200, 201):
            raise DemoError(f"{method} {path} answered {r.status_code}: {r.text[:500]}")
        if r.headers.get("Idempotent-Replayed") == "true":
            self.tally.existing[kind] += 1
        else:
            self.tally.created[kind] += 1
        return r.json()  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.client.aclose()


class Progress:
    """One line per phase, rewritten in place on a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.started = label, total, 0, time.monotonic()
        self._tty = sys.stdout.isatty()

    def step(self) -> None:
        self.done += 1
        if self._tty and (self.done % 10 == 0 or self.done == self.total):
            print(f"\r  {self.label:<14} {self.done}/{self.total}", end="", flush=True)

    def finish(self, summary: str) -> None:
        took = time.monotonic() - self.started
        print(f"\r  {self.label:<14} {self.done}/{self.total} in {took:.1f}s: {summary}", flush=True)


async def each(label: str, items: list[Any], work: Callable[[Any], Awaitable[None]], summary: Callable[[], str]) -> None:
    progress = Progress(label, len(items))

    async def one(item: Any) -> None:
        await work(item)
        progress.step()

    await asyncio.gather(*(one(item) for item in items))
    progress.finish(summary())


OPT_OUT_PERCENT = 8  # of the customers with an invitation they leave unanswered


def stable_share(text: str, percent: int) -> bool:
    """True for a fixed `percent` of texts, the same ones every run."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100 < percent


def interaction_body(customer_id: str, x: W.Interaction) -> dict[str, Any]:
    """An interaction as `POST /v1/interactions` takes it and as an outside system's
    `interaction.recorded` event carries it."""
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "type": x.type,
        "channel": x.channel,
        "touchpoint": x.touchpoint,
        "occurred_at": iso(x.occurred_at),
        "summary": x.summary,
        "metadata": {"demo_ref": x.ref},
    }
    if x.amount is not None:
        body |= {"amount": x.amount, "currency": "EUR"}
    return body


class Filler:
    def __init__(self, target: Target, world: W.World, concurrency: int = 8) -> None:
        self.target = target
        self.world = world
        self.tally = Tally()
        limit = asyncio.Semaphore(concurrency)
        self.crm = Api(target.crm_url, target.api_key, self.tally, limit)
        self.cem = Api(target.cem_url, target.api_key, self.tally, limit)
        self.customer_ids: dict[int, str] = {}
        self.survey_ids: dict[str, str] = {}
        self.campaign_ids: list[str] = []
        self.pending_events: dict[str, set[str]] = {}  # customer id -> refs published, not yet seen applied
        self.producer: Any = None

    async def run(self) -> Tally:
        try:
            await self.setup()
            await each("customers", self.world.plans, self.customer, lambda: self.tally.line(["customers"]))
            await each("leads", self.world.leads, self.lead, lambda: self.tally.line(["leads", "conversions"]))
            await self.start_producer()
            try:
                await each("crm history", self.world.plans, self.history, self.history_summary)
            finally:
                await self.producer.stop()
            await self.await_outside_events()
            await self.await_cem_knows_customers()
            await each("experience", self.world.plans, self.experience, self.experience_summary)
            await self.followups()
        finally:
            await self.crm.close()
            await self.cem.close()
        return self.tally

    def history_summary(self) -> str:
        return (
            self.tally.line(["interactions", "deals", "stage changes", "tasks"])
            + f"; outside events {self.tally.created['outside events']}"
        )

    def experience_summary(self) -> str:
        return self.tally.line(["invitations", "responses", "feedback", "opt-outs"])

    # -- the frame: touchpoints, a journey, surveys, campaigns --------------------------------

    async def setup(self) -> None:
        for key, name, channel, stage, metric, score in W.TOUCHPOINTS:
            body = {
                "key": key,
                "name": name,
                "channel": channel,
                "journey_stage": stage,
                "target_metric": metric,
                "target_score": score,
            }
            await self.cem.write("touchpoints", "POST", "/v1/touchpoints", f"demo-touchpoint-{key}", body)
        journeys = {j["name"] for j in await self.cem.all_items("/v1/journeys")}
        name, stages = W.JOURNEY
        if name in journeys:
            self.tally.existing["journeys"] += 1
        else:
            body = {"name": name, "stages": [{"name": s, "touchpoints": tps} for s, tps in stages]}
            await self.cem.write("journeys", "POST", "/v1/journeys", "demo-journey", body)
        surveys = {s["name"]: s for s in await self.cem.all_items("/v1/surveys")}
        for kind, name, touchpoint, trigger in W.SURVEYS:
            survey = surveys.get(name)
            if survey is None:
                body = {"name": name, "kind": kind, "touchpoint": touchpoint, "trigger": trigger}
                survey = await self.cem.write("surveys", "POST", "/v1/surveys", f"demo-survey-{kind}", body)
                assert survey is not None
            else:
                self.tally.existing["surveys"] += 1
            if survey["status"] != "active":
                await self.cem.write(
                    "survey openings", "PATCH", f"/v1/surveys/{survey['id']}", f"demo-survey-{kind}-open", {"status": "active"}
                )
            self.survey_ids[kind] = survey["id"]
        campaigns = {c["name"]: c for c in await self.crm.all_items("/v1/campaigns")}
        for spec in self.world.campaigns:
            campaign = campaigns.get(spec["name"])
            if campaign is None:
                campaign = await self.crm.write("campaigns", "POST", "/v1/campaigns", f"demo-campaign-{spec['name']}", spec)
                assert campaign is not None
            else:
                self.tally.existing["campaigns"] += 1
            self.campaign_ids.append(campaign["id"])
        print(f"  setup: {self.tally.line(['touchpoints', 'journeys', 'surveys', 'campaigns'])}", flush=True)

    # -- CRM: people, leads, history ----------------------------------------------------------

    async def customer(self, plan: W.Plan) -> None:
        p = plan.person
        made = await self.crm.write("customers", "POST", "/v1/customers", f"demo-customer-{p.email}", p.customer_body())
        if made is None:  # 409: the email is taken, by a run whose idempotency key expired
            items = (await self.crm.get("/v1/customers", q=p.email))["items"]
            made = next(c for c in items if c["email"].lower() == p.email)
        self.customer_ids[p.index] = made["id"]

    async def lead(self, spec: dict[str, Any]) -> None:
        found = [
            x for x in (await self.crm.get("/v1/leads", q=spec["email"]))["items"] if (x["email"] or "").lower() == spec["email"]
        ]
        if found:
            self.tally.existing["leads"] += 1
            lead = found[0]
        else:
            body = {k: spec[k] for k in ("email", "name", "company", "source", "status", "score", "owner", "disqualified_reason")}
            if spec["campaign"] is not None:
                body["campaign_id"] = self.campaign_ids[spec["campaign"]]
            lead = await self.crm.write("leads", "POST", "/v1/leads", f"demo-lead-{spec['email']}", body)
            assert lead is not None
        if spec["convert"] and not lead.get("converted_customer_id"):
            body = {
                "lifecycle_stage": "opportunity",
                "deal": {"title": f"First order - {spec['company']}", "amount": spec["deal_amount"], "currency": "EUR"},
            }
            await self.crm.write("conversions", "POST", f"/v1/leads/{lead['id']}/convert", f"demo-convert-{spec['email']}", body)
        elif spec["convert"]:
            self.tally.existing["conversions"] += 1

    async def start_producer(self) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(bootstrap_servers=self.target.kafka_bootstrap, acks="all", linger_ms=5)
        try:
            await self.producer.start()
        except Exception as exc:
            await self.producer.stop()
            raise DemoError(f"cannot reach the broker at {self.target.kafka_bootstrap}: {exc}") from None

    async def history(self, plan: W.Plan) -> None:
        cid = self.customer_ids[plan.person.index]
        seen = {(i.get("metadata") or {}).get("demo_ref") for i in await self.crm.all_items("/v1/interactions", customer_id=cid)}
        for x in plan.interactions:
            if x.ref in seen:
                self.tally.existing["interactions"] += 1
            elif x.via_kafka:
                await self.publish(cid, x)
            else:
                await self.crm.write("interactions", "POST", "/v1/interactions", x.ref, interaction_body(cid, x))
        if plan.deal is not None:
            await self.deal(plan, cid, plan.deal)
        if plan.task is not None:
            title, due = plan.task
            ref = f"demo-task-{plan.person.index:04d}"
            if (await self.crm.get("/v1/tasks", origin="sales", origin_ref=ref))["items"]:
                self.tally.existing["tasks"] += 1
            else:
                body = {
                    "customer_id": cid,
                    "title": title,
                    "due_at": iso(due),
                    "owner": plan.person.owner,
                    "origin": "sales",
                    "origin_ref": ref,
                }
                await self.crm.write("tasks", "POST", "/v1/tasks", ref, body)

    async def publish(self, customer_id: str, x: W.Interaction) -> None:
        """What an outside system sends: a hand-written CloudEvent keyed by the customer id. Its
        id is stable, so a second publication is skipped by the consumers."""
        data = interaction_body(customer_id, x)
        event = {
            "specversion": "1.0",
            "id": x.ref,
            "source": W.OUTSIDE_SOURCES[x.touchpoint] + str(1 + int(x.ref[5:9]) % 5),
            "type": "interaction.recorded",
            "subject": customer_id,
            "time": iso(x.occurred_at),
            "datacontenttype": "application/json",
            "data": data,
        }
        headers = [("content-type", b"application/cloudevents+json")]
        await self.producer.send_and_wait(TOPIC, json.dumps(event).encode(), key=customer_id.encode(), headers=headers)
        self.tally.created["outside events"] += 1
        self.pending_events.setdefault(customer_id, set()).add(x.ref)

    async def deal(self, plan: W.Plan, cid: str, d: W.Deal) -> None:
        deals = await self.crm.get("/v1/deals", customer_id=cid, limit=200)
        deal = next((x for x in deals["items"] if x["title"] == d.title), None)
        key = f"demo-deal-{plan.person.index:04d}"
        if deal is None:
            body = {
                "customer_id": cid,
                "title": d.title,
                "amount": d.amount,
                "currency": "EUR",
                "stage": d.path[0],
                "owner": plan.person.owner,
                "expected_close_date": d.expected_close.isoformat(),
            }
            deal = await self.crm.write("deals", "POST", "/v1/deals", key, body)
            assert deal is not None
        else:
            self.tally.existing["deals"] += 1
        reached = d.path.index(deal["stage"]) if deal["stage"] in d.path else 0
        for step in range(reached + 1, len(d.path)):
            stage = d.path[step]
            body = {"stage": stage} | ({"lost_reason": d.lost_reason} if stage == "Closed lost" else {})
            moved = await self.crm.write("stage changes", "PATCH", f"/v1/deals/{deal['id']}", f"{key}-{step}", body)
            deal = moved or deal

    async def await_outside_events(self, timeout: float = 120) -> None:  # noqa: ASYNC109
        """Until the CRM has applied every event published (the CEM reads the same topic)."""
        progress = Progress("outside events", sum(len(v) for v in self.pending_events.values()))
        deadline = time.monotonic() + timeout
        while self.pending_events and time.monotonic() < deadline:
            for cid in list(self.pending_events):
                refs = {
                    (i.get("metadata") or {}).get("demo_ref")
                    for i in await self.crm.all_items("/v1/interactions", customer_id=cid)
                }
                applied = self.pending_events[cid] & refs
                for _ in applied:
                    progress.step()
                self.pending_events[cid] -= applied
                if not self.pending_events[cid]:
                    del self.pending_events[cid]
            if self.pending_events:
                await asyncio.sleep(0.5)
        if self.pending_events:
            raise DemoError(
                f"{sum(len(v) for v in self.pending_events.values())} outside events not applied by the CRM within {timeout}s"
            )
        progress.finish("applied by the CRM")

    async def await_cem_knows_customers(self, timeout: float = 120) -> None:  # noqa: ASYNC109
        """Invitations name customers by id: the CEM must have heard of them (customer.created)."""
        deadline = time.monotonic() + timeout
        for cid in self.customer_ids.values():
            while (await self.cem.call("GET", f"/v1/customers/{cid}/experience")).status_code != 200:
                if time.monotonic() > deadline:
                    raise DemoError(f"the CEM has not heard of customer {cid} within {timeout}s")
                await asyncio.sleep(0.2)

    # -- CEM: invitations, answers, feedback ----------------------------------------------------

    async def experience(self, plan: W.Plan) -> None:
        i, cid = plan.person.index, self.customer_ids[plan.person.index]
        unanswered: dict[str, Any] | None = None  # the last invitation made now that gets no answer
        for kind in ("nps", "csat", "ces"):
            planned = [x for x in plan.invitations if (x if isinstance(x, str) else x.survey_kind) == kind]
            if not planned:
                continue
            sid = self.survey_ids[kind]
            made = [
                x for x in await self.cem.all_items(f"/v1/surveys/{sid}/invitations", customer_id=cid) if x.get("origin") == "api"
            ]
            self.tally.existing["invitations"] += min(len(made), len(planned))
            for r, item in enumerate(planned[len(made) :], start=len(made)):
                key = f"demo-invitation-{i:04d}-{kind}-{r}"
                invitation = await self.cem.write(
                    "invitations", "POST", f"/v1/surveys/{sid}/invitations", key, {"customer_id": cid, "channel": "email"}
                )
                if invitation is not None and isinstance(item, W.Answer):
                    await self.answer(invitation, item, f"demo-response-{i:04d}-{kind}-{r}")
                elif invitation is not None:
                    unanswered = invitation
        if plan.feedback is not None:
            channel, text, rating, received = plan.feedback
            body = {
                "customer_id": cid,
                "channel": channel,
                "text": text,
                "rating": rating,
                "external_ref": f"demo-feedback-{i:04d}",
                "received_at": iso(received),
            }
            await self.cem.write("feedback", "POST", "/v1/feedback", f"demo-feedback-{i:04d}", body)
        # As the recipient does: the unsubscribe button behind the survey mail's link. Only
        # customers with no detractor answer, so nobody who asked for no more surveys is invited
        # again when the loop is closed.
        opts_out = stable_share(plan.person.email + "/opted-out", OPT_OUT_PERCENT)
        if unanswered is not None and opts_out and not any(_detractor(a) for a in plan.invitations):
            r = await self.cem.call("POST", f"/r/{unanswered['token']}/unsubscribe")
            if r.status_code != 200:
                raise DemoError(f"the unsubscribe page answered {r.status_code}: {r.text[:300]}")
            self.tally.created["opt-outs"] += 1

    async def answer(self, invitation: dict[str, Any], a: W.Answer, key: str) -> None:
        rating_q, text_q = QUESTIONS[a.survey_kind]
        if a.on_page:
            # As the customer does: the form on the respondent page (answered now).
            form = {f"q_{rating_q}": str(a.value)} | ({f"q_{text_q}": a.reason} if a.reason else {})
            r = await self.cem.call("POST", f"/r/{invitation['token']}", data=form)
            if r.status_code == 200:
                self.tally.created["responses"] += 1
            elif r.status_code in (409, 410):
                self.tally.existing["responses"] += 1
            else:
                raise DemoError(f"the respondent page answered {r.status_code}: {r.text[:300]}")
            return
        answers: dict[str, Any] = {rating_q: a.value} | ({text_q: a.reason} if a.reason else {})
        body = {"token": invitation["token"], "answers": answers, "submitted_at": iso(a.submitted_at)}
        r = await self.cem.call("POST", "/v1/responses", json=body, headers={"Idempotency-Key": key})
        if r.status_code in (200, 201) and r.headers.get("Idempotent-Replayed") != "true":
            self.tally.created["responses"] += 1
        elif r.status_code in (200, 201, 409):  # replayed, or answered already
            self.tally.existing["responses"] += 1
        else:
            raise DemoError(f"POST /v1/responses answered {r.status_code}: {r.text[:300]}")

    # -- closing the loop ---------------------------------------------------------------------

    async def followups(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Detractors' answers made follow-up tasks in the CRM (followup.requested); the owners
        of about 60% of those customers close them, and most of the NPS detractors among those
        answer the NPS survey again, better: the CEM's recovery report counts both."""
        expected = sum(1 for plan in self.world.plans for a in plan.invitations if _detractor(a))
        progress = Progress("follow-ups", expected)
        deadline = time.monotonic() + timeout
        plans = {self.customer_ids[plan.person.index]: plan for plan in self.world.plans}
        while True:
            tasks = [t for t in await self.crm.all_items("/v1/tasks", origin="followup") if t["customer_id"] in plans]
            if len(tasks) >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        followed_up: set[str] = set()
        for task in tasks:
            progress.step()
            plan = plans[task["customer_id"]]
            if not stable_share(plan.person.email, 60):
                continue
            followed_up.add(task["customer_id"])
            if task["status"] != "open":
                self.tally.existing["follow-ups done"] += 1
                continue
            body = {"status": "completed"}
            await self.crm.write("follow-ups done", "PATCH", f"/v1/tasks/{task['id']}", f"demo-followup-{task['id']}", body)
        self.tally.existing["follow-ups"] = len(tasks)
        progress.finish(f"{len(tasks)} follow-up tasks (of {expected} detractor answers); {self.tally.line(['follow-ups done'])}")
        again = [
            plans[cid]
            for cid in sorted(followed_up)
            if any(_detractor(a) and a.survey_kind == "nps" for a in plans[cid].invitations)
            and stable_share(plans[cid].person.email + "/again", 70)
        ]
        await each("answered again", again, self.answer_again, lambda: self.tally.line(["invitations", "responses"]))

    async def answer_again(self, plan: W.Plan) -> None:
        """After the call, the customer is invited to the NPS survey once more and answers on the
        respondent page, better than before."""
        i, cid, sid = plan.person.index, self.customer_ids[plan.person.index], self.survey_ids["nps"]
        planned = sum(1 for x in plan.invitations if (x if isinstance(x, str) else x.survey_kind) == "nps")
        made = [
            x for x in await self.cem.all_items(f"/v1/surveys/{sid}/invitations", customer_id=cid) if x.get("origin") == "api"
        ]
        if len(made) > planned:
            self.tally.existing["invitations"] += 1
            return
        key = f"demo-invitation-{i:04d}-nps-again"
        invitation = await self.cem.write(
            "invitations", "POST", f"/v1/surveys/{sid}/invitations", key, {"customer_id": cid, "channel": "email"}
        )
        if invitation is not None:
            value = 7 + int(hashlib.sha256(plan.person.email.encode()).hexdigest()[:4], 16) % 4
            answer = W.Answer(
                "nps", value, "Thanks for calling me back, the problem is solved.", dt.datetime.now(dt.UTC), on_page=True
            )
            await self.answer(invitation, answer, f"demo-response-{i:04d}-nps-again")


def _detractor(item: W.Answer | str) -> bool:
    return isinstance(item, W.Answer) and item.value <= DETRACTOR[item.survey_kind]
