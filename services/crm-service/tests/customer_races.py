"""A write naming a customer, sent while that customer is being erased or merged: the erase or
merge is made by the customers service in a transaction held open until the write waits on a
lock, then committed (what a concurrent DELETE or merge request does)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers import service as customers

Change = Callable[[AsyncSession], Awaitable[Any]]


def erase(crm_app: FastAPI, customer_id: str) -> Change:
    others = crm_app.state.customer_other_domains

    async def change(session: AsyncSession) -> None:
        await customers.erase_customer(
            session, uuid.UUID(customer_id), customer_data=others.customer_data, stored_files=others.stored_files
        )

    return change


def merge(crm_app: FastAPI, survivor_id: str, duplicate_id: str) -> Change:
    others = crm_app.state.customer_other_domains

    async def change(session: AsyncSession) -> None:
        await customers.merge_customers(
            session,
            uuid.UUID(survivor_id),
            uuid.UUID(duplicate_id),
            None,
            customer_data=others.customer_data,
            open_deal_value=others.open_deal_value,
        )

    return change


async def _waiting_on_locks(crm_app: FastAPI) -> int:
    count: int = await crm_app.state.pg_pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return count


async def sent_during(crm_app: FastAPI, change: Change, request: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`request`'s answer, sent once `change` holds the customer's row locked and has made its
    changes, and committed only when the request waits on that lock."""
    async with crm_app.state.session_factory() as session:
        await change(session)
        sent = asyncio.create_task(request())
        deadline = asyncio.get_running_loop().time() + 10
        while not await _waiting_on_locks(crm_app):
            assert not sent.done(), f"answered without waiting: {sent.result().status_code} {sent.result().text}"
            assert asyncio.get_running_loop().time() < deadline, "the request never waited on the customer's lock"
            await asyncio.sleep(0.005)
        await session.commit()
    return await sent
