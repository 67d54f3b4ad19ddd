"""The PostgreSQL store: a unit of work and the repositories that map rows to the domain.

Every amount crosses this boundary as a Decimal (asyncpg decodes NUMERIC to Decimal) and is
written back without rounding; the schema's domains refuse a digit they cannot hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TypeAlias
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from contracts.payloads import OrderSnapshot
from domain.errors import DomainError, ErrorCode
from domain.orders import Fill, Order, OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio, Reservation, RiskLimits, TradingState
from domain.positions import Position

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"

OPEN_STATUSES = tuple(s.value for s in OrderStatus if s.is_open)
LIMIT_FIELDS = (
    "max_position_size",
    "max_portfolio_risk",
    "max_positions",
    "max_leverage",
    "max_order_notional",
    "max_concentration",
    "daily_loss_limit",
    "market_order_buffer",
)


class StoreError(DomainError):
    """A write the database refused: an invariant held by a constraint, not only by Python."""

    code = ErrorCode.CONFLICT

    def __init__(self, message: str, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message)


class NotFoundError(DomainError):
    code = ErrorCode.NOT_FOUND


def _translate(err: asyncpg.PostgresError) -> StoreError:
    constraint = getattr(err, "constraint_name", None)
    table = getattr(err, "table_name", None)
    kinds: dict[type[Exception], str] = {
        asyncpg.UniqueViolationError: "duplicate",
        asyncpg.CheckViolationError: "invariant violated",
        asyncpg.ForeignKeyViolationError: "unknown reference",
        asyncpg.NotNullViolationError: "missing value",
    }
    kind = kinds.get(type(err), "refused")
    return StoreError(f"{kind} in {table or 'store'} ({constraint or err.sqlstate})", constraint)


class UnitOfWork:
    """One transaction on one connection; rolls back unless `commit()` was called.

    async with UnitOfWork(pool) as uow:
        ...
        await uow.commit()
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.committed = False

    async def __aenter__(self) -> UnitOfWork:
        self.conn: Connection = await self._pool.acquire()
        self._tx = self.conn.transaction()
        await self._tx.start()
        self.portfolios = PortfolioRepository(self.conn)
        self.orders = OrderRepository(self.conn)
        return self

    async def commit(self) -> None:
        try:
            await self._tx.commit()
        except asyncpg.IntegrityConstraintViolationError as err:
            raise _translate(err) from err
        self.committed = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.committed:
                await self._tx.rollback()
        finally:
            await self._pool.release(self.conn)  # type: ignore[arg-type]
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            raise _translate(exc) from exc


# -- portfolios ----------------------------------------------------------------------------


def _limits_from(row: asyncpg.Record) -> RiskLimits:
    return RiskLimits(**{name: row[name] for name in LIMIT_FIELDS})


