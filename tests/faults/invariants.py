"""What must hold for one schedule: its books against the venue, its ledger, its workflows.

A `LaneView` is read in one REPEATABLE READ snapshot (the books and the paper venue live in
the same database), so the comparison never mixes two moments. Two sets of checks:

* `safety_divergences`: true at every committed state, faults or not, so the campaign
  checks them after every step: the ledger identity (`ledger_imbalance() == 0`), cash not
  negative (leverage 1), no order closed in the books while it works at the venue, no fill
  booked that the venue did not make, fills not doubled inside the books (an order's filled
  quantity equals its executions, positions equal their executions, commissions equal
  theirs), no reservation left on a closed order or on an order not of this portfolio.
* `settled_divergences`: once every fault is restored and time has passed: the above, and
  every order's books equal the venue (open/closed, filled quantity, the set of execution
  ids: no fill lost), every order decided, positions equal the venue's, every workflow
  closed for a closed order and running for an open one, and the only open orders are
  resting limit/stop orders working at the venue, not waiting on an unreachable broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

import asyncpg

from activities.store.repositories import PortfolioRepository
from domain.errors import ErrorCode
from domain.orders import OrderSide, OrderStatus, OrderType
from domain.portfolio import Portfolio

ZERO = Decimal(0)
VENUE_STATUS = {
    "new": OrderStatus.SUBMITTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
RESTING_TYPES = (OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT)
RESTING_STATUSES = (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True)
class Execution:
    quantity: Decimal
    price: Decimal
    commission: Decimal


@dataclass
class BookOrder:
    """One order as the books hold it."""

    symbol: str
    side: OrderSide
    order_type: OrderType
    status: OrderStatus
    filled_quantity: Decimal
    executions: dict[str, Execution] = field(default_factory=dict)
    unreachable: bool = False  # broker_unreachable_since is set
    reject_code: str | None = None


@dataclass
class VenueOrder:
    """One order as the paper venue holds it."""

    status: OrderStatus
    filled_quantity: Decimal
    executions: dict[str, Execution] = field(default_factory=dict)


@dataclass
class LaneView:
    """Everything about one schedule, read at one moment."""

    portfolio: Portfolio
    labels: dict[UUID, str]  # every order the schedule has placed (or is placing)
    books: dict[UUID, BookOrder]
    venue: dict[UUID, VenueOrder]
    symbols: tuple[str, ...]
    undelivered_events: int = 0  # venue outbox rows of these orders not delivered yet
    held_events: int = 0  # events the fault path holds back (late, reordered)
    unanswered: list[str] = field(default_factory=list)  # place/cancel calls still waiting
    call_failures: list[str] = field(default_factory=list)  # calls that failed unexpectedly
    workflows: dict[UUID, str] | None = None  # execution status name, when read

    def label(self, order_id: UUID) -> str:
        return self.labels.get(order_id, str(order_id))


def _signed(order: BookOrder, quantity: Decimal) -> Decimal:
    return quantity if order.side is OrderSide.BUY else -quantity


def safety_divergences(view: LaneView) -> list[str]:
    """What must hold at every moment, whatever the faults."""
    out: list[str] = []
    portfolio = view.portfolio
    imbalance = portfolio.ledger_imbalance()
    if imbalance != 0:
        out.append(
            f"ledger imbalance {imbalance}: initial capital {portfolio.initial_capital} != "
            f"cash {portfolio.cash} + cost basis - realized {portfolio.realized_pnl} + "
            f"commissions {portfolio.total_commissions}"
        )
    if portfolio.cash < 0:
        out.append(f"cash is negative: {portfolio.cash}")
    commissions = ZERO
    for order_id, order in view.books.items():
        name = view.label(order_id)
        booked = sum((e.quantity for e in order.executions.values()), ZERO)
        commissions += sum((e.commission for e in order.executions.values()), ZERO)
        if booked != order.filled_quantity:
            out.append(
                f"{name}: filled {order.filled_quantity} in the books but its executions "
                f"add up to {booked} (a fill doubled or lost in the books)"
            )
        venue = view.venue.get(order_id)
        if venue is not None and order.status.is_terminal and venue.status.is_open:
            out.append(
                f"{name}: closed in the books ({order.status.value}) while working at the "
                f"venue ({venue.status.value})"
            )
        theirs = venue.executions if venue is not None else {}
        invented = sorted(set(order.executions) - set(theirs))
        if invented:
            out.append(f"{name}: fills booked that the venue never made: {invented}")
        for execution_id in sorted(set(order.executions) & set(theirs)):
            if order.executions[execution_id] != theirs[execution_id]:
                out.append(
                    f"{name}: execution {execution_id} booked as "
                    f"{order.executions[execution_id]}, the venue has {theirs[execution_id]}"
                )
        if order.status.is_terminal and order_id in portfolio.reservations:
            out.append(
                f"{name}: reservation of {portfolio.reservations[order_id].amount} still "
                f"held after it closed ({order.status.value})"
            )
    for order_id, reservation in portfolio.reservations.items():
        if order_id not in view.books:
            out.append(f"reservation {reservation.amount} for {order_id}, not an order here")
    if portfolio.total_commissions != commissions:
        out.append(
            f"commissions {portfolio.total_commissions} in the portfolio, {commissions} in "
            f"its executions"
        )
    for symbol in view.symbols:
        executed = sum(
            (
                _signed(order, e.quantity)
                for order in view.books.values()
                if order.symbol == symbol
                for e in order.executions.values()
            ),
            ZERO,
        )
        position = portfolio.positions.get(symbol)
        held = position.quantity if position is not None else ZERO
        if held != executed:
            out.append(
                f"position {symbol} is {held} in the books, its executions add to {executed}"
            )
    return out


def settled_divergences(view: LaneView) -> list[str]:
    """What must hold once every fault is restored and time has passed (and at every
    moment: `safety_divergences`)."""
    out = safety_divergences(view)
    for order_id in view.labels:
        if order_id not in view.books:
            out.append(f"{view.label(order_id)}: never decided (no order in the books)")
    venue_positions: dict[str, Decimal] = {}
    for order_id, order in view.books.items():
        name = view.label(order_id)
        venue = view.venue.get(order_id)
        if venue is None:
            if order.status.is_open:
                out.append(
                    f"{name}: {order.status.value} in the books, unknown at the venue after "
                    f"the faults were restored"
                )
            continue
        for e in venue.executions.values():
            venue_positions[order.symbol] = venue_positions.get(order.symbol, ZERO) + _signed(
                order, e.quantity
            )
        if order.status.is_open != venue.status.is_open:
            out.append(
                f"{name}: {order.status.value} in the books, {venue.status.value} at the venue"
            )
        if order.filled_quantity != venue.filled_quantity:
            out.append(
                f"{name}: filled {order.filled_quantity} in the books, "
                f"{venue.filled_quantity} at the venue"
            )
        lost = sorted(set(venue.executions) - set(order.executions))
        if lost:
            out.append(f"{name}: fills the venue made and the books lost: {lost}")
        if order.status.is_open:
            if order.order_type not in RESTING_TYPES or order.status not in RESTING_STATUSES:
                out.append(
                    f"{name}: still {order.status.value} ({order.order_type.value}) after the "
                    f"faults were restored and time passed"
                )
            if order.unreachable:
                out.append(f"{name}: still marked broker-unreachable after the link came back")
        if view.workflows is not None:
            workflow = view.workflows.get(order_id)
            expected = "RUNNING" if order.status.is_open else "COMPLETED"
            if workflow != expected:
                out.append(
                    f"{name}: workflow {workflow} for an order {order.status.value} in the "
                    f"books (expected {expected})"
                )
    for symbol in view.symbols:
        position = view.portfolio.positions.get(symbol)
        held = position.quantity if position is not None else ZERO
        theirs = venue_positions.get(symbol, ZERO)
        if held != theirs:
            out.append(f"position {symbol} is {held} in the books, {theirs} at the venue")
    if view.undelivered_events:
        out.append(f"{view.undelivered_events} venue events still undelivered in the outbox")
    if view.held_events:
        out.append(f"{view.held_events} events still held back by the event path")
    if view.unanswered:
        out.append(f"calls never answered: {', '.join(view.unanswered)}")
    out.extend(view.call_failures)
    return out


async def load_view(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,  # type: ignore[type-arg]
    portfolio_id: UUID,
    labels: dict[UUID, str],
    symbols: Sequence[str],
) -> LaneView:
    """Read one schedule's books and venue orders; call it inside a REPEATABLE READ
    transaction so every query sees the same moment."""
    ids = [str(order_id) for order_id in labels]
    books: dict[UUID, BookOrder] = {}
    for row in await conn.fetch(
        "SELECT id, symbol, side, order_type, status, filled_quantity, "
        "broker_unreachable_since, reject_code FROM orders WHERE portfolio_id = $1",
        portfolio_id,
    ):
        books[row["id"]] = BookOrder(
            symbol=row["symbol"],
            side=OrderSide(row["side"]),
            order_type=OrderType(row["order_type"]),
            status=OrderStatus(row["status"]),
            filled_quantity=row["filled_quantity"],
            unreachable=row["broker_unreachable_since"] is not None,
            reject_code=row["reject_code"],
        )
    for row in await conn.fetch(
        "SELECT order_id, execution_id, quantity, price, commission FROM executions "
        "WHERE portfolio_id = $1",
        portfolio_id,
    ):
        books[row["order_id"]].executions[row["execution_id"]] = Execution(
            row["quantity"], row["price"], row["commission"]
        )
    venue: dict[UUID, VenueOrder] = {}
    for row in await conn.fetch(
        "SELECT client_order_id, status, filled_quantity FROM venue_orders "
        "WHERE client_order_id = ANY($1::text[])",
        ids,
    ):
        venue[UUID(row["client_order_id"])] = VenueOrder(
            VENUE_STATUS[row["status"]], row["filled_quantity"]
        )
    for row in await conn.fetch(
        "SELECT client_order_id, execution_id, quantity, price, commission "
        "FROM venue_executions WHERE client_order_id = ANY($1::text[])",
        ids,
    ):
        venue[UUID(row["client_order_id"])].executions[row["execution_id"]] = Execution(
            row["quantity"], row["price"], row["commission"]
        )
    undelivered = await conn.fetchval(
        "SELECT count(*) FROM venue_outbox "
        "WHERE delivered_at IS NULL AND client_order_id = ANY($1::text[])",
        ids,
    )
    portfolio = await PortfolioRepository(conn).get(portfolio_id)
    return LaneView(
        portfolio=portfolio,
        labels=labels,
        books=books,
        venue=venue,
        symbols=tuple(symbols),
        undelivered_events=int(undelivered),
    )


def halt_divergences(
    view: LaneView, placed_at: dict[UUID, int], halted_at_step: int | None
) -> list[str]:
    """Once settled after the kill switch: no order is still working, and every order
    placed at a step after the one the halt was stored in was refused as halted."""
    problems = []
    for order_id, book in view.books.items():
        if not book.status.is_terminal:
            problems.append(f"{view.label(order_id)}: still {book.status.value} after the halt")
        step = placed_at.get(order_id)
        late = step is not None and halted_at_step is not None and step > halted_at_step
        if late and book.reject_code != ErrorCode.TRADING_HALTED.value:
            problems.append(
                f"{view.label(order_id)}: placed after the halt, yet {book.status.value} "
                f"({book.reject_code or 'no reject code'})"
            )
    return problems
