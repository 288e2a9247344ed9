"""How the dashboards write numbers: a dash for "no value", fixed decimals, thin grouping."""

from __future__ import annotations

from decimal import Decimal

NONE = "\u2013"  # an en dash: "no value"


def number(value: float | int | Decimal | None, digits: int = 1) -> str:
    if value is None:
        return NONE
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def percent(share: float | None, digits: int = 1) -> str:
    """A 0-1 share as a percentage."""
    return NONE if share is None else f"{100 * share:.{digits}f}%"


def money(value: Decimal | float | None) -> str:
    return NONE if value is None else f"{Decimal(value):,.2f}"


def humanize(name: str) -> str:
    """`time_to_close_hours` -> "Time to close hours"."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]
