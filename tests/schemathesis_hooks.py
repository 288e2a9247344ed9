"""Schemathesis hooks for both services (loaded by tests/schemathesis.toml).

- A fresh `Idempotency-Key` per request: the services answer a key reused with a different
  request with 422, as the IETF Idempotency-Key draft says; the generator would otherwise send
  the same few short keys with every request.
- `refusal_is_a_listed_rule`: the built-in `positive_data_acceptance` is told (in the toml) that
  a schema-valid request may get 412 or 422, because some rules cannot be written in JSON Schema
  (a referenced id that must exist, an opaque cursor, the current ETag). This check takes the
  precision back: such a refusal passes only when it is one of the rules listed below; any other
  412/422 to schema-valid data (above all a `validation` problem, which means the document
  promised something the validator refuses) fails.
- `allow_names_the_methods`: every 405 lists the path's methods in `Allow`.
- Webhook URLs the schema accepts are pointed at loopback (`before_call`), so subscriptions get
  made and the stateful phase reaches the operations on them; a well-formed `customer_id` in a
  body names a customer made for the run, so writes that need an existing one get past that; on
  the CEM, which makes no customers, a customer announced to it over the broker (when
  `CX_KAFKA_BOOTSTRAP` names it) stands in a path's or body's `customer_id`; a respondent page's
  token is a real invitation's, so those pages are reached too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
import uuid
from typing import Any

import httpx
import schemathesis
from schemathesis import Case, CheckContext, HookContext, Response

from cxkit.events.envelope import encode_event, new_event
from cxkit.events.payloads import CustomerCreated
from cxkit.events.registry import topic_for
from cxkit.webhooks.schemas import URL_MAX_LENGTH, URL_PATTERN

IDEMPOTENCY_KEY = "Idempotency-Key"

# Refusals of schema-valid requests that are rules JSON Schema cannot state. Each entry:
# (status, problem `type` slug, pattern of its `detail`, the rule).
REFUSALS_OF_VALID_INPUT: list[tuple[int, str, str, str]] = [
    (412, "precondition-failed", r"^the resource is at version \d+", "If-Match must be the current ETag"),
    (422, "unprocessable", r"^cursor is not valid", "a cursor is opaque: only a next_cursor decodes"),
    # A referenced resource must exist (and be of the right kind).
    (422, "unprocessable", r"(^|: )\w+ [0-9a-f-]{36} does not exist$", "a referenced id must exist"),
    (422, "unprocessable", r"^(body|query)\.[\w.]+: (survey|touchpoint|customer) [0-9a-f-]{36} does not exist$", "ditto"),
    (422, "unprocessable", r"^body\.[\w.]+: no touchpoint with (key|id) ", "a referenced touchpoint must exist"),
    (422, "unprocessable", r"^body\.token: no invitation has this token$", "an invitation token must exist"),
    (422, "unprocessable", r"^body\.customer_id: customer [0-9a-f-]{36} is not known here", "the CRM must have announced it"),
    (422, "unprocessable", r"^query\.stage: pipeline [0-9a-f-]{36} has no stage ", "a stage name must be one of the pipeline's"),
    (422, "unprocessable", r"^body\.stage: .* is not a stage of pipeline ", "ditto"),
    (
        422,
        "unprocessable",
        r"^query\.survey_id: survey .* measures (\w+|no metric), not \w+$",
        "the survey must measure that metric",
    ),
    # Order between two fields.
    (422, "unprocessable", r"^query\.to: `to` must be after `from`$", "a window's end after its start"),
    (422, "unprocessable", r"^query\.\w+_to: \w+_from must be before \w+_to$", "a window's end after its start"),
    (422, "unprocessable", r"^body\.closes_at: closes_at must be after opens_at$", "a survey closes after it opens"),
    (422, "validation|unprocessable", r"end_date is before start_date$", "a campaign ends after it starts"),
    (422, "validation", r"rating_scale_max must be greater than rating_scale_min$", "a scale's max above its min"),
    (422, "validation", r"rating must be within -?[\d.]+\.\.-?[\d.]+$", "a rating within the scale sent with it"),
    # A value that depends on another field's value.
    (422, "validation", r"a (won|lost) stage has probability [01]", "won stages have probability 1, lost ones 0"),
    (422, "validation|unprocessable", r"target_metric and target_score go together", "a target needs its metric"),
    (422, "validation|unprocessable", r"target_score .*(between|within|from)", "the target on the metric's scale"),
    # What a survey's questions must be for its kind, and rules between them (cem.surveys.questions).
    (
        422,
        "unprocessable",
        r"^body\.questions(\.\d+\.\w+)?: (a custom survey needs at least one question|question id .* is used twice"
        r"|an? \w+ survey (needs|measures \w+ only|has one \w+ question)|a survey measures at most one metric"
        r"|\w+ is measured on \d+-\d+|the \w+ question of an? \w+ survey is required"
        r"|scale_max must be greater than scale_min|options must be different from each other)",
        "the questions a survey of its kind has",
    ),
    (422, "validation", r"two bands have max_score \d+; give each band its own max_score$", "a follow-up SLA band per max_score"),
    (422, "unprocessable", r"^body\.deal_id: (deal [0-9a-f-]{36} does not exist|the deal belongs to another customer)$", "ditto"),
    (
        422,
        "unprocessable",
        r"^body\.stages: (new stages have no id|stage ids not in this pipeline: )",
        "a kept stage's id must be one of its",
    ),
    # What the stored record already holds (its state).
    (422, "unprocessable", r"^a lead needs an email or a name$", "a PATCH may not clear both of a lead's email and name"),
    (422, "unprocessable", r"^\w+ [0-9a-f-]{36} was erased$", "an erased customer takes nothing new"),
    (422, "unprocessable", r"^a customer cannot be merged into itself$", "the duplicate is another customer"),
    (
        422,
        "unprocessable",
        r"^body\.(lost_reason: (only a lost deal has a lost reason|required when a deal is lost)"
        r"|stage: reopening a deal needs the open stage it goes back to|status: stage .* means status '\w+')$",
        "how a deal moves between stages and statuses",
    ),
    # Webhooks (cxkit.webhooks): a target must resolve to a public address (the SSRF guard asks
    # DNS), and an event type must be one the service announces.
    (422, "unprocessable", r"^body\.url: the (host .* (is or resolves to|does not resolve)|URL )", "a public http(s) target"),
    (422, "unprocessable", r"^body\.event_types: unknown event types ", "an event type this service announces"),
    # A limit set by configuration.
    (422, "unprocessable", r"^body\.expires_in: expires_in is at most \d+ seconds$", "CRM_DOCUMENTS_SHARE_MAX_SECONDS"),
    # Relative to the clock.
    (422, "unprocessable", r"^body\.(submitted_at|received_at): \w+ is in the future$", "a past time, not a future one"),
    # Rules over a list's items.
    (422, "validation", r"stage names must be unique within a pipeline$", "unique names among the stages"),
    (422, "unprocessable", r"^body\.stages\.\d+\.name: stage name .* is used twice$", "unique names among the stages"),
    (
        422,
        "unprocessable",
        r"^body\.stages\.\d+\.touchpoints\.\d+: touchpoint .* is already in ",
        "a touchpoint once per journey",
    ),
    (422, "validation", r"a stage id appears twice$", "unique ids among the stages"),
    (422, "validation", r"exactly one won stage and one lost stage$", "one won and one lost stage"),
    (422, "validation", r"a pipeline needs at least one open stage$", "an open stage"),
    # A query parameter that needs another one (OpenAPI cannot tie parameters together).
    (422, "unprocessable", r"^query\.pipeline_id: filtering by stage needs pipeline_id", "stage names are per pipeline"),
    # email-validator refuses addresses JSON Schema's `email` format allows (special-use and
    # dotless domains such as `.test`, `localhost`): mail must be deliverable.
    (422, "validation", r"value is not a valid email address: The (part after the @-sign|domain name)", "deliverable"),
]


# The respondent page answers a form that does not fit the survey's questions (which the
# invitation's survey decides) with the form again, its errors marked: HTML, not problem+json,
# in the survey's language, so the marker is the error summary's element, not its words.
FORM_PAGES_WITH_ERRORS = {("POST", "/r/{token}"): 'id="error-summary-title"'}


# Webhook targets: a generated URL names a host that does not resolve here (no DNS), so no
# subscription would ever be made and the stateful phase would never reach the operations on one.
# A URL the schema accepts goes to a closed loopback port instead (the run's services allow
# loopback targets); a URL the schema refuses is left as generated.
WEBHOOK_PATHS = {"/v1/webhooks", "/v1/webhooks/{webhook_id}"}
WEBHOOK_URL = re.compile(URL_PATTERN)
LOOPBACK_TARGET = "http://127.0.0.1:9/hook"


# A body's `customer_id` must name a customer that exists, which a generated one never does; so
# every write that takes one (tasks, deals, documents, interactions, campaign members, a lead's
# conversion) met only "does not exist". On a service that makes customers, a well-formed one is
# replaced with one customer made for the run (once per service); a malformed one is left alone.
_RUN_CUSTOMER: dict[str, str | None] = {}


def _run_customer(base_url: str) -> str | None:
    if base_url not in _RUN_CUSTOMER:
        made = httpx.post(
            f"{base_url}/v1/customers",
            json={"email": f"schemathesis-{uuid.uuid4().hex[:12]}@example.com", "name": "Schemathesis run"},
            headers={"Authorization": f"Bearer {os.environ['CX_API_KEY']}"},
            timeout=10,
        )
        _RUN_CUSTOMER[base_url] = made.json()["id"] if made.status_code == 201 else None
    return _RUN_CUSTOMER[base_url]


# The CEM makes no customers: it learns them from the CRM's `customer.created` events. Its
# operations on one (`/v1/customers/{customer_id}/experience`, `/data-export`) met only 404, and a
# body's `customer_id` only "not known here". Where the run's broker is given (`CX_KAFKA_BOOTSTRAP`,
# with the CEM's consumers on), one customer is announced to it as the CRM would, once per service,
# and a well-formed `customer_id` in a path or body names that customer.
_ANNOUNCED: dict[str, str | None] = {}


async def _announce(bootstrap: str, customer_id: uuid.UUID) -> None:
    from aiokafka import AIOKafkaProducer

    now = dt.datetime.now(dt.UTC)
    snapshot = CustomerCreated(
        id=customer_id,
        email=f"schemathesis-{customer_id.hex[:12]}@example.com",
        name="Schemathesis run",
        lifecycle_stage="customer",
        version=1,
        created_at=now,
        updated_at=now,
    )
    event = new_event("customer.created", source="urn:cx:crm-service", subject=str(customer_id), data=snapshot)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic_for("customer.created"), value=encode_event(event), key=str(customer_id).encode())
    finally:
        await producer.stop()


def _announced_customer(base_url: str) -> str | None:
    bootstrap = os.environ.get("CX_KAFKA_BOOTSTRAP")
    if base_url not in _ANNOUNCED:
        _ANNOUNCED[base_url] = None
        if bootstrap:
            customer_id = uuid.uuid4()
            asyncio.run(_announce(bootstrap, customer_id))
            auth = {"Authorization": f"Bearer {os.environ['CX_API_KEY']}"}
            for _ in range(300):  # the consumer applies it within moments
                if httpx.get(f"{base_url}/v1/customers/{customer_id}/experience", headers=auth, timeout=10).status_code == 200:
                    _ANNOUNCED[base_url] = str(customer_id)
                    break
                time.sleep(0.1)
    return _ANNOUNCED[base_url]


def _is_uuid(value: str) -> bool:
    """In the form JSON Schema's `uuid` format takes (a mutated one stays as generated)."""
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


