"""`cxkit.db.locking`: row locks by PostgreSQL's names. SQLAlchemy's `with_for_update(key_share=True)`
alone is FOR NO KEY UPDATE; a helper that meant FOR KEY SHARE took it, and writes that only
reference a customer queued behind each other."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select
from sqlalchemy.dialects import postgresql

from cxkit.db import locking

_ROWS = Table("rows", MetaData(), Column("id", Integer, primary_key=True))


@pytest.mark.parametrize(
    ("mode", "clause"),
    [("update", "FOR UPDATE"), ("no key update", "FOR NO KEY UPDATE"), ("share", "FOR SHARE"), ("key share", "FOR KEY SHARE")],
)
def test_each_mode_is_the_lock_of_its_name(mode: str, clause: str) -> None:
    sql = str(locking(select(_ROWS.c.id), mode).compile(dialect=postgresql.dialect()))  # type: ignore[arg-type]
    assert sql.endswith(f"FROM rows {clause}"), sql


def test_options_are_passed_on() -> None:
    stmt = locking(select(_ROWS.c.id), "key share", of=_ROWS, skip_locked=True)
    assert str(stmt.compile(dialect=postgresql.dialect())).endswith("FOR KEY SHARE OF rows SKIP LOCKED")
