"""`crm import-customers FILE.csv`: the real command in a child process, against the test database."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from cxkit import testing
from cxkit.pg_pool import asyncpg_dsn

from .conftest import ALEMBIC, crm_command

CSV = """email,name,company,lifecycle_stage,tags,attributes.plan,survey_opt_out,shoe_size
ada@example.com,Ada Lovelace,Engines,customer,vip;b2b,pro,no,40
not-an-email,Bad Row,,,,,,
ADA@example.com,Ada Again,,,,,,
taken@example.com,Already There,,,,,,
bob@example.com,Bob,,king,,,,
carol@example.com,Carol,,,a;b|c,,yes,
dave@example.com,Dave,,,,,maybe,
"""


async def run_cli(database_url: str, *args: str) -> tuple[int, str]:
    code, out, err = await crm_command(database_url, *args)
    return code, out + err


async def test_import_creates_valid_rows_and_reports_the_others_by_line(
    client: httpx.AsyncClient, make: Any, events: Any, crm_database_url: str, tmp_path: Path
) -> None:
    await make.customer(email="taken@example.com")
    source = tmp_path / "customers.csv"
    source.write_text(CSV, encoding="utf-8")
    report = tmp_path / "errors.csv"
    code, output = await run_cli(crm_database_url, "import-customers", str(source), "--errors-csv", str(report))
    assert code == 1, output
    assert "7 rows: 2 created, 5 failed" in output and "ignored columns: shoe_size" in output

    with report.open(encoding="utf-8") as handle:
        failed = {int(r["line"]): r for r in csv.DictReader(handle)}
    assert sorted(failed) == [3, 4, 5, 6, 8]
    assert "email" in failed[3]["reason"]
    assert failed[4]["reason"] == "duplicate of line 2 in this file"
    assert "already exists" in failed[5]["reason"]
    assert "lifecycle_stage" in failed[6]["reason"]
    assert "survey_opt_out" in failed[8]["reason"]

    ada = (await client.get("/v1/customers", params={"q": "ada@example.com"})).json()["items"][0]
    assert (ada["name"], ada["company"], ada["lifecycle_stage"], ada["tags"], ada["attributes"]) == (
        "Ada Lovelace",
        "Engines",
        "customer",
        ["b2b", "vip"],
        {"plan": "pro"},
    )
    carol = (await client.get("/v1/customers", params={"q": "carol"})).json()["items"][0]
    assert carol["tags"] == ["a", "b", "c"] and carol["survey_opt_out"] is True
    created = {e["data"]["email"] for e in await events("customer.created")}
    assert created == {"taken@example.com", "ada@example.com", "carol@example.com"}


async def test_dry_run_creates_nothing_and_a_bad_header_is_exit_2(
    client: httpx.AsyncClient, crm_database_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "customers.csv"
    source.write_text("email,name\nx@example.com,X\n", encoding="utf-8")
    code, output = await run_cli(crm_database_url, "import-customers", str(source), "--dry-run")
    assert code == 0 and "1 rows: 1 valid, 0 failed" in output
    assert (await client.get("/v1/customers")).json()["items"] == []

    headerless = tmp_path / "bad.csv"
    headerless.write_text("mail,fullname\nx@example.com,X\n", encoding="utf-8")
    code, output = await run_cli(crm_database_url, "import-customers", str(headerless))
    assert code == 2 and "lacks the column(s) email, name" in output
    assert f"{headerless}: the header lacks" in output.replace("\n", ""), output  # the file named in front
    code, output = await run_cli(crm_database_url, "import-customers", str(tmp_path / "missing.csv"))
    assert code == 2


async def test_a_chunk_the_database_refuses_for_now_is_written_again_and_the_import_ends_cleanly(tmp_path: Path) -> None:
    """A deadlock's victim (the server refuses one row's insert twice, as it refuses the victim
    of a deadlock) is not the file's fault: the chunk is written again, every customer is made
    once, and the command ends with its report, not a traceback."""
    name, url = await testing.migrated_database("crm_cli_busy", ALEMBIC)
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        await conn.execute(
            """
            CREATE SEQUENCE refusals;
            CREATE FUNCTION refuse_twice() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.name = 'Row 700' AND nextval('refusals') <= 2 THEN
                    RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_twice BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION refuse_twice();
            """
        )
        await conn.close()
        source = tmp_path / "customers.csv"
        source.write_text("email,name\n" + "".join(f"row{i}@example.com,Row {i}\n" for i in range(1_000)), encoding="utf-8")
        code, output = await run_cli(url, "import-customers", str(source), "--batch-size", "250")
        assert code == 0 and "1000 rows: 1000 created, 0 failed" in output, output
        assert "Traceback" not in output
        counts = await testing.db_rows(
            url,
            "SELECT (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM outbox) AS events, "
            "(SELECT last_value FROM refusals) AS refusals",
        )
        assert dict(counts[0]) == {"customers": 1_000, "events": 1_000, "refusals": 3}
    finally:
        await testing.drop_database(name)


# A cell with rich markup, and one with terminal escape sequences (set the clipboard, clear the screen).
HOSTILE_CSV = 'email,name\n"not-an-email[/x]",Ada\n"\x1b]52;c;SGk=\x07\x1b[2Jbad",Bob\n"=HYPERLINK(""http://x"")",Eve\n'


async def test_a_refused_rows_cells_are_shown_as_they_are_and_written_spreadsheet_safe(
    crm_database_url: str, tmp_path: Path
) -> None:
    """The report shows the file's cells; a `[/x]` in one stopped the command with rich's
    MarkupError (a traceback, exit 1 for the wrong reason, no errors CSV), and escape sequences
    reached the operator's terminal. The errors CSV is spreadsheet-safe, as an import job's."""
    source = tmp_path / "hostile.csv"
    source.write_text(HOSTILE_CSV, encoding="utf-8")
    report = tmp_path / "errors.csv"
    code, output = await run_cli(crm_database_url, "import-customers", str(source), "--errors-csv", str(report))
    assert code == 1 and "3 rows: 0 created, 3 failed" in output, output
    assert "Traceback" not in output and "MarkupError" not in output, output
    assert "not-an-email[/x]" in output and "\\x1b]52;c;SGk=\\x07\\x1b[2Jbad" in output, output
    assert "\x1b" not in output and "\x07" not in output
    with report.open(encoding="utf-8") as handle:
        emails = [r["email"] for r in csv.DictReader(handle)]
    assert emails == ["not-an-email[/x]", "\x1b]52;c;SGk=\x07\x1b[2Jbad", '\'=HYPERLINK("http://x")']