# The respondent pages (`/r/{token}`) take an invitation's token, which only the invitation's
# creation shows (once), so a generated one never named one and they met only 404. A generated
# token of 8 characters or more is replaced with a real one: an invitation by email made for the
# run on a survey made for it, a new one every `_CALLS_PER_TOKEN` calls, as an answer or an
# opt-out uses one up (a 409 or 410 then). A shorter one stays as generated (unknown: 404).
_CALLS_PER_TOKEN = 5
_TOKENS: dict[str, list[str | None]] = {}


def _run_token(base_url: str) -> str | None:
    calls = _TOKENS.setdefault(base_url, [])
    if calls and len(calls) % _CALLS_PER_TOKEN:
        calls.append(calls[-1])
        return calls[-1]
    auth = {"Authorization": f"Bearer {os.environ['CX_API_KEY']}"}
    survey = httpx.post(f"{base_url}/v1/surveys", json={"name": "Schemathesis run", "kind": "nps"}, headers=auth, timeout=10)
    token = None
    if survey.status_code == 201:
        survey_url = f"{base_url}/v1/surveys/{survey.json()['id']}"
        httpx.patch(survey_url, json={"status": "active"}, headers=auth, timeout=10)
        email = f"schemathesis-{uuid.uuid4().hex[:12]}@example.com"
        made = httpx.post(f"{survey_url}/invitations", json={"email": email}, headers=auth, timeout=10)
        token = made.json()["token"] if made.status_code == 201 else None
    calls.append(token)
    return token


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    token = (case.path_parameters or {}).get("token")
    if case.operation.path.startswith("/r/{token}") and isinstance(token, str) and len(token) >= 8:
        real = _run_token(case.operation.base_url.rstrip("/"))
        if real is not None:
            case.path_parameters["token"] = real  # type: ignore[index]
    if case.headers and IDEMPOTENCY_KEY in case.headers:
        case.headers[IDEMPOTENCY_KEY] = str(uuid.uuid4())
    if case.operation.path in WEBHOOK_PATHS and isinstance(case.body, dict):
        url = case.body.get("url")
        if isinstance(url, str) and 1 <= len(url) <= URL_MAX_LENGTH and WEBHOOK_URL.fullmatch(url):
            case.body["url"] = LOOPBACK_TARGET
    base_url = case.operation.base_url.rstrip("/")
    if isinstance(case.body, dict) and isinstance(case.body.get("customer_id"), str) and _is_uuid(case.body["customer_id"]):
        customer_id = _run_customer(base_url) or _announced_customer(base_url)
        if customer_id is not None:
            case.body["customer_id"] = customer_id
    # On the CRM a path's customer_id comes from the stateful phase's links (a customer made by
    # `POST /v1/customers`, which may be deleted or merged): not the run's one.
    path_id = (case.path_parameters or {}).get("customer_id")
    if isinstance(path_id, str) and _is_uuid(path_id) and _run_customer(base_url) is None:
        announced = _announced_customer(base_url)
        if announced is not None:
            case.path_parameters["customer_id"] = announced  # type: ignore[index]