def _position_from(row: asyncpg.Record) -> Position:
    return Position(
        symbol=row["symbol"],
        quantity=row["quantity"],
        cost_basis=row["cost_basis"],
        realized_pnl=row["realized_pnl"],
        commission_paid=row["commission_paid"],
        stop_loss_price=row["stop_loss_price"],
        take_profit_price=row["take_profit_price"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
    )


class PortfolioRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, portfolio: Portfolio) -> None:
        limits = portfolio.limits
        await self.conn.execute(
            """
            INSERT INTO portfolios (id, name, currency, initial_capital, cash_balance,
                trading_state, max_position_size, max_portfolio_risk, max_positions,
                max_leverage, max_order_notional, max_concentration, daily_loss_limit,
                market_order_buffer, day_start_equity)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            """,
            portfolio.id,
            portfolio.name,
            portfolio.currency,
            portfolio.initial_capital,
            portfolio.cash,
            portfolio.trading_state.value,
            *(getattr(limits, name) for name in LIMIT_FIELDS),
            portfolio.day_start_equity,
        )

    async def get(
        self,
        portfolio_id: UUID,
        *,
        for_update: bool = False,
        symbols: Sequence[str] | None = None,
        reservations_for: Sequence[UUID] | None = None,
    ) -> Portfolio:
        """Load a portfolio with its positions and reservations.

        `for_update` locks the portfolio row: every change to cash, positions or
        reservations takes this lock first, so concurrent orders serialise on it.
        `symbols` / `reservations_for` narrow what is loaded for single-order operations.
        """
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT * FROM portfolios WHERE id = $1{lock}", portfolio_id
        )
        if row is None:
            raise NotFoundError(f"portfolio {portfolio_id} not found")
        position_rows = await self._children("positions", portfolio_id, "symbol", "text", symbols)
        reservation_rows = await self._children(
            "reservations", portfolio_id, "order_id", "uuid", reservations_for
        )
        portfolio = Portfolio(
            id=row["id"],
            name=row["name"],
            currency=row["currency"],
            initial_capital=row["initial_capital"],
            cash_balance=row["cash_balance"],
            limits=_limits_from(row),
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
        for position_row in position_rows:
            position = _position_from(position_row)
            portfolio.positions[position.symbol] = position
        for r in reservation_rows:
            portfolio.reservations[r["order_id"]] = Reservation(
                order_id=r["order_id"],
                symbol=r["symbol"],
                side=OrderSide(r["side"]),
                quantity=r["quantity"],
                amount=r["amount"],
            )
        return portfolio

    async def _children(
        self,
        table: str,
        portfolio_id: UUID,
        key: str,
        key_type: str,
        only: Sequence[object] | None,
    ) -> list[asyncpg.Record]:
        """A portfolio's rows in `table` ("positions" or "reservations"), or only those
        whose `key` is in `only` (a single-order operation needs one position, one
        reservation)."""
        if only is None:
            return await self.conn.fetch(
                f"SELECT * FROM {table} WHERE portfolio_id = $1", portfolio_id
            )
        return await self.conn.fetch(
            f"SELECT * FROM {table} WHERE portfolio_id = $1 AND {key} = ANY($2::{key_type}[])",
            portfolio_id,
            list(only),
        )

    async def save(self, portfolio: Portfolio, *, symbols: Sequence[str] | None = None) -> None:
        """Write the portfolio row, its positions (or only `symbols`) and its reservations.

        Reservations loaded but no longer present are deleted: releasing is removal.
        """
        await self.conn.execute(
            """
            UPDATE portfolios SET cash_balance = $2, trading_state = $3, day_start_equity = $4,
                realized_pnl = $5, total_commissions = $6, trades_won = $7, trades_lost = $8,
                gross_profit = $9, gross_loss = $10, version = version + 1, updated_at = now()
            WHERE id = $1
            """,
            portfolio.id,
            portfolio.cash,
            portfolio.trading_state.value,
            portfolio.day_start_equity,
            portfolio.realized_pnl,
            portfolio.total_commissions,
            portfolio.trades_won,
            portfolio.trades_lost,
            portfolio.gross_profit,
            portfolio.gross_loss,
        )
        positions = [
            p for p in portfolio.positions.values() if symbols is None or p.symbol in symbols
        ]
        if positions:
            await self.conn.executemany(
                """
                INSERT INTO positions (portfolio_id, symbol, quantity, cost_basis,
                    average_entry_price, realized_pnl, commission_paid, stop_loss_price,
                    take_profit_price, opened_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, now()))
                ON CONFLICT (portfolio_id, symbol) DO UPDATE SET
                    quantity = EXCLUDED.quantity, cost_basis = EXCLUDED.cost_basis,
                    average_entry_price = EXCLUDED.average_entry_price,
                    realized_pnl = EXCLUDED.realized_pnl,
                    commission_paid = EXCLUDED.commission_paid,
                    stop_loss_price = EXCLUDED.stop_loss_price,
                    take_profit_price = EXCLUDED.take_profit_price,
                    opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at,
                    version = positions.version + 1
                """,
                [
                    (
                        portfolio.id,
                        p.symbol,
                        p.quantity,
                        p.basis,
                        p.average_entry_price,
                        p.realized_pnl,
                        p.commission_paid,
                        p.stop_loss_price,
                        p.take_profit_price,
                        p.opened_at,
                        p.updated_at,
                    )
                    for p in positions
                ],
            )

    async def save_reservation(self, portfolio_id: UUID, reservation: Reservation) -> None:
        await self.conn.execute(
            """
            INSERT INTO reservations (order_id, portfolio_id, symbol, side, quantity, amount)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (order_id) DO UPDATE SET quantity = EXCLUDED.quantity,
                amount = EXCLUDED.amount, updated_at = now()
            """,
            reservation.order_id,
            portfolio_id,
            reservation.symbol,
            reservation.side.value,
            reservation.quantity,
            reservation.amount,
        )

    async def delete_reservation(self, order_id: UUID) -> None:
        await self.conn.execute("DELETE FROM reservations WHERE order_id = $1", order_id)

    async def sync_reservation(self, portfolio: Portfolio, order_id: UUID) -> None:
        """Make the stored reservation of one order match the domain's (or delete it)."""
        reservation = portfolio.reservations.get(order_id)
        if reservation is None:
            await self.delete_reservation(order_id)
        else:
            await self.save_reservation(portfolio.id, reservation)


# -- orders --------------------------------------------------------------------------------


def _common_fields(row: asyncpg.Record) -> dict[str, object]:
    """The columns an Order and an OrderSnapshot read the same way."""
    return {
        "portfolio_id": row["portfolio_id"],
        "client_order_id": row["client_order_id"],
        "symbol": row["symbol"],
        "side": OrderSide(row["side"]),
        "order_type": OrderType(row["order_type"]),
        "time_in_force": TimeInForce(row["time_in_force"]),
        "quantity": row["quantity"],
        "limit_price": row["limit_price"],
        "stop_price": row["stop_price"],
        "trail_price": row["trail_price"],
        "trail_percent": row["trail_percent"],
        "order_class": OrderClass(row["order_class"]),
        "parent_order_id": row["parent_order_id"],
        "status": OrderStatus(row["status"]),
        "filled_quantity": row["filled_quantity"],
        "filled_notional": row["filled_notional"],
        "commission": row["commission"],
        "broker_order_id": row["broker_order_id"],
        "reject_code": row["reject_code"],
        "reject_reason": row["reject_reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "submitted_at": row["submitted_at"],
        "filled_at": row["filled_at"],
        "closed_at": row["closed_at"],
    }


def order_from_row(row: asyncpg.Record, execution_ids: Sequence[str] = ()) -> Order:
    return Order(id=row["id"], execution_ids=set(execution_ids), **_common_fields(row))  # type: ignore[arg-type]


def order_snapshot_from_row(row: asyncpg.Record) -> OrderSnapshot:
    return OrderSnapshot(
        order_id=row["id"],
        average_fill_price=row["average_fill_price"],
        version=row["version"],
        expires_at=row["expires_at"],
        **_common_fields(row),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class OrderFilter:
    portfolio_id: UUID | None = None
    status: Sequence[OrderStatus] | None = None
    symbol: str | None = None
    limit: int = 100
    created_before: datetime | None = None


class OrderRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, order: Order, expires_at: datetime | None = None) -> OrderSnapshot:
        row = await self.conn.fetchrow(
            """
            INSERT INTO orders (id, portfolio_id, client_order_id, symbol, side, order_type,
                time_in_force, quantity, limit_price, stop_price, status, filled_quantity,
                filled_notional, average_fill_price, commission, broker_order_id, reject_code,
                reject_reason, created_at, updated_at, submitted_at, filled_at, closed_at,
                expires_at, trail_price, trail_percent, order_class, parent_order_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, coalesce($20::timestamptz, $19), $21, $22, $23, $24, $25, $26, $27,
                $28)
            RETURNING *
            """,
            order.id,
            order.portfolio_id,
            order.client_order_id or str(order.id),
            order.symbol,
            order.side.value,
            order.order_type.value,
            order.time_in_force.value,
            order.quantity,
            order.limit_price,
            order.stop_price,
            order.status.value,
            order.filled_quantity,
            order.filled_notional,
            order.average_fill_price,
            order.commission,
            order.broker_order_id,
            order.reject_code,
            order.reject_reason,
            order.created_at,
            order.updated_at,
            order.submitted_at,
            order.filled_at,
            order.closed_at,
            expires_at,
            order.trail_price,
            order.trail_percent,
            order.order_class.value,
            order.parent_order_id,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return order_snapshot_from_row(row)

    async def get_row(self, order_id: UUID, *, for_update: bool = False) -> asyncpg.Record:
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(f"SELECT * FROM orders WHERE id = $1{lock}", order_id)
        if row is None:
            raise NotFoundError(f"order {order_id} not found")
        return row

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order:
        return order_from_row(await self.get_row(order_id, for_update=for_update))

    async def find(self, order_id: UUID) -> OrderSnapshot | None:
        row = await self.conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        return None if row is None else order_snapshot_from_row(row)

    async def by_client_order_id(
        self, portfolio_id: UUID, client_order_id: str
    ) -> OrderSnapshot | None:
        row = await self.conn.fetchrow(
            "SELECT * FROM orders WHERE portfolio_id = $1 AND client_order_id = $2",
            portfolio_id,
            client_order_id,
        )
        return None if row is None else order_snapshot_from_row(row)

    async def save(self, order: Order) -> OrderSnapshot:
        row = await self.conn.fetchrow(
            """
            UPDATE orders SET status = $2, filled_quantity = $3, filled_notional = $4,
                average_fill_price = $5, commission = $6, broker_order_id = $7,
                reject_code = $8, reject_reason = $9, updated_at = coalesce($10, now()),
                submitted_at = $11, filled_at = $12, closed_at = $13, version = version + 1
            WHERE id = $1
            RETURNING *
            """,
            order.id,
            order.status.value,
            order.filled_quantity,
            order.filled_notional,
            order.average_fill_price,
            order.commission,
            order.broker_order_id,
            order.reject_code,
            order.reject_reason,
            order.updated_at,
            order.submitted_at,
            order.filled_at,
            order.closed_at,
        )
        if row is None:
            raise NotFoundError(f"order {order.id} not found")
        return order_snapshot_from_row(row)

    async def add_execution(self, order: Order, execution: Fill) -> bool:
        """Record one execution; False when its execution id is already recorded."""
        inserted = await self.conn.fetchval(
            """
            INSERT INTO executions (execution_id, order_id, portfolio_id, symbol, side,
                quantity, price, notional, commission, executed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (execution_id) DO NOTHING
            RETURNING true
            """,
            execution.execution_id,
            order.id,
            order.portfolio_id,
            order.symbol,
            order.side.value,
            execution.quantity,
            execution.price,
            execution.notional,
            execution.commission,
            execution.executed_at,
        )
        return bool(inserted)

    async def search(self, query: OrderFilter) -> list[OrderSnapshot]:
        clauses: list[str] = []
        args: list[object] = []
        if query.portfolio_id is not None:
            args.append(query.portfolio_id)
            clauses.append(f"portfolio_id = ${len(args)}")
        if query.status:
            args.append([s.value for s in query.status])
            clauses.append(f"status = ANY(${len(args)}::text[])")
        if query.symbol is not None:
            args.append(query.symbol)
            clauses.append(f"symbol = ${len(args)}")
        if query.created_before is not None:
            args.append(query.created_before)
            clauses.append(f"created_at < ${len(args)}")
        args.append(max(1, min(query.limit, 1000)))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.conn.fetch(
            f"SELECT * FROM orders {where} ORDER BY created_at DESC, id LIMIT ${len(args)}",
            *args,
        )
        return [order_snapshot_from_row(row) for row in rows]

    async def active(self, portfolio_id: UUID | None = None) -> list[OrderSnapshot]:
        return await self.search(
            OrderFilter(
                portfolio_id=portfolio_id,
                status=[OrderStatus(s) for s in OPEN_STATUSES],
                limit=1000,
            )
        )
