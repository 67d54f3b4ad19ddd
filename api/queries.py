"""Reads the API makes that the store does not offer: one portfolio's orders, keyset-paged.

Paging is by (created_at, id), newest first, so a page boundary between two orders created
in the same microsecond neither repeats nor skips one (created_before alone would).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from activities.store.repositories import OrderRepository, order_snapshot_from_row
from contracts.payloads import OrderSnapshot
from domain.orders import OrderStatus


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    order_id: UUID

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), str(self.order_id)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError for anything this API did not hand out."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            created_at, order_id = json.loads(raw)
            cursor = cls(datetime.fromisoformat(created_at), UUID(order_id))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as err:
            raise ValueError("not a cursor from this API") from err
        if cursor.created_at.tzinfo is None:
            raise ValueError("not a cursor from this API")
        return cursor


async def find_order(
    pool: asyncpg.Pool, portfolio_id: UUID, order_id: UUID
) -> OrderSnapshot | None:
    """The order if it belongs to `portfolio_id`; another portfolio's order is None, exactly
    as a missing one."""
    async with pool.acquire() as conn:
        order = await OrderRepository(conn).find(order_id)
    return order if order is not None and order.portfolio_id == portfolio_id else None


async def find_by_client_order_id(
    pool: asyncpg.Pool, portfolio_id: UUID, client_order_id: str
) -> OrderSnapshot | None:
    async with pool.acquire() as conn:
        return await OrderRepository(conn).by_client_order_id(portfolio_id, client_order_id)


async def list_orders(
    pool: asyncpg.Pool,
    portfolio_id: UUID,
    *,
    statuses: Sequence[OrderStatus] = (),
    symbol: str | None = None,
    limit: int = 50,
    after: Cursor | None = None,
) -> tuple[list[OrderSnapshot], Cursor | None]:
    """One page of the portfolio's orders, newest first, and the cursor of the next page."""
    clauses = ["portfolio_id = $1"]
    args: list[object] = [portfolio_id]
    if statuses:
        args.append([status.value for status in statuses])
        clauses.append(f"status = ANY(${len(args)}::text[])")
    if symbol is not None:
        args.append(symbol)
        clauses.append(f"symbol = ${len(args)}")
    if after is not None:
        args += [after.created_at, after.order_id]
        clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)  # one more tells whether there is a next page
    rows = await pool.fetch(
        f"SELECT * FROM orders WHERE {' AND '.join(clauses)} "
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    orders = [order_snapshot_from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = orders[-1] if orders else None
    return orders, Cursor(last.created_at, last.order_id) if more and last else None
