"""cxkit.http.csv_export: how values become spreadsheet-safe CSV cells."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from cxkit.http.csv_export import cell, export_filename, neutralise


def test_text_a_spreadsheet_would_run_as_a_formula_gets_a_leading_quote() -> None:
    for risky in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(risky) == "'" + risky
    for safe in ("Ada", "1-2", "a=b", "", " =x", "'=x"):
        assert neutralise(safe) == safe


def test_numbers_stay_numbers_and_other_values_are_written_plainly() -> None:
    assert cell(-12) == -12 and cell(Decimal("-3.50")) == Decimal("-3.50") and cell(-0.5) == -0.5
    assert cell("-12") == "'-12"  # the same characters as text are neutralised
    assert cell(None) == "" and cell(True) == "true" and cell(False) == "false"
    assert cell(dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)) == "2026-12-02T09:00:00+00:00"
    assert cell(dt.date(2026, 12, 2)) == "2026-12-02"
    some_id = uuid.uuid4()
    assert cell(some_id) == str(some_id)
    assert cell({"plan": "pro", "seats": 3}) == '{"plan":"pro","seats":3}'
    assert cell(["=1", "b"]) == '["=1","b"]'


def test_subclasses_are_written_as_their_base_type() -> None:
    class Label(str):
        pass

    assert cell(Label("=x")) == "'=x"


def test_the_file_name_carries_the_utc_time() -> None:
    assert export_filename("customers", dt.datetime(2026, 12, 2, 9, 15, tzinfo=dt.UTC)) == "customers-20261202T091500Z.csv"
