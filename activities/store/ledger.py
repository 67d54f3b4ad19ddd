"""The store's transactions: each operation on orders and the portfolio is one unit of work.

Lock order, everywhere: the portfolio row first, then the order row. Every change to cash,
positions or reservations holds the portfolio lock, so concurrent orders and fills on one
portfolio serialise and no update is lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from activities import metrics
from activities.store.repositories import UnitOfWork, order_snapshot_from_row
from contracts.payloads import BrokerEvent, OrderRequest, OrderSnapshot, RecordStatusInput
from domain.errors import IllegalTransitionError, ValidationError
from domain.orders import Fill, Order, OrderSide, OrderStatus, TimeInForce
from domain.portfolio import Portfolio
from domain.risk import RiskDecision, accept_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarketContext:
    """What risk needs to know about the market at the moment of the decision."""

    bid: Decimal
    ask: Decimal
    commission: Decimal
    market_open: bool
    expires_at: datetime | None  # session close for DAY orders


def order_from_request(request: OrderRequest, now: datetime) -> Order:
    return Order(
        id=request.order_id,
        portfolio_id=request.portfolio_id,
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        quantity=request.quantity,
        order_type=request.order_type,
        time_in_force=request.time_in_force,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        trail_price=request.trail_price,
        trail_percent=request.trail_percent,
        order_class=request.order_class,
        parent_order_id=request.parent_order_id,
        created_at=now,
    )


async def create_portfolio(pool: asyncpg.Pool, portfolio: Portfolio) -> None:
    async with UnitOfWork(pool) as uow:
        await uow.portfolios.add(portfolio)
        await uow.commit()


async def place_order(
    pool: asyncpg.Pool,
    request: OrderRequest,
    now: datetime,
    market: MarketContext | None,
    rejection: tuple[str, str] | None = None,
) -> OrderSnapshot:
    """Risk check, buying-power reservation and the order row, in one transaction.

    With `rejection` (code, reason) the order is stored as rejected without a risk check.
    Idempotent: the order id is the primary key; a second call returns the first's row.
    """
    async with UnitOfWork(pool) as uow:
        existing = await uow.orders.find(request.order_id)
        if existing is not None:
            return existing
        portfolio = await uow.portfolios.get(request.portfolio_id, for_update=True)
        existing = await uow.orders.find(request.order_id)  # a twin won the lock first
        if existing is not None:
            return existing
        order = order_from_request(request, now)
        expires_at = None
        if rejection is not None:
            order.reject(rejection[1], rejection[0], at=now)
        elif market is None:
            order.reject("no market price", "VALIDATION_ERROR", at=now)
        else:
            decide(portfolio, order, market)
            if order.time_in_force is TimeInForce.DAY and order.status.is_open:
                expires_at = market.expires_at
        snapshot = await uow.orders.add(order, expires_at)
        if market is not None:  # the arrival price fills are measured against (slippage)
            arrival = market.ask if order.side is OrderSide.BUY else market.bid
            await uow.conn.execute(
                "UPDATE orders SET arrival_price = $2 WHERE id = $1", order.id, arrival
            )
        await uow.portfolios.sync_reservation(portfolio, order.id)
        await uow.commit()
        metrics.order_changed(None, snapshot)
        return snapshot


def decide(portfolio: Portfolio, order: Order, market: MarketContext) -> RiskDecision:
    """Accept (and reserve) or reject `order`, marking its symbol's position at the mid."""
    price = market.ask if order.side is OrderSide.BUY else market.bid
    position = portfolio.positions.get(order.symbol)
    if position is not None and not position.is_closed():
        position.mark((market.bid + market.ask) / 2)
    return accept_order(portfolio, order, price, market.commission, market.market_open)


async def apply_fill(pool: asyncpg.Pool, order_id: UUID, fill: Fill) -> OrderSnapshot:
    """Apply one execution to order, position, cash and reservation in one transaction.

    Idempotent: the execution id is the executions table's primary key; when it is already
    there nothing else is written and the current order is returned.
    """
    async with UnitOfWork(pool) as uow:
        head = await uow.orders.get_row(order_id)
        portfolio = await uow.portfolios.get(
            head["portfolio_id"],
            for_update=True,
            symbols=[head["symbol"]],
            reservations_for=[order_id],
        )
        order = await uow.orders.get(order_id, for_update=True)
        before = order.status
        if not await uow.orders.add_execution(order, fill):
            return order_snapshot_from_row(await uow.orders.get_row(order_id))
        portfolio.apply_fill(order, fill)
        await uow.portfolios.save(portfolio, symbols=[order.symbol])
        await uow.portfolios.sync_reservation(portfolio, order.id)
        snapshot = await uow.orders.save(order)
        await uow.commit()
        metrics.fill_applied(snapshot, fill, head["arrival_price"])
        metrics.order_changed(before, snapshot)
        return snapshot


async def record_status(
    pool: asyncpg.Pool, change: RecordStatusInput, now: datetime
) -> OrderSnapshot:
    """Record a status change that is not a fill; a terminal status releases what is left
    of the order's reservation in the same transaction.

    Idempotent: a change already made, or one the order can no longer make because it has
    moved on (a cancel after the last fill), is a no-op returning the current order.
    """
    async with UnitOfWork(pool) as uow:
        head = await uow.orders.get_row(change.order_id)
        portfolio = await uow.portfolios.get(
            head["portfolio_id"], for_update=True, symbols=[], reservations_for=[change.order_id]
        )
        order = await uow.orders.get(change.order_id, for_update=True)
        before = order.status
        try:
            changed = _change_status(order, change, now)
        except IllegalTransitionError as err:
            log.info("order %s: %s; it stays %s", order.id, err, order.status.value)
            changed = False
        if order.status.is_terminal and order.id in portfolio.reservations:
            portfolio.release(order.id)
            await uow.portfolios.sync_reservation(portfolio, order.id)
            changed = True
        if not changed:
            # The row as read under the lock, not `head` (read before it): a concurrent change
            # (the main loop recording the broker's cancel) must not come back as a stale
            # snapshot that a cancel update would then answer with.
            return order_snapshot_from_row(await uow.orders.get_row(change.order_id))
        snapshot = await uow.orders.save(order)
        await uow.commit()
        metrics.order_changed(before, snapshot, change.code)
        return snapshot


