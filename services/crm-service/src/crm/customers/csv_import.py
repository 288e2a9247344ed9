"""Importing customers from a CSV file: each row validated like an HTTP create and created
(and announced) like one; a bad row is reported with its line number, never fatal."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.customers import service
from crm.customers.schemas import CustomerCreate
from cxkit.http.problems import ProblemError

REQUIRED_COLUMNS = ("email", "name")
PLAIN_COLUMNS = ("email", "name", "phone", "company", "lifecycle_stage", "owner", "source", "campaign_id")
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
    """(line number, row) for each data row; the header is checked first."""
    try:
        handle = _open(path)
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = [h.strip() for h in reader.fieldnames or []]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFileError(f"{path} is not a UTF-8 CSV file: {exc}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ImportFileError(f"the header lacks the column(s) {', '.join(missing)} (it has: {', '.join(header)})")
        known = {*PLAIN_COLUMNS, "tags", "survey_opt_out"}
        report.ignored_columns = [h for h in header if h not in known and not h.startswith(ATTRIBUTE_PREFIX)]
        try:
            for row in reader:
                yield reader.line_num, {(k or "").strip(): (v or "") for k, v in row.items() if k is not None}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFileError(f"{path} could not be read past line {reader.line_num}: {exc}") from None


def row_to_customer(row: dict[str, str]) -> CustomerCreate:
    """Empty cells are absent values; `tags` are separated by `;` or `|`; `attributes.<key>`
    columns become attributes."""
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
    return CustomerCreate.model_validate(data)


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "row"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def import_customers(
    session_factory: async_sessionmaker[AsyncSession],
    path: Path,
    *,
    on_row: Callable[[], None] = lambda: None,
    batch_size: int = 200,
    dry_run: bool = False,
) -> ImportReport:
    """Create a customer per valid row, committing every `batch_size` rows; each row runs in
    a savepoint, so a duplicate only fails its own row."""
    report = ImportReport()
    first_line: dict[str, int] = {}
    async with session_factory() as session:
        pending = 0
        for line, row in read_rows(path, report):
            report.total += 1
            email = row.get("email", "").strip() or None
            try:
                data = row_to_customer(row)
                key = str(data.email).lower()
                if key in first_line:
                    raise ValueError(f"duplicate of line {first_line[key]} in this file")
                first_line[key] = line
                if not dry_run:
                    async with session.begin_nested():
                        await service.create_customer(session, data)
                    pending += 1
                report.created += 1
            except ValidationError as exc:
                report.errors.append(RowError(line, email, _reason(exc)))
            except ValueError as exc:
                report.errors.append(RowError(line, email, str(exc)))
            except ProblemError as exc:
                report.errors.append(RowError(line, email, exc.detail or exc.title))
            on_row()
            if pending >= batch_size:
                await session.commit()
                pending = 0
        await session.commit()
    return report
