"""Reads the API makes that the store does not offer: one portfolio's orders, keyset-paged,
and a portfolio with its positions and reservations in one statement (`load_portfolio`).

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
from decimal import Decimal
from uuid import UUID

import asyncpg

from activities.store.repositories import (
    LIMIT_FIELDS,
    NotFoundError,
    OrderRepository,
    order_snapshot_from_row,
)
from contracts.payloads import OrderSnapshot
from domain.orders import OrderSide, OrderStatus
from domain.portfolio import Portfolio, Reservation, RiskLimits, TradingState
from domain.positions import Position


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


async def children_of(pool: asyncpg.Pool, parent_order_id: UUID) -> list[OrderSnapshot]:
    """A parent order's children (its slices), in the order they were sent."""
    rows = await pool.fetch(
        "SELECT * FROM orders WHERE parent_order_id = $1 ORDER BY created_at, id",
        parent_order_id,
    )
    return [order_snapshot_from_row(row) for row in rows]


# One statement, so one snapshot (even at READ COMMITTED) and one round trip, where
# PortfolioRepository.get takes three SELECTs and, for a consistent read, BEGIN and COMMIT.
# The children come as JSON arrays sent as text (a pool's json codec would parse numbers as
# floats): parsed here as Decimal, every digit kept; and no composite type is cached by the
# driver that a migration could make stale. Plans (EXPLAIN
# ANALYZE, bench/stress_bench.py's portfolio): the portfolio by its primary key; positions
# by the primary key (portfolio_id, symbol) prefix; reservations by
# idx_reservations_portfolio_id.
PORTFOLIO_WITH_CHILDREN = """
SELECT p.*,
    (SELECT coalesce(json_agg(json_build_object(
        'symbol', s.symbol, 'quantity', s.quantity, 'cost_basis', s.cost_basis,
        'realized_pnl', s.realized_pnl, 'commission_paid', s.commission_paid,
        'stop_loss_price', s.stop_loss_price, 'take_profit_price', s.take_profit_price,
        'opened_at', s.opened_at, 'updated_at', s.updated_at)), '[]')::text
     FROM positions s WHERE s.portfolio_id = p.id) AS position_rows,
    (SELECT coalesce(json_agg(json_build_object(
        'order_id', r.order_id, 'symbol', r.symbol, 'side', r.side,
        'quantity', r.quantity, 'amount', r.amount)), '[]')::text
     FROM reservations r WHERE r.portfolio_id = p.id) AS reservation_rows
FROM portfolios p WHERE p.id = $1
"""


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


async def load_portfolio(pool: asyncpg.Pool, portfolio_id: UUID) -> Portfolio:
    """The portfolio with every position and reservation, as PortfolioRepository.get
    loads it, from one statement."""
    row = await pool.fetchrow(PORTFOLIO_WITH_CHILDREN, portfolio_id)
    if row is None:
        raise NotFoundError(f"portfolio {portfolio_id} not found")
    portfolio = Portfolio(
        id=row["id"],
        name=row["name"],
        currency=row["currency"],
        initial_capital=row["initial_capital"],
        cash_balance=row["cash_balance"],
        limits=RiskLimits(**{name: row[name] for name in LIMIT_FIELDS}),
        trading_state=TradingState(row["trading_state"]),
        day_start_equity=row["day_start_equity"],
        realized_pnl=row["realized_pnl"],
        total_commissions=row["total_commissions"],
        trades_won=row["trades_won"],
        trades_lost=row["trades_lost"],
        gross_profit=row["gross_profit"],
        gross_loss=row["gross_loss"],
        updated_at=row["updated_at"],
    )
    for item in json.loads(row["position_rows"], parse_float=Decimal, parse_int=Decimal):
        position = Position(
            symbol=item["symbol"],
            quantity=item["quantity"],
            cost_basis=item["cost_basis"],
            realized_pnl=item["realized_pnl"],
            commission_paid=item["commission_paid"],
            stop_loss_price=_decimal(item["stop_loss_price"]),
            take_profit_price=_decimal(item["take_profit_price"]),
            opened_at=_time(item["opened_at"]),
            updated_at=_time(item["updated_at"]),
        )
        portfolio.positions[position.symbol] = position
    for item in json.loads(row["reservation_rows"], parse_float=Decimal, parse_int=Decimal):
        order_id = UUID(item["order_id"])
        portfolio.reservations[order_id] = Reservation(
            order_id=order_id,
            symbol=item["symbol"],
            side=OrderSide(item["side"]),
            quantity=item["quantity"],
            amount=item["amount"],
        )
    return portfolio