async def book_late_event(
    pool: asyncpg.Pool, client_order_id: str, event: BrokerEvent, found_by: str | None = None
) -> bool:
    """A broker event for an order whose workflow has closed: keep it, flagged for
    operators in `late_broker_events`, and apply a fill to the ledger. Returns whether a
    fill was applied by this call. `found_by` (reconciliation) starts the audit note.

    Idempotent: the fill goes through `apply_fill`, which applies an execution id once,
    and the audit row is keyed on the execution id (or event and order for non-fills), so
    a redelivery writes nothing new. An event of an order we do not know is kept, not
    applied.
    """
    order_id = _our_order_id(client_order_id)
    if order_id is not None and not await pool.fetchval(
        "SELECT 1 FROM orders WHERE id = $1", order_id
    ):
        order_id = None
    applied = booked = False  # applied by this call / in the ledger by now
    note = "workflow closed; kept for operators"
    if event.event.is_fill and order_id is not None:
        fill: Fill | None = None
        try:
            fill = fill_of(event)
            if fill is None:
                note = "a fill without execution id, quantity or price: not applied"
        except ValidationError as err:  # kept, not retried: a poison row would block the relay
            note = f"not a valid execution ({err}): not applied"
        if fill is not None:
            before = await pool.fetchval(
                "SELECT 1 FROM executions WHERE execution_id = $1", fill.execution_id
            )
            await apply_fill(pool, order_id, fill)
            applied, booked = before is None, True
            note = "fill after the workflow closed: applied to the ledger"
    elif order_id is None:
        note = "no order of ours has this client order id"
    if found_by is not None:
        note = f"{found_by}: {note}"
    inserted = await pool.fetchval(
        """
        INSERT INTO late_broker_events (dedupe_key, client_order_id, order_id, event, payload,
                                        applied, note)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id
        """,
        event.execution_id or f"{event.event.value}:{client_order_id}",
        client_order_id,
        order_id,
        event.event.value,
        {
            "execution_id": event.execution_id,
            "quantity": event.quantity,
            "price": event.price,
            "commission": event.commission,
            "cumulative_quantity": event.cumulative_quantity,
            "reason": event.reason,
            "timestamp": event.timestamp,
        },
        booked,
        note,
    )
    if inserted is not None:
        log.warning(
            "late broker event %s for %s (workflow closed): %s",
            event.event.value,
            client_order_id,
            note,
        )
    return applied


def fill_of(event: BrokerEvent) -> Fill | None:
    """The execution a fill event reports, or None when it lacks an id, quantity or price.
    Raises ValidationError for values no execution can have (a non-positive quantity)."""
    if event.execution_id is None or event.quantity is None or event.price is None:
        return None
    return Fill(
        execution_id=event.execution_id,
        quantity=event.quantity,
        price=event.price,
        commission=event.commission,
        executed_at=event.timestamp,
    )


def _our_order_id(client_order_id: str) -> UUID | None:
    """Our client order id is our order id; anything else was not placed by us."""
    try:
        return UUID(client_order_id)
    except ValueError:
        return None


async def record_broker_reachability(
    pool: asyncpg.Pool, order_id: UUID, unreachable_since: datetime | None
) -> None:
    """Set (or clear, with None) the time since when the order's broker is unreachable.
    A mark already set keeps its first instant: the outage started then."""
    await pool.execute(
        "UPDATE orders SET broker_unreachable_since = "
        "CASE WHEN $2::timestamptz IS NULL THEN NULL "
        "ELSE coalesce(broker_unreachable_since, $2) END WHERE id = $1",
        order_id,
        unreachable_since,
    )


def _change_status(order: Order, change: RecordStatusInput, now: datetime) -> bool:
    """Apply one non-fill status change to the order; False if it is already there.

    A closed order never changes again: a stale answer (a poll that started before the
    cancel completed) is a no-op. A broker that rejects an order we hold as partially filled
    or pending cancel has closed it: with fills it is recorded canceled (what was filled
    stays filled; the reject reason and code are kept), without fills rejected.
    """
    target = change.status
    if order.status.is_terminal:
        return False
    if target is OrderStatus.REJECTED and order.filled_quantity > 0:
        order.cancel(f"rejected by the broker: {change.reason or 'no reason given'}", at=now)
        order.reject_code = change.code
        return True
    if target is OrderStatus.SUBMITTED and order.status is not OrderStatus.PENDING_CANCEL:
        if order.broker_order_id == change.broker_order_id and order.submitted_at:
            return False
        order.submit(change.broker_order_id or "", at=now)
        return True
    if order.status is target:
        return False
    if target is OrderStatus.PENDING_CANCEL:
        order.request_cancel(at=now)
    elif target is OrderStatus.CANCELED:
        order.cancel(change.reason, at=now)
    elif target is OrderStatus.EXPIRED:
        order.expire(at=now)
    elif target is OrderStatus.REJECTED:
        order.reject(change.reason or "rejected", change.code, at=now)
    elif target in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
        order.cancel_refused(at=now)
    else:
        order.transition_to(target, at=now)
    return True
