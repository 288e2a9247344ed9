"""The demo world, made from a seed and a size alone: the same arguments give the same people,
deals, interactions and answers, so a second run can recognise everything the first one made.
Pure data, no I/O (see `fill` for the calls)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

FIRST = [
    "Ava",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hugo",
    "Isla",
    "Jonas",
    "Kira",
    "Liam",
    "Mia",
    "Noah",
    "Olivia",
    "Paul",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Victor",
    "Wren",
    "Xavier",
    "Yara",
    "Zoe",
    "Amir",
    "Bea",
    "Carlos",
    "Dana",
    "Elif",
    "Farid",
    "Gita",
    "Hana",
    "Ines",
    "Jack",
    "Leila",
    "Marco",
    "Nina",
    "Omar",
]
LAST = [
    "Schmidt",
    "Novak",
    "Rossi",
    "Garcia",
    "Martin",
    "Jensen",
    "Kowalski",
    "Dubois",
    "Silva",
    "Weber",
    "Costa",
    "Moreau",
    "Fischer",
    "Larsen",
    "Murphy",
    "Kaya",
    "Horvat",
    "Nagy",
    "Berg",
    "Lindqvist",
    "Okafor",
    "Tanaka",
    "Patel",
    "Haddad",
    "Ivanova",
    "Brennan",
    "Vidal",
    "Keller",
    "Popescu",
    "Sato",
]
COMPANIES = (
    "Northwind Traders",
    "Bluebird Bakery",
    "Helios Solar",
    "Kestrel Logistics",
    "Lumen Dental",
    "Maple & Co",
    "Orbit Fitness",
    "Pioneer Books",
    "Quarry Coffee",
    "Riverside Clinic",
    "Summit Outdoor",
    "Tidewater Foods",
)
OWNERS = ("alice@cx.example.com", "bruno@cx.example.com", "chen@cx.example.com", "dara@cx.example.com")
SOURCES = ("web", "referral", "event", "ads", "partner")
STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "customer", "customer", "evangelist", "churned")
TAGS = ("vip", "newsletter", "b2b", "retail", "trial", "loyalty")

# key, name, channel, journey stage, target metric, target score (the brand promise)
TOUCHPOINTS = (
    ("web-visit", "Website visit", "web", "Discover", None, None),
    ("checkout", "Web shop checkout", "web", "Buy", "ces", 5.5),
    ("store", "In-store purchase", "store", "Buy", "csat", 85.0),
    ("delivery", "Home delivery", "courier", "Receive", "csat", 80.0),
    ("onboarding", "Onboarding call", "phone", "Use", "nps", 40.0),
    ("support", "Support desk", "phone", "Get help", "csat", 80.0),
    ("billing", "Monthly billing", "email", "Pay", None, None),
)
JOURNEY = (
    "Buy, use, get help",
    [(stage, [tp[0] for tp in TOUCHPOINTS if tp[3] == stage]) for stage in dict.fromkeys(tp[3] for tp in TOUCHPOINTS)],
)

# (type, touchpoint, channel, weight, amount range or None, summaries)
INTERACTION_KINDS = (
    ("purchase", "checkout", "web", 30, (15, 400), ("Order online", "Reorder", "Gift order", "Seasonal sale order")),
    ("purchase", "store", "store", 18, (5, 250), ("Till 2", "Till 3", "Click and collect", "Weekend shop")),
    ("delivery_completed", "delivery", "courier", 12, None, ("Delivered on time", "Left with neighbour", "Late delivery")),
    (
        "support_ticket_closed",
        "support",
        "phone",
        14,
        None,
        ("Password reset", "Refund issued", "Damaged item replaced", "Invoice question"),
    ),
    ("call", "onboarding", "phone", 8, None, ("Welcome call", "Product walkthrough", "Check-in call")),
    ("email", "web-visit", "email", 8, None, ("Newsletter click", "Replied to offer", "Asked about sizes")),
    ("meeting", "onboarding", "video", 4, None, ("Quarterly review", "Renewal meeting")),
    ("bill_paid", "billing", "email", 6, None, ("Invoice paid", "Direct debit collected")),
)
OUTSIDE_SOURCES = {"store": "urn:pos:store-", "delivery": "urn:courier:", "billing": "urn:billing:"}

# kind, name, touchpoint, trigger
SURVEYS = (
    ("nps", "Relationship NPS", None, None),
    (
        "csat",
        "Support satisfaction",
        "support",
        {"interaction_type": "support_ticket_closed", "touchpoint": "support", "throttle_days": 30},
    ),
    ("ces", "Checkout effort", "checkout", None),
)
REASONS = {
    "good": (
        "Fast delivery and friendly staff, thank you!",
        "Great prices and the app is easy to use.",
        "Excellent service, the team solved everything quickly.",
        "Love the quality, I recommend you to all my friends.",
    ),
    "mixed": (
        "It was okay, the delivery took a bit long.",
        "Fine overall, checkout could be simpler.",
        "Average experience, nothing special.",
    ),
    "bad": (
        "Terrible support, I waited an hour on the phone.",
        "The parcel arrived broken and nobody answered my emails.",
        "Too expensive and the website keeps crashing.",
        "Very disappointed, the refund took three weeks.",
    ),
}
FEEDBACK_CHANNELS = ("app_review", "email", "chat", "social")
DEAL_STAGES = ("Qualification", "Needs analysis", "Proposal", "Negotiation")
LOST_REASONS = ("Price too high", "Chose a competitor", "No budget this year", "No decision")
DEAL_TITLES = ("Annual plan", "Team licences", "Store fit-out", "Catering contract", "Bulk order", "Maintenance contract")


@dataclass
class Person:
    index: int
    email: str
    name: str
    company: str | None
    owner: str
    lifecycle_stage: str
    tags: list[str]
    source: str
    mood: float  # -1 unhappy .. 1 delighted: steers this person's answers and feedback
    survey_opt_out: bool

    def customer_body(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "name": self.name,
            "company": self.company,
            "phone": f"+49 30 {5550000 + self.index}",
            "lifecycle_stage": self.lifecycle_stage,
            "owner": self.owner,
            "tags": self.tags,
            "source": self.source,
            "attributes": {"demo": True, "segment": "b2b" if self.company else "consumer"},
            "survey_opt_out": self.survey_opt_out,
        }


@dataclass
class Interaction:
    ref: str  # stable per person and position: also the outside event's id
    type: str
    touchpoint: str
    channel: str
    occurred_at: dt.datetime
    summary: str
    amount: float | None
    via_kafka: bool


@dataclass
class Deal:
    title: str
    amount: float
    path: list[str]  # the stages it moves through, the first one is where it is created
    lost_reason: str | None
    expected_close: dt.date


@dataclass
class Answer:
    survey_kind: str
    value: int
    reason: str | None
    submitted_at: dt.datetime
    on_page: bool  # answered through the respondent page (now) rather than the API (back-dated)


@dataclass
class Plan:
    """Everything one person gets."""

    person: Person
    interactions: list[Interaction] = field(default_factory=list)
    deal: Deal | None = None
    invitations: list[Answer | str] = field(default_factory=list)  # an Answer, or a survey kind left unanswered
    feedback: tuple[str, str, int, dt.datetime] | None = None  # channel, text, rating, received_at
    task: tuple[str, dt.datetime] | None = None  # a sales follow-up: title, due


@dataclass
class World:
    plans: list[Plan]
    leads: list[dict[str, Any]]
    campaigns: list[dict[str, Any]]


def _tone(mood: float, rnd: random.Random) -> str:
    x = mood + rnd.uniform(-0.6, 0.6)
    return "good" if x > 0.25 else "bad" if x < -0.35 else "mixed"


def _rating(kind: str, tone: str, rnd: random.Random) -> int:
    if kind == "nps":
        return rnd.choice({"good": (9, 9, 10, 10, 8), "mixed": (7, 8, 6), "bad": (1, 3, 4, 5, 6)}[tone])
    if kind == "csat":
        return rnd.choice({"good": (5, 5, 4), "mixed": (3, 4), "bad": (1, 2, 2)}[tone])
    return rnd.choice({"good": (6, 7, 7), "mixed": (4, 5), "bad": (1, 2, 3)}[tone])  # ces, 1..7


def build(customers: int, anchor: dt.datetime, seed: int = 7) -> World:
    """`customers` people with 90 days of history ending at `anchor`."""
    rnd = random.Random(seed)
    kinds, weights = INTERACTION_KINDS, [k[3] for k in INTERACTION_KINDS]
    plans: list[Plan] = []
    for i in range(customers):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        person = Person(
            index=i,
            email=f"{first}.{last}.{i:04d}@demo.example.com".lower(),
            name=f"{first} {last}",
            company=rnd.choice(COMPANIES) if rnd.random() < 0.45 else None,
            owner=rnd.choice(OWNERS),
            lifecycle_stage=rnd.choice(STAGES),
            tags=sorted(set(rnd.sample(TAGS, rnd.randint(0, 2)))),
            source=rnd.choice(SOURCES),
            mood=max(-1.0, min(1.0, rnd.gauss(0.25, 0.5))),
            survey_opt_out=rnd.random() < 0.03,
        )
        plan = Plan(person)
        for j in range(rnd.randint(1, 9)):
            kind = rnd.choices(kinds, weights)[0]
            type_, touchpoint, channel, _, amount_range, summaries = kind
            occurred = anchor - dt.timedelta(minutes=rnd.randint(10, 90 * 24 * 60))
            plan.interactions.append(
                Interaction(
                    ref=f"demo-{i:04d}-{j}",
                    type=type_,
                    touchpoint=touchpoint,
                    channel=channel,
                    occurred_at=occurred.replace(second=0, microsecond=0),
                    summary=rnd.choice(summaries),
                    amount=round(rnd.uniform(*amount_range), 2) if amount_range else None,
                    # The till, the courier and billing are outside systems: they publish on Kafka.
                    via_kafka=touchpoint in OUTSIDE_SOURCES,
                )
            )
        plan.interactions.sort(key=lambda x: x.occurred_at)
        if rnd.random() < 0.4:
            path_len = rnd.randint(1, len(DEAL_STAGES))
            path = list(DEAL_STAGES[:path_len])
            end = rnd.random()
            lost_reason = None
            if end < 0.2:
                path.append("Closed won")
            elif end < 0.32:
                path.append("Closed lost")
                lost_reason = rnd.choice(LOST_REASONS)
            plan.deal = Deal(
                title=f"{rnd.choice(DEAL_TITLES)} - {person.company or person.name}",
                amount=float(rnd.randrange(500, 60000, 50)),
                path=path,
                lost_reason=lost_reason,
                expected_close=(anchor + dt.timedelta(days=rnd.randint(-10, 120))).date(),
            )
        for kind, share in (("nps", 0.6), ("csat", 0.3), ("ces", 0.3)):
            if person.survey_opt_out or rnd.random() >= share:
                continue
            rounds = 2 if kind == "nps" and rnd.random() < 0.25 else 1
            for r in range(rounds):
                if rnd.random() < 0.35:
                    plan.invitations.append(kind)  # invited, never answered
                    continue
                tone = _tone(person.mood + (0.5 if r else 0.0), rnd)
                days_ago = rnd.uniform(45, 89) if rounds == 2 and r == 0 else rnd.uniform(0, 44 if rounds == 2 else 89)
                plan.invitations.append(
                    Answer(
                        survey_kind=kind,
                        value=_rating(kind, tone, rnd),
                        reason=rnd.choice(REASONS[tone]) if rnd.random() < 0.7 else None,
                        submitted_at=(anchor - dt.timedelta(days=days_ago)).replace(microsecond=0),
                        on_page=days_ago < 3,
                    )
                )
        if rnd.random() < 0.3:
            tone = _tone(person.mood, rnd)
            rating = {"good": rnd.choice((4, 5)), "mixed": 3, "bad": rnd.choice((1, 2))}[tone]
            received = (anchor - dt.timedelta(minutes=rnd.randint(60, 90 * 24 * 60))).replace(second=0, microsecond=0)
            plan.feedback = (rnd.choice(FEEDBACK_CHANNELS), rnd.choice(REASONS[tone]), rating, received)
        if rnd.random() < 0.15:
            due = (anchor + dt.timedelta(days=rnd.randint(-5, 21))).replace(hour=9, minute=0, second=0, microsecond=0)
            plan.task = (rnd.choice(("Call back about renewal", "Send a quote", "Check in after delivery")), due)
        plans.append(plan)

    campaigns = [
        {"name": "Spring webinar", "kind": "webinar", "status": "completed"},
        {"name": "Referral programme", "kind": "referral", "status": "active"},
    ]
    leads = []
    for k in range(max(4, customers // 5)):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        status = rnd.choice(("new", "new", "working", "working", "qualified", "disqualified"))
        leads.append(
            {
                "email": f"{first}.{last}.lead{k:04d}@demo.example.com".lower(),
                "name": f"{first} {last}",
                "company": rnd.choice(COMPANIES),
                "source": rnd.choice(SOURCES),
                "status": status,
                "score": rnd.randint(5, 95),
                "owner": rnd.choice(OWNERS),
                "campaign": rnd.choice((0, 1, None)),
                "disqualified_reason": "Not a fit" if status == "disqualified" else None,
                # Some qualified leads become customers with a deal.
                "convert": status == "qualified" and rnd.random() < 0.6,
                "deal_amount": float(rnd.randrange(1000, 30000, 100)),
            }
        )
    return World(plans=plans, leads=leads, campaigns=campaigns)
