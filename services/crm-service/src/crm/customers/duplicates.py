"""Possible duplicates of a customer (`GET /v1/customers/{id}/duplicates`): the others whose
name is like theirs, found in one statement through the customers' indexes, then scored by
how alike the names are and what else the two share (phone, company, email local part).
What to do with one is a person's call: `POST /v1/customers/{id}/merge` folds it in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from crm.customers.models import Customer, normalized_email

# How much the names weigh in a score, and what each shared detail adds to the rest (at most
# its whole share): the same name alone is 0.75, the same name and phone 0.9.
NAME_WEIGHT = 0.75
SHARED = {"same_phone": 0.6, "same_company": 0.3, "same_email_local_part": 0.3}
# Below this score a customer is not offered: names alone must be 2/3 alike.
MIN_SCORE = 0.5
SAME_NAME_FROM = 0.999
# At most this many look-alikes are read from each of the two sources below, and at most this
# many namesakes are looked at for a shared detail.
CANDIDATES = 500
NAMESAKES_LOOKED_AT = 5000
# pg_trgm's strict word similarity a look-alike's name, email or company needs with the probe
# (its own default, 0.5, lets every "James" through for "James Smith"; 0.6 keeps typos).
WORD_SIMILARITY = 0.6
# Phone numbers are the same when their last digits are (+44 20 7946 0018 = 020 7946 0018).
PHONE_DIGITS = 9
PHONE_MIN_DIGITS = 7
# A probe shorter than this (a two-letter name) has no trigram to look up: the email's local part
# is tried instead. The name, however short, is still what namesakes are compared by.
PROBE_MIN = 3

_COLUMNS = ", ".join(f"c.{c.name}" for c in Customer.__table__.columns if c.name != "email_normalized")
_OFFERABLE = "c.id <> $1 AND c.merged_into_id IS NULL AND c.erased_at IS NULL"
# Two sources, each bounded, so a name thousands share costs the same as a rare one:
# - `alike`: customers with a run of words like the probe in their name, email or company,
#   from the search's trigram index (the first CANDIDATES it yields);
# - `namesakes`: customers with the very same name ($8, however short) who also share the phone
#   ($4), company ($5) or email local part ($6), from the name index (the first $7 of them); among
#   thousands of namesakes, these are the ones worth a look.
# A look-alike's name similarity is that of its name or of its email's local part
# (`ada.lovelace@...`) with the probe ($2; null without one), whichever is closer; the very same
# name is 1 (a short one has no trigram to compare).
CANDIDATES_SQL = (
    "WITH alike AS ("
    "SELECT c.id FROM customers c WHERE $2 <<% customer_search_text(c.name, c.email_normalized, c.company) "
    f"AND {_OFFERABLE} LIMIT $3"
    "), namesakes AS ("
    "SELECT c.id FROM ("
    f"SELECT c.id, c.phone, c.company, c.email_normalized FROM customers c WHERE c.name = $8 AND {_OFFERABLE} LIMIT $7"
    ") c WHERE split_part(c.email_normalized, '@', 1) = $6 "
    "OR lower(regexp_replace(btrim(c.company), '\\s+', ' ', 'g')) = $5 "
    "OR right(regexp_replace(c.phone, '\\D', '', 'g'), 9) = $4 "
    "LIMIT $3) "
    f"SELECT {_COLUMNS}, CASE WHEN c.name = $8 THEN 1 ELSE greatest(similarity(coalesce(c.name, ''), $2), "
    "similarity(split_part(c.email_normalized, '@', 1), $2)) END AS name_similarity "
    "FROM customers c WHERE c.id IN (SELECT id FROM alike UNION SELECT id FROM namesakes)"
)
_THRESHOLD = f"SET LOCAL pg_trgm.strict_word_similarity_threshold = {WORD_SIMILARITY}"


@dataclass(frozen=True, slots=True)
class Candidate:
    customer: dict[str, Any]
    score: float
    reasons: list[str]


def probe_of(customer: dict[str, Any]) -> str | None:
    """What a customer's look-alikes are searched by in the trigram index: their name, else their
    email's local part (a lead made from an address has no name; a name of one or two letters,
    "Jo", has no trigram to look up), else nothing (`name_of` still finds namesakes)."""
    return next((probe for probe in (name_of(customer), local_part(customer.get("email"))) if len(probe) >= PROBE_MIN), None)


def name_of(customer: dict[str, Any]) -> str:
    """The customer's name as namesakes are compared by it ("" for none)."""
    return (customer.get("name") or "").strip()


def local_part(email: str | None) -> str:
    """The email's local part as its key (`email_normalized`) holds it."""
    return normalized_email(email).rsplit("@", 1)[0] if email and "@" in email else ""


def phone_key(phone: str | None) -> str | None:
    digits = re.sub(r"\D", "", phone or "")
    return digits[-PHONE_DIGITS:] if len(digits) >= PHONE_MIN_DIGITS else None


def company_key(company: str | None) -> str | None:
    return " ".join((company or "").lower().split()) or None


def score_of(name_similarity: float, reasons: list[str]) -> float:
    shared = min(1.0, sum(SHARED.get(r, 0.0) for r in reasons))
    return round(NAME_WEIGHT * name_similarity + (1 - NAME_WEIGHT) * shared, 2)


def rank(customer: dict[str, Any], rows: list[asyncpg.Record], limit: int) -> list[Candidate]:
    """The look-alikes scored, best first (then by what they share, then by id); those under
    MIN_SCORE left out."""
    phone, company = phone_key(customer.get("phone")), company_key(customer.get("company"))
    local = local_part(customer.get("email"))
    found = []
    for row in rows:
        other = dict(row)
        similarity = float(other.pop("name_similarity") or 0.0)
        reasons = ["same_name" if similarity >= SAME_NAME_FROM else "similar_name"]
        if phone is not None and phone_key(other["phone"]) == phone:
            reasons.append("same_phone")
        if company is not None and company_key(other["company"]) == company:
            reasons.append("same_company")
        if len(local) >= PROBE_MIN and local_part(other["email"]) == local:
            reasons.append("same_email_local_part")
        score = score_of(similarity, reasons)
        if score >= MIN_SCORE:
            found.append((score, len(reasons), similarity, str(other["id"]), Candidate(other, score, reasons)))
    found.sort(key=lambda f: (-f[0], -f[1], -f[2], f[3]))
    return [f[-1] for f in found[:limit]]


async def look_alikes(conn: asyncpg.Connection, customer: dict[str, Any], limit: int) -> list[Candidate]:
    probe, name = probe_of(customer), name_of(customer) or None
    if probe is None and name is None:
        return []
    local = local_part(customer.get("email"))
    args = (phone_key(customer.get("phone")), company_key(customer.get("company")), local if len(local) >= PROBE_MIN else None)
    async with conn.transaction():  # the threshold for this statement only
        await conn.execute(_THRESHOLD)
        rows = await conn.fetch(CANDIDATES_SQL, customer["id"], probe, CANDIDATES, *args, NAMESAKES_LOOKED_AT, name)
    return rank(customer, rows, limit)
