"""Figures the database keeps up to date by triggers (sums per key, written in the same
transaction as the rows they count), checked against and rebuilt from a view that computes
the same figures from the rows themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class KeptFigures:
    """`table` holds `figures` per `keys`, kept by triggers (a key's figures are the sum of
    its rows there, should it have several); `view` has the same columns, computed from the
    rows. A key whose figures are all zero is the same as no row. Figures are counts
    (`bigint`) unless `types` names another SQL type for one (a sum of `float8` scores, say),
    which its sums are then read and rebuilt as."""

    table: str
    view: str
    keys: tuple[str, ...]
    figures: tuple[str, ...]
    types: Mapping[str, str] = field(default_factory=dict)

    def _select(self, source: str) -> str:
        keys = ", ".join(self.keys)
        sums = ", ".join(f"sum({f})::{self.types.get(f, 'bigint')} AS {f}" for f in self.figures)
        nonzero = " OR ".join(f"sum({f}) <> 0" for f in self.figures)
        return f"SELECT {keys}, {sums} FROM {source} GROUP BY {keys} HAVING {nonzero}"

    async def differing_from_rows(self, session: AsyncSession) -> int:
        """How many keys' kept figures differ from their rows (a missing row reads as zeros)."""
        key = self.keys[0]
        stmt = text(
            f"SELECT count(*) FROM ({self._select(self.table)}) AS kept FULL JOIN ({self._select(self.view)}) AS fresh "
            f"USING ({', '.join(self.keys)}) WHERE kept.{key} IS NULL OR fresh.{key} IS NULL "
            f"OR ({', '.join(f'kept.{f}' for f in self.figures)}) IS DISTINCT FROM "
            f"({', '.join(f'fresh.{f}' for f in self.figures)})"
        )
        return int(await session.scalar(stmt) or 0)

    async def rebuild(self, session: AsyncSession) -> tuple[int, int]:
        """Recompute every key's figures from the rows. Writers of the counted tables wait until
        the transaction ends (their triggers queue on the lock; readers do not), so nothing
        written meanwhile is lost or counted twice. Returns (keys with figures, keys whose kept
        figures were wrong)."""
        await session.execute(text(f"LOCK TABLE {self.table} IN SHARE ROW EXCLUSIVE MODE"))
        wrong = await self.differing_from_rows(session)
        await session.execute(text(f"DELETE FROM {self.table}"))
        columns = ", ".join((*self.keys, *self.figures))
        result = await session.execute(
            text(f"INSERT INTO {self.table} ({columns}) {self._select(self.view)} ORDER BY {', '.join(self.keys)}")
        )
        return int(result.rowcount or 0), wrong  # type: ignore[attr-defined]
