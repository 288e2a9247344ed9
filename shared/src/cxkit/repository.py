"""The base every repository in both services stands on. It holds the request's session; for a
repository of one table (its `model`) it also adds, flushes, reads by id (optionally locked) and
deletes rows, the same way in both services. The queries that are a domain's own stay in the
domain's repository."""

from __future__ import annotations

import uuid
from typing import Any, Generic, TypeVar

from sqlalchemy import Executable, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from cxkit.db import detach_referrers

ModelT = TypeVar("ModelT", bound=DeclarativeBase)


class SessionRepository:
    """A repository with no table of its own (reports, projections, reads across tables):
    its queries run on the session it is given, and it never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def scalars_of(self, stmt: Executable) -> list[Any]:
        """The first column of every row the statement answers (mapped objects for `select(Model)`)."""
        return list((await self.session.scalars(stmt)).all())

    async def rows_of(self, stmt: Executable) -> list[Any]:
        """Every row the statement answers."""
        return list((await self.session.execute(stmt)).all())


class Repository(SessionRepository, Generic[ModelT]):
    """A repository of one mapped table, `model`, whose primary key is a UUID `id`:
    `class DealRepository(Repository[Deal]): model = Deal`."""

    model: type[ModelT]

    def add(self, row: object) -> None:
        """Stage a new row: the model's, or one of a row it owns (a deal's stage change)."""
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    async def flush_or(self, problem: Exception) -> None:
        """Flush; when a unique rule refuses it, raise `problem` instead (the caller knows the
        one rule such a flush can break: a name taken by a concurrent write that passed the
        same check before, answered as the check answers)."""
        try:
            await self.session.flush()
        except IntegrityError:
            raise problem from None

    async def get(self, id: uuid.UUID, *, for_update: bool = False) -> ModelT | None:
        """The row with `id`, or None. Unlocked, a row the session holds already costs no query.
        `for_update` locks the row until the transaction ends and refreshes it in the session
        from what the lock read (another transaction may have changed it since it was loaded)."""
        if for_update:
            stmt = select(self.model).filter_by(id=id).with_for_update().execution_options(populate_existing=True)
            return await self.session.scalar(stmt)
        return await self.session.get(self.model, id)

    async def delete(self, row: ModelT) -> None:
        """Mark a loaded row for deletion; the DELETE goes out with the next flush. Versioned
        rows that point at it with `ON DELETE SET NULL` drop the reference now, with a new
        version (`cxkit.db.detach_referrers`)."""
        await detach_referrers(self.session, self.model.__table__, row.id)  # type: ignore[attr-defined]
        await self.session.delete(row)

    async def delete_by_id(self, id: uuid.UUID) -> None:
        """DELETE the row now, in one statement, without loading it: unlike `delete`, the ORM
        does not walk the row's relationships (they are `lazy="raise"`) and nothing waits for
        a flush. Versioned rows that point at it with `ON DELETE SET NULL` drop the reference,
        with a new version (`cxkit.db.detach_referrers`)."""
        await detach_referrers(self.session, self.model.__table__, id)  # type: ignore[attr-defined]
        await self.session.execute(delete(self.model).filter_by(id=id))
