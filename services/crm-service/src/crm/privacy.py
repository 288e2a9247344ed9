"""Personal data kept outside the domain tables: the stored answers of idempotent writes that
name a person by email only. Answers naming the customer's id (and sent events about them)
go with `cxkit.erasure.erase_platform_traces`; this catches what was written before the person
was a customer, such as the answer to creating the lead they were converted from."""

from __future__ import annotations

from sqlalchemy import delete, func, literal, or_
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import IdempotencyKey
from cxkit.db import dialect_of


class IdempotencyRecordRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def forget_answers_mentioning(self, needles: list[str]) -> None:
        """A replayable answer (e.g. the JSON of a created lead) holds personal data; an erasure
        removes the answers that mention the person's emails. Erasures are rare: a scan is fine."""
        table = IdempotencyKey.__table__
        body = table.c.response_body
        conditions = []
        for needle in dict.fromkeys(n for n in needles if n):
            raw = literal(needle.encode())
            if dialect_of(self.session) == "postgresql":
                conditions.append(func.position(raw.op("IN")(body)) > 0)
            else:
                conditions.append(func.instr(body, raw) > 0)
        if conditions:
            await self.session.execute(delete(table).where(or_(*conditions)))
