"""Test data, loaded with COPY: customers (CRM) and their projection (CEM), interactions for
the customers the HTTP scenarios read, an API key, a survey and its answers, and the CSV the
import scenario reads. Deterministic apart from the ids (fixed random seed)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import httpx
import orjson
from scripts.bench.database import BulkLoader

from cxkit.http.auth import hash_key

CHUNK = 20_000
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)

# fmt: off
# Frequency falls off down the list (Zipf-like), so the first names are "common" search terms.
FIRST_NAMES = (
    "James", "Maria", "John", "Emma", "Michael", "Olivia", "David", "Sophia", "Daniel", "Mia", "Thomas", "Anna", "Lucas",
    "Laura", "Peter", "Julia", "Paul", "Sarah", "Mark", "Elena", "Luca", "Chloe", "Noah", "Hannah", "Adam", "Lena",
    "Samuel", "Nora", "Leo", "Clara", "Oscar", "Alice", "Felix", "Ines", "Hugo", "Marta", "Ivan", "Greta", "Omar", "Yara",
    "Ravi", "Priya", "Kenji", "Aiko", "Tomasz", "Zofia", "Mateo", "Lucia", "Arjun", "Freya", "Emil", "Ingrid", "Sven",
    "Astrid", "Milan", "Petra", "Bruno", "Vera"
)
LAST_NAMES = (
    "Smith", "Garcia", "Muller", "Rossi", "Martin", "Silva", "Novak", "Kowalski", "Johnson", "Brown", "Jones", "Miller",
    "Davis", "Wilson", "Moore", "Taylor", "Anderson", "Thomas", "Jackson", "White", "Harris", "Clark", "Lewis", "Walker",
    "Hall", "Young", "King", "Wright", "Lopez", "Hill", "Scott", "Green", "Adams", "Baker", "Nelson", "Carter", "Mitchell",
    "Perez", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans", "Edwards", "Collins", "Stewart", "Morris",
    "Rogers", "Reed", "Cook", "Morgan", "Bell", "Murphy", "Bailey", "Rivera", "Cooper", "Richardson", "Cox", "Howard",
    "Ward", "Torres", "Peterson", "Gray", "Ramirez", "James", "Watson", "Brooks", "Kelly", "Sanders", "Price", "Bennett",
    "Wood", "Barnes", "Ross", "Henderson", "Coleman", "Jenkins", "Perry", "Powell", "Long"
)
# Each given to a handful of customers whatever the row count: the "rare" search terms.
RARE_LAST_NAMES = ("Quenneville", "Abernathy", "Wojciechowska")
COMPANY_STEMS = (
    "Northwind", "Contoso", "Fabrikam", "Initech", "Globex", "Umbrella", "Stark", "Wayne", "Tyrell", "Cyberdyne", "Acme",
    "Hooli", "Vandelay", "Wonka", "Soylent", "Aperture", "Gringotts", "Monarch", "Oscorp", "Massive", "Dynamic", "Blue",
    "Sun", "Pied", "Piper", "Prestige", "Sterling", "Cooper", "Dunder", "Mifflin", "Nakatomi", "Virtucon", "Wernham",
    "Bluth", "Kramerica", "Gekko", "Rekall", "Spacely", "Cogswell", "Duff", "Krusty", "Lacuna", "Weyland"
)
COMPANY_KINDS = (
    "Logistics", "Foods", "Labs", "Systems", "Retail", "Energy", "Media", "Health", "Bank", "Motors", "Studio", "Group",
)
OWNERS = tuple(f"{f}.{s}@sales.example.com".lower() for f, s in zip(FIRST_NAMES[:25], LAST_NAMES[10:35], strict=True))
STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "churned")
STAGE_WEIGHTS = (10, 30, 10, 8, 7, 25, 3, 7)
TAGS = ("vip", "newsletter", "b2b", "b2c", "beta", "churn-risk", "partner", "enterprise", "smb", "webinar")
SOURCES = ("web", "import", "event", "referral", "partner", "ads")
SEGMENTS = ("smb", "mid-market", "enterprise", "consumer")
DOMAINS = ("example.com", "example.org", "example.net")
INTERACTION_TYPES = (
    ("purchase", "web", "checkout"), ("email", "email", None), ("call", "phone", None),
    ("support_ticket_closed", "web", "support"),
)
NPS_WEIGHTS = (2, 1, 1, 2, 2, 4, 6, 10, 16, 25, 31)  # scores 0..10: about +30
# fmt: on

CRM_CUSTOMER_COLUMNS = (
    "id", "email", "email_normalized", "name", "phone", "company", "lifecycle_stage", "owner", "tags", "attributes",
    "source", "campaign_id", "survey_opt_out", "version", "created_at", "updated_at", "erased_at", "merged_into_id",
)  # fmt: skip
CEM_PROFILE_COLUMNS = (
    "id", "email", "email_lower", "name", "phone", "company", "lifecycle_stage", "owner", "tags", "survey_opt_out",
    "open_deal_value", "crm_version", "crm_created_at", "crm_updated_at", "synced_at",
)  # fmt: skip
CRM_INTERACTION_COLUMNS = (
    "id", "customer_id", "type", "channel", "touchpoint", "occurred_at", "summary", "amount", "currency", "metadata",
    "source", "recorded_at",
)  # fmt: skip
CEM_INTERACTION_COLUMNS = (
    "id", "interaction_id", "customer_id", "email", "email_lower", "touchpoint", "type", "channel", "occurred_at",
    "summary", "amount", "currency", "metadata", "source", "recorded_at",
)  # fmt: skip
RESPONSE_COLUMNS = (
    "id", "survey_id", "invitation_id", "customer_id", "email", "touchpoint", "source", "answers", "submitted_at", "recorded_at",
)  # fmt: skip
SCORE_COLUMNS = (
    "response_id", "survey_id", "metric", "touchpoint", "customer_id", "score", "scale_min", "scale_max", "category",
    "submitted_at", "submitted_on",
)  # fmt: skip


@dataclass
class SeededData:
    """What the scenarios need to know about the seeded data."""

    customer_ids: list[uuid.UUID] = field(default_factory=list)
    http_ids: list[uuid.UUID] = field(default_factory=list)  # customers with seeded interactions
    interactions: int = 0
    responses: int = 0
    survey_id: str = ""
    search_terms: dict[str, list[str]] = field(default_factory=dict)


class Person(NamedTuple):
    """One generated customer, before it is shaped into the CRM's and the CEM's rows."""

    id: uuid.UUID
    first: str
    last: str
    email: str
    phone: str
    company: str | None
    stage: str
    owner: str
    tags: str  # JSON
    attributes: str  # JSON
    source: str
    opt_out: bool
    created_at: dt.datetime
    updated_at: dt.datetime


def _zipf_weights(n: int) -> list[float]:
    return [1.0 / (rank + 1) for rank in range(n)]


class CustomerFactory:
    """Customers as a CRM would hold them after a few years of use."""

    def __init__(self, total: int, seed: int = 42) -> None:
        self.total = total
        self.rng = random.Random(seed)
        self.companies = [f"{stem} {kind}" for stem in COMPANY_STEMS for kind in COMPANY_KINDS]
        self._first_w = _zipf_weights(len(FIRST_NAMES))
        self._last_w = _zipf_weights(len(LAST_NAMES))
        # Every `rare_step`-th customer gets a rare last name: about five each, at any scale.
        self.rare_step = max(3, total // (5 * len(RARE_LAST_NAMES)))
        # Three addresses spread over the range give the email-substring search terms.
        self.fragment_step = max(2, total // 3)
        self.email_fragments: list[str] = []

    def people(self, start: int, count: int) -> list[Person]:
        """Customers number start..start+count-1."""
        rng = self.rng
        firsts = rng.choices(FIRST_NAMES, self._first_w, k=count)
        lasts = rng.choices(LAST_NAMES, self._last_w, k=count)
        stages = rng.choices(STAGES, STAGE_WEIGHTS, k=count)
        span = 3 * 365 * 86400
        out = []
        for j in range(count):
            n = start + j
            first, last = firsts[j], lasts[j]
            if n % self.rare_step == 1:
                last = RARE_LAST_NAMES[(n // self.rare_step) % len(RARE_LAST_NAMES)]
            local = f"{first}.{last}.{n}".lower()
            email = f"{local}@{DOMAINS[n % 3]}"
            if n % self.fragment_step == self.fragment_step // 2 and len(self.email_fragments) < 3:
                # "last.NNN" cut from a real address: an email-substring search term.
                self.email_fragments.append(local[len(first) + 1 : -1])
            tags = orjson.dumps(rng.sample(TAGS, rng.choice((0, 0, 1, 1, 2, 3)))).decode()
            attributes = orjson.dumps({"segment": rng.choice(SEGMENTS), "employees": rng.randint(1, 5000)}).decode()
            created = NOW - dt.timedelta(seconds=rng.randrange(span))
            updated = created + dt.timedelta(seconds=rng.randrange(int((NOW - created).total_seconds()) + 1))
            out.append(
                Person(
                    uuid.uuid4(),
                    first,
                    last,
                    email,
                    f"+1 555 {rng.randrange(10_000):04d} {rng.randrange(10_000):04d}",
                    None if rng.random() < 0.1 else rng.choice(self.companies),
                    stages[j],
                    rng.choice(OWNERS),
                    tags,
                    attributes,
                    rng.choice(SOURCES),
                    rng.random() < 0.02,
                    created,
                    updated,
                )
            )
        return out


def crm_customer(p: Person) -> tuple[Any, ...]:
    """A `customers` row (CRM_CUSTOMER_COLUMNS), as created: version 1."""
    return (
        p.id, p.email, p.email, f"{p.first} {p.last}", p.phone, p.company, p.stage, p.owner, p.tags, p.attributes,
        p.source, None, p.opt_out, 1, p.created_at, p.updated_at, None, None,
    )  # fmt: skip


def cem_profile(p: Person) -> tuple[Any, ...]:
    """A `customer_profiles` row (CEM_PROFILE_COLUMNS), as if `customer.created` had been applied."""
    return (
        p.id, p.email, p.email, f"{p.first} {p.last}", p.phone, p.company, p.stage, p.owner, p.tags, p.opt_out,
        Decimal("0"), 1, p.created_at, p.updated_at, p.updated_at,
    )  # fmt: skip


def interaction_rows(
    rng: random.Random, people: list[Person], source: str
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """0-6 interactions per customer (about 3): (CRM rows, CEM rows) describing the same ones."""
    crm_rows, cem_rows = [], []
    for person in people:
        cid, email, created = person.id, person.email, person.created_at
        for _ in range(rng.choice((0, 1, 2, 3, 3, 4, 5, 6))):
            kind, channel, touchpoint = rng.choice(INTERACTION_TYPES)
            occurred = created + dt.timedelta(seconds=rng.randrange(int((NOW - created).total_seconds()) + 1))
            amount = Decimal(rng.randrange(500, 50_000)) / 100 if kind == "purchase" else None
            currency = "EUR" if amount is not None else None
            summary = f"{kind.replace('_', ' ')} #{rng.randrange(100_000)}"
            iid = uuid.uuid4()
            crm_rows.append((iid, cid, kind, channel, touchpoint, occurred, summary, amount, currency, "{}", source, occurred))
            cem_rows.append(
                (
                    uuid.uuid4(), iid, cid, email, email, touchpoint, kind, channel, occurred, summary, amount, currency,
                    "{}", source, occurred,
                )
            )  # fmt: skip
    return crm_rows, cem_rows


async def seed_customers(crm: asyncpg.Connection, cem: asyncpg.Connection, total: int, http_ids: int) -> SeededData:
    """`total` customers into the CRM and, identical, into the CEM's projection (as if every
    `customer.created` had been applied); interactions for the first `http_ids` of them."""
    factory = CustomerFactory(total)
    rng = random.Random(7)
    data = SeededData()
    loaders = [
        await BulkLoader(crm, "customers", CRM_CUSTOMER_COLUMNS).start(),
        await BulkLoader(cem, "customer_profiles", CEM_PROFILE_COLUMNS).start(),
        await BulkLoader(crm, "interactions", CRM_INTERACTION_COLUMNS).start(),
        await BulkLoader(cem, "touchpoint_interactions", CEM_INTERACTION_COLUMNS).start(),
    ]
    for start in range(0, total, CHUNK):
        people = factory.people(start, min(CHUNK, total - start))
        data.customer_ids.extend(p.id for p in people)
        with_interactions = people[: max(0, min(len(people), http_ids - start))]
        data.http_ids.extend(p.id for p in with_interactions)
        crm_i, cem_i = interaction_rows(rng, with_interactions, "bench-seed")
        data.interactions += len(crm_i)
        await asyncio.gather(
            loaders[0].copy([crm_customer(p) for p in people]), loaders[1].copy([cem_profile(p) for p in people])
        )
        if crm_i:
            await asyncio.gather(loaders[2].copy(crm_i), loaders[3].copy(cem_i))
    # The two databases build their indexes at the same time (one core each).
    await asyncio.gather(_finish(loaders[0], loaders[2]), _finish(loaders[1], loaders[3]))
    data.search_terms = {
        "common": list(FIRST_NAMES[:3]),
        "rare": list(RARE_LAST_NAMES),
        "no_match": ["Xylophonequartz", "qqzzxv", "Nonexistent Industries"],
        "email_substring": factory.email_fragments or ["smith.1"],
    }
    return data


async def _finish(*loaders: BulkLoader) -> None:
    for loader in loaders:
        await loader.finish()


async def add_api_key(conn: asyncpg.Connection, key: str) -> None:
    """An admin key, stored as the services store theirs (hash only)."""
    await conn.execute(
        "INSERT INTO api_keys (id, name, prefix, key_hash, scopes, created_at) VALUES ($1, 'bench', $2, $3, $4, now())",
        uuid.uuid4(),
        key[:10],
        hash_key(key),
        '["admin"]',
    )


async def create_survey(cem_url: str, key: str) -> tuple[str, str]:
    """The `checkout` touchpoint, an active NPS survey about it, and one real answer, all made
    through the API; the bulk answers copy that answer's shape. Returns (survey id, response id)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=cem_url, headers=headers, timeout=30) as client:

        async def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = await client.request(method, path, json=body)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
            return dict(r.json())

        await call(
            "POST", "/v1/touchpoints", {"key": "checkout", "name": "Checkout", "channel": "web", "journey_stage": "purchase"}
        )
        survey = await call("POST", "/v1/surveys", {"name": "Relationship NPS", "kind": "nps", "touchpoint": "checkout"})
        await call("PATCH", f"/v1/surveys/{survey['id']}", {"status": "active"})
        question = next(q for q in survey["questions"] if q.get("type") == "rating")
        response = await call("POST", "/v1/responses", {"survey_id": survey["id"], "answers": {question["id"]: 9}})
        return str(survey["id"]), str(response["id"])


