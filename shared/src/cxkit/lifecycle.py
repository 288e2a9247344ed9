"""Customer-owned data behind one protocol: merges and erasures walk a registry.

Every domain whose rows belong to a customer (interactions, deals, tasks, invitations, answers,
...) declares, in its repository, how those rows follow a merge (`repoint_customer`) and what
of them an erasure removes (`erase_customer`), and registers that repository with its service's
registry. The customers domain then merges and erases by walking the registry, without
importing any other domain; a table that belongs to a customer is one registration, not four
hand-written fan-outs. `unregistered_tables` lets a test prove that no table with a
`customer_id` column is left out.

The erasure context is the service's own type (what its erasure needs to know and collect: the
customer's id, addresses, the time, events to scrub), so the protocol is generic in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

E = TypeVar("E", contravariant=True)
Ctx = TypeVar("Ctx")


class CustomerData(Protocol[E]):
    """A domain's rows that belong to a customer (in practice: its repository, built on the
    session of the merge or erasure)."""

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        """After a merge: the duplicate's rows become the survivor's. Applying it twice changes
        nothing more."""

    async def erase_customer(self, erasure: E) -> None:
        """After an erasure: no personal data of the customer stays in these rows (what stays,
        anonymous, is the domain's to say). Applying it twice changes nothing more."""


class CustomerDataRegistry(Generic[Ctx]):
    """The service's domains that own customer data, in the order merges and erasures visit
    them (the order of registration). Each entry builds the domain's `CustomerData` on a session,
    usually the repository class itself, and names the tables it covers."""

    def __init__(self) -> None:
        self._owners: dict[str, tuple[Callable[[AsyncSession], CustomerData[Ctx]], tuple[str, ...]]] = {}

    def register(self, name: str, owner: Callable[[AsyncSession], CustomerData[Ctx]], *, tables: Iterable[str]) -> None:
        if name in self._owners:
            raise ValueError(f"{name!r} already registered its customer data")
        self._owners[name] = (owner, tuple(tables))

    @property
    def names(self) -> list[str]:
        return list(self._owners)

    @property
    def tables(self) -> set[str]:
        return {table for _, tables in self._owners.values() for table in tables}

    def owners(self, session: AsyncSession) -> Iterator[tuple[str, CustomerData[Ctx]]]:
        for name, (owner, _) in self._owners.items():
            yield name, owner(session)

    async def repoint(self, session: AsyncSession, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        """Every registered domain's rows of the duplicate become the survivor's."""
        for _, owner in self.owners(session):
            await owner.repoint_customer(duplicate_id, survivor_id)

    async def erase(self, session: AsyncSession, erasure: Ctx) -> None:
        """Every registered domain erases what it holds of the customer."""
        for _, owner in self.owners(session):
            await owner.erase_customer(erasure)


def unregistered_tables(
    metadata: MetaData, registry: CustomerDataRegistry[Any], *, column: str = "customer_id", handled: Iterable[str] = ()
) -> set[str]:
    """Tables with a `column` that no registered domain covers (nor `handled`, those the
    customers domain looks after itself): each is customer data a merge or erasure would miss."""
    owned = {table.name for table in metadata.sorted_tables if column in table.c}
    return owned - registry.tables - set(handled)
