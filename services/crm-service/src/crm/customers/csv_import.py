"""Importing customers from a CSV file: each row validated like an HTTP create and created
(and announced) like one; a bad row is reported with its line number, never fatal.

Rows go in chunks (one transaction each) with a handful of statements per chunk, whatever
its size: a COPY into a temporary table, one `INSERT ... SELECT ... ON CONFLICT (email) DO
NOTHING RETURNING id` (a taken email is that row's error, as with `POST /v1/customers`), one
insert of the campaign memberships and one COPY of a `customer.created` outbox row per
customer. While the database takes one chunk, the next is validated.

A row is validated by `row_to_customer`, the rules of `CustomerCreate`; most rows take a
quicker road to the same result (`_Validator`): the address checked by the email library's
own rules with the domain's verdict looked up once per domain, the other fields by a copy of
`CustomerCreate` with a plain-text email. A row that road does not accept goes through
`row_to_customer` itself, which gives the verdict and the reason."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import itertools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from email_validator.syntax import DOT_ATOM_TEXT
from pydantic import BaseModel, TypeAdapter, ValidationError, model_validator

from crm.customers.models import normalized_email
from crm.customers.schemas import CustomerCreate
from crm.db import SOURCE
from cxkit.db import is_database_busy
from cxkit.events.registry import topic_for
from cxkit.ids import new_ids
from cxkit.memory import collector_paused
from cxkit.tracing import current_traceparent

REQUIRED_COLUMNS = ("email", "name")
PLAIN_COLUMNS = ("email", "name", "phone", "company", "lifecycle_stage", "owner", "source", "campaign_id", "external_id")
ATTRIBUTE_PREFIX = "attributes."
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n", ""}


class ImportFileError(Exception):
    """The file as a whole cannot be imported (unreadable, or required columns missing)."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # in the file, the header being line 1
    email: str | None
    reason: str
    # The customer exists already (email or external_id taken): nothing is wrong with the row.
    existing: bool = False
    # The key (`normalized_email`) of the row's address, by which an erasure finds the row: of
    # the address as validated when the row got that far (as the customer who holds it is keyed),
    # else as written. None without an email.
    key: str | None = None


@dataclass
class ChunkResult:
    """What one chunk (`batch_size` rows in file order, numbered from 0) did, told to
    `on_chunk` inside the chunk's transaction."""

    index: int
    rows: int
    created: int
    errors: list[RowError]


@dataclass
class ImportReport:
    total: int = 0
    created: int = 0
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def _open(path: Path) -> Any:
    return path.open(newline="", encoding="utf-8-sig")