def _listed(status: int, problem: dict[str, Any]) -> bool:
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    detail = str(problem.get("detail", ""))
    return any(
        status == s and re.fullmatch(slugs, slug) and re.search(pattern, detail)
        for s, slugs, pattern, _ in REFUSALS_OF_VALID_INPUT
    )


@schemathesis.check
def refusal_is_a_listed_rule(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (412, 422):
        return None
    marker = FORM_PAGES_WITH_ERRORS.get((case.method.upper(), case.path))
    if marker is not None and response.status_code == 422 and marker in response.text:
        return None
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict) or not _listed(response.status_code, problem):
        raise AssertionError(
            f"Schema-valid request refused with {response.status_code} for a reason not listed in "
            f"tests/schemathesis_hooks.py: {problem.get('detail') if isinstance(problem, dict) else problem!r}"
        )
    return None


@schemathesis.check
def allow_names_the_methods(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 405 says in `Allow` which methods the path takes (RFC 9110 15.5.6). The built-in
    allow_header_conformance compares a non-empty `Allow` with the document and passes an
    empty one; this check refuses the empty one."""
    if response.status_code == 405 and not ",".join(response.headers.get("allow", [])).strip():
        raise AssertionError(f"405 for {case.method} {case.path} without the methods the path takes in `Allow`")
    return None