def _nps_category(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


async def seed_responses(
    cem: tuple[asyncpg.Connection, asyncpg.Connection],
    survey_id: str,
    template_id: str,
    customer_ids: list[uuid.UUID],
    total: int,
) -> int:
    """`total` answers to the survey spread over two years, shaped like the template answer
    (its answers JSON, its score row), with NPS scores of about +30. Two connections to the CEM
    database, so `responses` and `scores` load side by side."""
    tmpl = await cem[0].fetchrow("SELECT * FROM responses WHERE id = $1", uuid.UUID(template_id))
    score_tmpl = await cem[0].fetchrow("SELECT * FROM scores WHERE response_id = $1", uuid.UUID(template_id))
    if tmpl is None or score_tmpl is None:
        raise RuntimeError("the template answer has no responses/scores row: did the CEM's storage of answers change?")
    answers = orjson.loads(tmpl["answers"]) if isinstance(tmpl["answers"], str) else tmpl["answers"]
    rating = next((a for a in answers if a.get("type") == "rating"), None)
    if rating is None:
        raise RuntimeError(f"the template answer has no rating: {answers}")
    # The answers JSON split around the score, so each row costs one string join.
    rating["value"] = "__SCORE__"
    before, after = orjson.dumps(answers).decode().split('"__SCORE__"')
    sid = uuid.UUID(survey_id)
    rng = random.Random(11)
    span = 2 * 365 * 86400
    responses = await BulkLoader(cem[0], "responses", RESPONSE_COLUMNS).start()
    scores = await BulkLoader(cem[1], "scores", SCORE_COLUMNS).start()
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        values = rng.choices(range(11), NPS_WEIGHTS, k=count)
        resp_rows, score_rows = [], []
        for j in range(count):
            rid, value = uuid.uuid4(), values[j]
            cid = customer_ids[rng.randrange(len(customer_ids))]
            submitted = NOW - dt.timedelta(seconds=rng.randrange(span))
            resp_rows.append(
                (rid, sid, None, cid, None, tmpl["touchpoint"], tmpl["source"], f"{before}{value}{after}", submitted, submitted)
            )
            score_rows.append(
                (
                    rid, sid, score_tmpl["metric"], score_tmpl["touchpoint"], cid, value, score_tmpl["scale_min"],
                    score_tmpl["scale_max"], _nps_category(value), submitted, submitted.date(),
                )
            )  # fmt: skip
        await asyncio.gather(responses.copy(resp_rows), scores.copy(score_rows))
    # Both at once; the foreign key of scores waits for the index builds on responses by itself (locks).
    await asyncio.gather(responses.finish(), scores.finish())
    return total + 1


def write_import_csv(path: Path, rows: int, tag: str, seed: int) -> None:
    """A CSV as `crm import-customers` documents it, with addresses no seeded customer has."""
    rng = random.Random(seed)
    companies = [f"{stem} {kind}" for stem in COMPANY_STEMS for kind in COMPANY_KINDS]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "phone", "company", "lifecycle_stage", "owner", "tags", "source"])
        for n in range(rows):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            writer.writerow(
                [
                    f"{first}.{last}.{tag}{n}@import.example.com".lower(),
                    f"{first} {last}",
                    f"+44 20 {rng.randrange(10_000):04d} {rng.randrange(10_000):04d}",
                    rng.choice(companies),
                    rng.choices(STAGES, STAGE_WEIGHTS)[0],
                    rng.choice(OWNERS),
                    ";".join(rng.sample(TAGS, rng.choice((0, 1, 2)))),
                    "import",
                ]
            )