def count_rows(path: Path) -> int:
    with _open(path) as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def read_rows(path: Path, report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; the header is checked first. Cells are keyed by
    their stripped column name (the last of two equal names wins); blank lines are skipped.
    An `ImportFileError`'s reason does not name `path`: an import job stores it and answers it to
    the API's clients, and there the path is the server's temporary copy of the upload (the
    command puts the file's name in front of it)."""
    try:
        handle = _open(path)
    except OSError as exc:
        raise ImportFileError(f"cannot be read: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader, [])]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFileError(f"not a UTF-8 CSV file: {exc}") from None
        if any("\x00" in h for h in header):
            # Not a CSV of customers (a binary file, say); the names are not echoed, as the
            # database stores no NUL and the reason is stored with the job.
            raise ImportFileError("the header holds a NUL character: not a CSV file")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ImportFileError(f"the header lacks the column(s) {', '.join(missing)} (it has: {', '.join(header)})")
        known = {*PLAIN_COLUMNS, "tags", "survey_opt_out"}
        report.ignored_columns = [h for h in header if h not in known and not h.startswith(ATTRIBUTE_PREFIX)]
        try:
            for values in reader:
                if values:
                    # Missing trailing cells are absent (read as empty), extra ones dropped.
                    yield reader.line_num, dict(zip(header, values, strict=False))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFileError(f"could not be read past line {reader.line_num}: {exc}") from None


def row_fields(row: dict[str, str]) -> dict[str, Any]:
    """The row as `CustomerCreate` input: empty cells are absent values; `tags` are separated by
    `;` or `|`; `attributes.<key>` columns become attributes. A bad `survey_opt_out` is a
    ValueError."""
    data: dict[str, Any] = {k: row[k].strip() for k in PLAIN_COLUMNS if row.get(k, "").strip()}
    raw_tags = row.get("tags", "").replace("|", ";")
    data["tags"] = [t.strip() for t in raw_tags.split(";") if t.strip()]
    opt_out = row.get("survey_opt_out", "").strip().lower()
    if opt_out in _TRUE:
        data["survey_opt_out"] = True
    elif opt_out not in _FALSE:
        raise ValueError(f"survey_opt_out must be true or false, not {opt_out!r}")
    attributes = {k[len(ATTRIBUTE_PREFIX) :]: v for k, v in row.items() if k.startswith(ATTRIBUTE_PREFIX) and v != ""}
    if attributes:
        data["attributes"] = attributes
    return data


def row_to_customer(row: dict[str, str]) -> CustomerCreate:
    """The row validated as `CustomerCreate` (see `row_fields`)."""
    return CustomerCreate.model_validate(row_fields(row))


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "row"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# --- the quick road to `row_to_customer`'s verdict ----------------------------------------------


class _CustomerFields(CustomerCreate):
    """`CustomerCreate` with the email as plain text (checked beforehand by `_Validator.email`)
    and without the walk looking for NUL characters (rows holding one are not sent here)."""

    email: str  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        return data


_MANY_FIELDS = TypeAdapter(list[_CustomerFields])
_ADDRESS_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.@")
_DOMAIN_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


class _Validator:
    """`row_to_customer`, quicker for the usual row.

    An address is taken as pydantic's `EmailStr` would take it (the email library's
    `validate_email`) when it is plain ASCII with one @-sign, no quotes, brackets or spaces:
    the library then splits it at the @-sign, accepts the part before it if it matches the
    library's own dot-atom pattern (lower-casing role names such as `info`), judges the domain
    on its own (so its verdict is looked up once per domain here), and checks the lengths.
    Anything else, and any row with a problem, goes through `row_to_customer`."""

    def __init__(self) -> None:
        self._domains: dict[str, tuple[str, str] | None] = {}

    def _domain(self, domain: str) -> tuple[str, str] | None:
        """(normalized, ASCII) form of a valid domain, None if the library refuses it."""
        if domain not in self._domains:
            try:
                checked = validate_email("a@" + domain, check_deliverability=False)
            except EmailNotValidError:
                self._domains[domain] = None
            else:
                self._domains[domain] = (checked.domain, checked.ascii_domain)
        return self._domains[domain]

    def email(self, address: str) -> str | None:
        """The normalized address, or None when only the full check can tell."""
        if len(address) > EMAIL_MAX_LENGTH or address.count("@") != 1 or not _ADDRESS_CHARACTERS.issuperset(address):
            return None
        local, _, domain = address.partition("@")
        if not DOT_ATOM_TEXT.match(local) or not _DOMAIN_CHARACTERS.issuperset(domain):
            return None
        forms = self._domain(domain)
        if forms is None:
            return None
        if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
            local = local.lower()
        normalized = f"{local}@{forms[0]}"
        if len(normalized.encode()) > EMAIL_MAX_LENGTH or len(local) + 1 + len(forms[1]) > EMAIL_MAX_LENGTH:
            return None
        return normalized

    def validate(self, rows: list[dict[str, str]]) -> list[BaseModel | Exception]:
        """Each row as a validated customer (with `CustomerCreate`'s fields), or the error
        `row_to_customer` raises for it (a ValidationError or a ValueError)."""
        results: list[BaseModel | Exception | None] = [None] * len(rows)
        quick: list[int] = []
        fields: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            if any("\x00" in cell for cell in row.values()):
                results[i] = _full(row)
                continue
            try:
                data = row_fields(row)
            except ValueError as exc:
                results[i] = exc
                continue
            address = data.get("email")
            normalized = self.email(address) if isinstance(address, str) else None
            if normalized is None:
                results[i] = _full(row)
                continue
            data["email"] = normalized
            quick.append(i)
            fields.append(data)
        try:
            validated: list[BaseModel] = _MANY_FIELDS.validate_python(fields)
        except ValidationError as exc:
            # `row_to_customer` tells why the invalid rows are; the others are valid as they are.
            invalid = {err["loc"][0] for err in exc.errors()}
            for n, i in enumerate(quick):
                results[i] = _full(rows[i]) if n in invalid else _CustomerFields.model_validate(fields[n])
        else:
            for i, customer in zip(quick, validated, strict=True):
                results[i] = customer
        return [r for r in results if r is not None]


def _full(row: dict[str, str]) -> BaseModel | Exception:
    try:
        return row_to_customer(row)
    except ValueError as exc:  # a ValidationError too
        return exc


# --- writing a chunk ------------------------------------------------------------------------

_CUSTOMER_COLUMNS = (
    "id",
    "email",
    "email_normalized",
    "name",
    "phone",
    "company",
    "lifecycle_stage",
    "owner",
    "tags",
    "attributes",
    "source",
    "campaign_id",
    "survey_opt_out",
    "external_id",
    "version",
    "created_at",
    "updated_at",
)
_STAGING = "import_customers_staging"
_CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} "
    "(LIKE customers INCLUDING DEFAULTS EXCLUDING CONSTRAINTS EXCLUDING INDEXES) ON COMMIT DELETE ROWS"
)
_INSERT_CUSTOMERS = (
    f"INSERT INTO customers ({', '.join(_CUSTOMER_COLUMNS)}) SELECT {', '.join(_CUSTOMER_COLUMNS)} FROM {_STAGING} "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_KNOWN_CAMPAIGNS = "SELECT id FROM campaigns WHERE id = ANY($1::uuid[])"
_TAKEN_EMAILS = "SELECT email_normalized FROM customers WHERE email_normalized = ANY($1::text[])"
_TAKEN_EXTERNAL_IDS = "SELECT external_id FROM customers WHERE external_id = ANY($1::text[])"
# A customer imported with a campaign is a member of it that responded (as `POST /v1/customers`).
_ADD_MEMBERS = (
    "INSERT INTO campaign_members (id, campaign_id, customer_id, responded_at, response, added_at) "
    "SELECT gen_random_uuid(), c, m, $3, 'created', $3 FROM unnest($1::uuid[], $2::uuid[]) AS u(c, m) "
    "ON CONFLICT DO NOTHING"
)
_OUTBOX_COLUMNS = ("event_id", "topic", "key", "event_type", "value", "headers", "created_at")
_EVENT_TYPE = "customer.created"
_TOPIC = topic_for(_EVENT_TYPE)
_TIMESTAMP = TypeAdapter(dt.datetime)
_NO_DEALS = Decimal("0.00")  # a new customer's open deal value, as its snapshot states it


@dataclass
class _Chunk:
    """Validated rows ready to write: a customer record and an outbox record each."""

    lines: list[int] = field(default_factory=list)
    raw_emails: list[str | None] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    customers: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    campaigns: list[uuid.UUID | None] = field(default_factory=list)
    external_ids: list[str | None] = field(default_factory=list)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def _prepare(customers: list[tuple[int, str | None, Any]]) -> _Chunk:
    """Customer rows and `customer.created` outbox rows for validated customers, the event
    exactly as `crm.customers.service.announce_created` writes it for a new customer."""
    chunk = _Chunk()
    now = chunk.now
    stamp = _TIMESTAMP.dump_python(now, mode="json")
    traceparent = current_traceparent()
    headers: dict[str, str] = {"content-type": "application/cloudevents+json", "ce_type": _EVENT_TYPE}
    if traceparent:
        headers["traceparent"] = traceparent
    headers_json = orjson.dumps(headers).decode()
    validate_events = os.environ.get("CX_VALIDATE_EVENTS") == "1"
    # Time-ordered (`cxkit.ids`): a chunk's rows land together at the right edge of the primary
    # key and outbox indexes. Each id is also printed into its event, which the driver's own
    # UUID type does several times faster than a `uuid.UUID`.
    ids = new_ids(2 * len(customers))
    for n, (line, raw_email, data) in enumerate(customers):
        customer_id, event_id = ids[2 * n], ids[2 * n + 1]
        email = str(data.email)
        tags = sorted(set(data.tags))
        subject = str(customer_id)
        chunk.lines.append(line)
        chunk.raw_emails.append(raw_email)
        chunk.emails.append(email)
        chunk.campaigns.append(data.campaign_id)
        chunk.external_ids.append(data.external_id)
        chunk.customers.append(
            (
                customer_id,
                email,
                normalized_email(email),
                data.name,
                data.phone,
                data.company,
                data.lifecycle_stage,
                data.owner,
                orjson.dumps(tags).decode(),
                orjson.dumps(data.attributes or {}).decode(),
                data.source,
                data.campaign_id,
                data.survey_opt_out,
                data.external_id,
                1,
                now,
                now,
            )
        )
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": str(event_id),
            "source": SOURCE,
            "type": _EVENT_TYPE,
            "subject": subject,
            "time": stamp,
            "datacontenttype": "application/json",
        }
        if traceparent:
            event["traceparent"] = traceparent
        event["data"] = {
            "id": subject,
            "email": email,
            "name": data.name,
            "phone": data.phone,
            "company": data.company,
            "lifecycle_stage": data.lifecycle_stage,
            "owner": data.owner,
            "tags": tags,
            "source": data.source,
            "survey_opt_out": data.survey_opt_out,
            "open_deal_value": str(_NO_DEALS),
            "version": 1,
            "created_at": stamp,
            "updated_at": stamp,
            "external_id": data.external_id,
        }
        if validate_events:
            _check_event(event)
        chunk.events.append((event_id, _TOPIC, subject, _EVENT_TYPE, orjson.dumps(event), headers_json, now))
    return chunk


def _check_event(event: dict[str, Any]) -> None:
    """As `cxkit.kafka.outbox.outbox_row` does when the test suite asks: the event must match
    its published schema."""
    from cxkit.events.contract import validation_errors

    errors = validation_errors(event)
    if errors:
        raise RuntimeError(f"{_EVENT_TYPE} breaks its published schema: {errors}")


OnChunk = Callable[[asyncpg.Connection, ChunkResult], Awaitable[None]]


# How many times in all a chunk is written while the database refuses it for now (a deadlock's
# victim, a full lock table: `cxkit.db.is_database_busy`), 0.1, 0.2, 0.4 and 0.8 s apart.
BUSY_ATTEMPTS = 5


async def _write(conn: asyncpg.Connection, chunk: _Chunk, result: ChunkResult, on_chunk: OnChunk | None) -> ChunkResult:
    """`_write_chunk`, tried again while the database refuses the chunk's transaction for now
    (nothing of it was kept), up to `BUSY_ATTEMPTS` times; then the refusal is raised (an
    import job stays running and resumes at its next pass)."""
    errors, created = list(result.errors), result.created
    attempt = 1
    while True:
        try:
            return await _write_chunk(conn, chunk, result, on_chunk)
        except Exception as exc:
            if attempt == BUSY_ATTEMPTS or not is_database_busy(exc):
                raise
        result.errors[:] = errors  # what the refused attempt counted
        result.created = created
        await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        attempt += 1


async def _write_chunk(conn: asyncpg.Connection, chunk: _Chunk, result: ChunkResult, on_chunk: OnChunk | None) -> ChunkResult:
    """Create the chunk's customers and their events in one transaction, adding to `result`
    the number created and the rows refused (email or external_id taken, unknown campaign);
    `on_chunk` runs last in the same transaction (it may raise to undo the chunk)."""
    keep = list(range(len(chunk.customers)))
    if not keep and on_chunk is None:
        return result
    async with conn.transaction():
        if keep:
            await _write_customers(conn, chunk, keep, result)
        result.errors.sort(key=lambda e: e.line)
        if on_chunk is not None:
            await on_chunk(conn, result)
    return result


async def _write_customers(conn: asyncpg.Connection, chunk: _Chunk, keep: list[int], result: ChunkResult) -> None:
    errors = result.errors
    campaign_ids = {c for c in chunk.campaigns if c is not None}
    if campaign_ids:
        known = {row[0] for row in await conn.fetch(_KNOWN_CAMPAIGNS, list(campaign_ids))}
        unknown = [i for i in keep if chunk.campaigns[i] is not None and chunk.campaigns[i] not in known]
        if unknown:
            # The email is checked first, as for one customer.
            taken = {row[0] for row in await conn.fetch(_TAKEN_EMAILS, [normalized_email(chunk.emails[i]) for i in unknown])}
            for i in unknown:
                email = chunk.emails[i]
                key = normalized_email(email)
                if key in taken:
                    errors.append(RowError(chunk.lines[i], chunk.raw_emails[i], _taken("email", email), existing=True, key=key))
                else:
                    reason = f"campaign_id {chunk.campaigns[i]} does not exist"
                    errors.append(RowError(chunk.lines[i], chunk.raw_emails[i], reason, key=key))
            refused = set(unknown)
            keep = [i for i in keep if i not in refused]
    await conn.copy_records_to_table(_STAGING, records=[chunk.customers[i] for i in keep], columns=_CUSTOMER_COLUMNS)
    inserted = {row[0] for row in await conn.fetch(_INSERT_CUSTOMERS)}
    created = [i for i in keep if chunk.customers[i][0] in inserted]
    not_inserted = [i for i in keep if chunk.customers[i][0] not in inserted]
    if not_inserted:
        # Refused by a unique key: the email, else the external id.
        with_external = [chunk.external_ids[i] for i in not_inserted if chunk.external_ids[i] is not None]
        taken_ids = {row[0] for row in await conn.fetch(_TAKEN_EXTERNAL_IDS, with_external)} if with_external else set()
        for i in not_inserted:
            email, external_id = chunk.emails[i], chunk.external_ids[i]
            if external_id is not None and external_id in taken_ids:
                taken_emails = {row[0] for row in await conn.fetch(_TAKEN_EMAILS, [normalized_email(email)])}
                reason = _taken("email", email) if taken_emails else _taken("external_id", external_id)
            else:
                reason = _taken("email", email)
            errors.append(RowError(chunk.lines[i], chunk.raw_emails[i], reason, existing=True, key=normalized_email(email)))
    members = [(chunk.campaigns[i], chunk.customers[i][0]) for i in created if chunk.campaigns[i] is not None]
    if members:
        await conn.execute(_ADD_MEMBERS, [m[0] for m in members], [m[1] for m in members], chunk.now)
    await conn.copy_records_to_table("outbox", records=[chunk.events[i] for i in created], columns=_OUTBOX_COLUMNS)
    result.created += len(created)


TAKEN_EMAIL = "a customer with email "
"""How the reason of a row refused for its taken email begins (the address follows)."""


def _taken(key: str, value: str) -> str:
    return f"a customer with {key} {value} already exists"


async def import_customers(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    path: Path,
    *,
    on_rows: Callable[[int], None] = lambda n: None,
    batch_size: int = 5000,
    writers: int = 2,
    dry_run: bool = False,
    skip_chunks: frozenset[int] = frozenset(),
    on_chunk: OnChunk | None = None,
) -> ImportReport:
    """Create a customer per valid row, `batch_size` rows per transaction (a chunk), and
    announce each (`customer.created` through the outbox). A row that fails (invalid, an email
    or external_id taken or repeated in the file, an unknown campaign) is reported with its
    line and creates nothing.

    `connect()` opens the asyncpg connection to write with (not called for a dry run);
    `on_rows(n)` is told as rows are done. `on_chunk(conn, result)` runs inside each chunk's
    transaction (also for a chunk with nothing to create), so a caller can record progress
    atomically with the chunk; the chunks numbered in `skip_chunks` (committed by an earlier
    run with the same `batch_size`) are not written again, and their rows are validated only
    for their keys: a later row repeating one is refused as a duplicate, as in an unbroken run."""
    report = ImportReport()
    first_line: dict[str, int] = {}
    validator = _Validator()

    def validated(rows: list[tuple[int, dict[str, str]]], errors: list[RowError]) -> list[tuple[int, str | None, Any]]:
        """The valid rows, in file order; the others go to `errors`."""
        valid: list[tuple[int, str | None, Any]] = []
        for (line, row), result in zip(rows, validator.validate([r for _, r in rows]), strict=True):
            raw_email = row.get("email", "").strip() or None
            if isinstance(result, Exception):
                reason = _reason(result) if isinstance(result, ValidationError) else str(result)
                errors.append(RowError(line, raw_email, reason, key=normalized_email(raw_email) if raw_email else None))
            else:
                keys = [normalized_email(str(result.email))]  # type: ignore[attr-defined]
                external_id = result.external_id  # type: ignore[attr-defined]
                if external_id is not None:
                    keys.append("\x00" + external_id)  # apart from every email (which holds no NUL)
                repeated = next((first_line[k] for k in keys if k in first_line), None)
                if repeated is not None:
                    errors.append(RowError(line, raw_email, f"duplicate of line {repeated} in this file", key=keys[0]))
                    continue
                for key in keys:
                    first_line[key] = line
                valid.append((line, raw_email, result))
        return valid

    # Millions of short-lived objects (rows, models, records) and no reference cycles: left on,
    # the cycle collector walked the live objects again and again (about half the time of a
    # large import). One pause mechanism for the whole process, so a job beside the consumers
    # and they do not switch the collector back on under each other.
    with collector_paused():
        if dry_run:
            for rows in _chunks(read_rows(path, report), _STEP):
                report.total += len(rows)
                report.created += len(validated(rows, report.errors))
                on_rows(len(rows))
        else:
            await _import(connect, path, report, validated, on_rows, batch_size, writers, skip_chunks, on_chunk)
    report.errors.sort(key=lambda e: e.line)
    return report


Validated = Callable[[list[tuple[int, dict[str, str]]], list[RowError]], list[tuple[int, str | None, Any]]]


async def _import(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    path: Path,
    report: ImportReport,
    validated: Validated,
    on_rows: Callable[[int], None],
    batch_size: int,
    writers: int,
    skip_chunks: frozenset[int],
    on_chunk: OnChunk | None,
) -> None:
    """Validate and prepare chunks while up to `writers` earlier chunks are being written, each
    on its own connection (rows of different chunks never share an email: a repeated one is
    refused while validating, so the transactions never wait for each other)."""
    idle: list[asyncpg.Connection] = []
    busy: list[tuple[asyncio.Task[ChunkResult], asyncpg.Connection]] = []

    async def finish_oldest() -> None:
        task, conn = busy.pop(0)
        result = await task
        idle.append(conn)
        report.created += result.created
        report.errors.extend(result.errors)
        on_rows(result.rows)

    try:
        for _ in range(writers):
            conn = await connect()
            idle.append(conn)
            await conn.execute(_CREATE_STAGING)
        lines = read_rows(path, report)
        index = 0
        while True:
            if index in skip_chunks:
                committed = list(itertools.islice(lines, batch_size))
                if not committed:
                    break
                # Not written again, and its refused rows are already told; but its rows' keys
                # are taken in this file, so a later row repeating one is still a duplicate.
                validated(committed, [])
                index += 1
                continue
            result = ChunkResult(index, 0, 0, [])
            pending: list[tuple[int, str | None, Any]] = []  # validated, not yet written
            while result.rows < batch_size:
                # Validate in steps, yielding in between: earlier chunks are being written meanwhile.
                rows = list(itertools.islice(lines, min(_STEP, batch_size - result.rows)))
                if not rows:
                    break
                report.total += len(rows)
                result.rows += len(rows)
                pending.extend(validated(rows, result.errors))
                await asyncio.sleep(0)
            if not result.rows:
                break
            chunk = _prepare(pending)
            if not idle:
                await finish_oldest()
            conn = idle.pop()
            busy.append((asyncio.create_task(_write(conn, chunk, result, on_chunk)), conn))
            index += 1
            await asyncio.sleep(0)
        while busy:
            await finish_oldest()
    finally:
        for task, conn in busy:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            idle.append(conn)
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


# Rows validated between two chances for the chunk being written to send more of its data.
_STEP = 500


def _chunks(rows: Iterator[tuple[int, dict[str, str]]], size: int) -> Iterator[list[tuple[int, dict[str, str]]]]:
    chunk: list[tuple[int, dict[str, str]]] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
