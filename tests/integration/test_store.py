"""The store against a real PostgreSQL: exact round trips, the ledger transactions, and
constraints that hold even when Python does not."""

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from uuid import uuid4

import pytest

from activities.store import ledger
from activities.store.ledger import MarketContext
from activities.store.repositories import StoreError, UnitOfWork
from contracts.payloads import OrderRequest, RecordStatusInput, order_id_for
from domain.orders import Fill, Order, OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio, RiskLimits

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
LIMITS = RiskLimits(
    max_position_size=D("1000000"),
    max_order_notional=D("1000000"),
    max_concentration=D("1"),
    max_positions=50,
    daily_loss_limit=D("100000"),
)


def market(bid: str = "99.99", ask: str = "100.01", commission: str = "0") -> MarketContext:
    return MarketContext(D(bid), D(ask), D(commission), True, NOW + timedelta(hours=1))


def request(portfolio: Portfolio, symbol: str, qty: str, side: str = "buy", **kw) -> OrderRequest:
    client_order_id = kw.pop("client_order_id", str(uuid4()))
    return OrderRequest(
        order_id=order_id_for(portfolio.id, client_order_id),
        portfolio_id=portfolio.id,
        client_order_id=client_order_id,
        symbol=symbol,
        side=OrderSide(side),
        quantity=D(qty),
        **kw,
    )


async def new_portfolio(pool, cash: str = "100000.00") -> Portfolio:
    portfolio = Portfolio(initial_capital=D(cash), limits=LIMITS, name="test")
    await ledger.create_portfolio(pool, portfolio)
    return portfolio


async def load(pool, portfolio_id) -> Portfolio:
    async with UnitOfWork(pool) as uow:
        return await uow.portfolios.get(portfolio_id)


async def submitted(pool, portfolio, symbol, qty, side="buy", **kw):
    snapshot = await ledger.place_order(
        pool, request(portfolio, symbol, qty, side, **kw), NOW, market()
    )
    assert snapshot.status is OrderStatus.ACCEPTED, snapshot.reject_reason
    change = RecordStatusInput(snapshot.order_id, OrderStatus.SUBMITTED, f"B-{snapshot.order_id}")
    return await ledger.record_status(pool, change, NOW)


async def test_portfolio_round_trips_with_every_digit(db_pool):
    portfolio = Portfolio(
        initial_capital=D("123456.78"),
        cash_balance=D("123456.78901234"),
        limits=RiskLimits(max_portfolio_risk=D("0.0125"), market_order_buffer=D("0.015")),
    )
    await ledger.create_portfolio(db_pool, portfolio)
    loaded = await load(db_pool, portfolio.id)
    assert loaded.cash == D("123456.78901234")
    assert loaded.limits == portfolio.limits
    assert loaded.trading_state is portfolio.trading_state


async def test_order_round_trips_fractional_quantity_and_sub_penny_price(db_pool):
    portfolio = await new_portfolio(db_pool)
    req = request(
        portfolio,
        "PENNY",
        "1234.567891",
        order_type=OrderType.LIMIT,
        limit_price=D("0.1234"),
        time_in_force=TimeInForce.GTC,
    )
    snapshot = await ledger.place_order(db_pool, req, NOW, market("0.1233", "0.1235"))
    assert snapshot.status is OrderStatus.ACCEPTED
    async with UnitOfWork(db_pool) as uow:
        order = await uow.orders.get(req.order_id)
    assert order.quantity == D("1234.567891")
    assert order.limit_price == D("0.1234")
    assert order.created_at == NOW
    reserved = (await load(db_pool, portfolio.id)).reserved()
    assert reserved == D("152.35")  # 1234.567891 x 0.1234 = 152.3456... rounded up


async def test_get_active_orders_filters_correctly(db_pool):
    portfolio = await new_portfolio(db_pool)
    pending = await submitted(db_pool, portfolio, "AAPL", "100")
    filled = await submitted(db_pool, portfolio, "GOOGL", "50")
    await ledger.apply_fill(
        db_pool, filled.order_id, Fill("x-1", D("50"), D("100"), executed_at=NOW)
    )
    async with UnitOfWork(db_pool) as uow:
        active = await uow.orders.active(portfolio.id)
    assert [o.order_id for o in active] == [pending.order_id]
    assert active[0].status is OrderStatus.SUBMITTED


async def test_placing_the_same_order_twice_returns_the_first(db_pool):
    portfolio = await new_portfolio(db_pool)
    req = request(portfolio, "AAPL", "10", client_order_id="client-1")
    first = await ledger.place_order(db_pool, req, NOW, market())
    second = await ledger.place_order(db_pool, req, NOW + timedelta(seconds=1), market())
    assert second == first
    assert (await load(db_pool, portfolio.id)).reserved() == D("1020.11")  # once, not twice


async def test_a_refused_order_is_stored_rejected_and_reserves_nothing(db_pool):
    portfolio = await new_portfolio(db_pool, cash="500.00")
    snapshot = await ledger.place_order(db_pool, request(portfolio, "AAPL", "10"), NOW, market())
    assert snapshot.status is OrderStatus.REJECTED
    assert snapshot.reject_code == "INSUFFICIENT_FUNDS"
    reloaded = await load(db_pool, portfolio.id)
    assert reloaded.reservations == {} and reloaded.cash == D("500.00")


async def test_a_fill_moves_order_position_cash_and_reservation_together(db_pool):
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    fill = Fill("f-1", D("4"), D("100.02"), D("0.01"), executed_at=NOW)
    after = await ledger.apply_fill(db_pool, order.order_id, fill)
    assert after.status is OrderStatus.PARTIALLY_FILLED
    assert after.filled_quantity == D("4") and after.average_fill_price == D("100.02")
    reloaded = await load(db_pool, portfolio.id)
    assert reloaded.cash == D("100000.00") - D("400.08") - D("0.01")
    assert reloaded.positions["AAPL"].quantity == D("4")
    assert reloaded.positions["AAPL"].cost_basis == D("400.08")
    assert reloaded.reservations[order.order_id].amount == D("1020.11") - D("400.09")
    assert reloaded.ledger_imbalance() == 0


async def test_the_same_execution_applied_twice_is_applied_once(db_pool):
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    fill = Fill("f-1", D("10"), D("100"), executed_at=NOW)
    first = await ledger.apply_fill(db_pool, order.order_id, fill)
    second = await ledger.apply_fill(db_pool, order.order_id, fill)
    assert first == second and first.status is OrderStatus.FILLED
    reloaded = await load(db_pool, portfolio.id)
    assert reloaded.cash == D("99000.00") and reloaded.reservations == {}


async def test_fifty_concurrent_fills_lose_no_update_and_double_apply_nothing(db_pool):
    portfolio = await new_portfolio(db_pool)
    orders = [await submitted(db_pool, portfolio, sym, "5") for sym in ("AAPL", "MSFT")] + [
        await submitted(db_pool, portfolio, "AAPL", "5") for _ in range(8)
    ]
    fills = [
        (o.order_id, Fill(f"{o.order_id}-{k}", D("1"), D("100.00") + k, D("0.01"), NOW))
        for o in orders
        for k in range(5)
    ]
    assert len(fills) == 50
    # every fill twice, all at once: 100 transactions racing for one portfolio row
    await asyncio.gather(*(ledger.apply_fill(db_pool, oid, f) for oid, f in fills + fills))
    reloaded = await load(db_pool, portfolio.id)
    spent = sum((f.quantity * f.price + f.commission for _, f in fills), D(0))
    assert reloaded.cash == D("100000.00") - spent
    assert reloaded.positions["AAPL"].quantity == D("45")
    assert reloaded.positions["MSFT"].quantity == D("5")
    assert reloaded.total_commissions == D("0.50")
    assert reloaded.reservations == {}
    assert reloaded.ledger_imbalance() == 0
    count = await db_pool.fetchval("SELECT count(*) FROM executions")
    assert count == 50


async def test_a_terminal_status_releases_the_reservation(db_pool):
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    await ledger.apply_fill(db_pool, order.order_id, Fill("f-1", D("3"), D("100"), executed_at=NOW))
    change = RecordStatusInput(order.order_id, OrderStatus.CANCELED, reason="client")
    canceled = await ledger.record_status(db_pool, change, NOW)
    again = await ledger.record_status(db_pool, change, NOW)
    assert canceled.status is OrderStatus.CANCELED and again == canceled
    assert canceled.filled_quantity == D("3")
    assert (await load(db_pool, portfolio.id)).reservations == {}


async def test_a_late_cancel_of_a_filled_order_changes_nothing(db_pool):
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "1")
    filled = await ledger.apply_fill(
        db_pool, order.order_id, Fill("f-1", D("1"), D("100"), executed_at=NOW)
    )
    change = RecordStatusInput(order.order_id, OrderStatus.CANCELED, reason="late")
    assert await ledger.record_status(db_pool, change, NOW) == filled


async def test_a_constraint_violation_surfaces_as_a_store_error_and_writes_nothing(db_pool):
    portfolio = await new_portfolio(db_pool)
    order = Order(symbol="AAPL", quantity=D("1"), side=OrderSide.BUY, portfolio_id=portfolio.id)
    twin = Order(
        symbol="AAPL",
        quantity=D("1"),
        side=OrderSide.BUY,
        portfolio_id=portfolio.id,
        client_order_id=str(order.id),
    )
    with pytest.raises(StoreError, match="duplicate in orders") as exc:
        async with UnitOfWork(db_pool) as uow:
            await uow.orders.add(order)
            await uow.orders.add(twin)
            await uow.commit()
    assert exc.value.constraint == "orders_client_order_id_unique"
    assert await db_pool.fetchval("SELECT count(*) FROM orders") == 0


async def test_the_database_refuses_an_overfill_that_python_let_through(db_pool):
    portfolio = await new_portfolio(db_pool)
    placed = await submitted(db_pool, portfolio, "AAPL", "1")
    async with UnitOfWork(db_pool) as uow:
        order = await uow.orders.get(placed.order_id)
    order.filled_quantity = D("2")  # bypassing the domain, as a bug would
    order.filled_notional = D("200")
    with pytest.raises(StoreError, match="invariant violated in orders") as exc:
        async with UnitOfWork(db_pool) as uow:
            await uow.orders.save(order)
            await uow.commit()
    assert exc.value.constraint == "orders_filled_within_quantity"


async def test_listing_orders_filters_by_status_and_symbol_and_bounds_the_page(db_pool):
    portfolio = await new_portfolio(db_pool)
    for symbol in ("AAPL", "AAPL", "MSFT"):
        await submitted(db_pool, portfolio, symbol, "1")
    from activities.store.repositories import OrderFilter

    async with UnitOfWork(db_pool) as uow:
        aapl = await uow.orders.search(OrderFilter(portfolio_id=portfolio.id, symbol="AAPL"))
        one = await uow.orders.search(OrderFilter(portfolio_id=portfolio.id, limit=1))
        none = await uow.orders.search(
            OrderFilter(portfolio_id=portfolio.id, status=[OrderStatus.FILLED])
        )
    assert len(aapl) == 2 and len(one) == 1 and none == []


@pytest.mark.parametrize("working", [OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL])
async def test_a_broker_reject_closes_a_partly_filled_order_and_releases_the_rest(db_pool, working):
    """The broker has closed the order: it must close in the books too (it used to be
    swallowed as an illegal transition, leaving the workflow polling and the cash held)."""
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    await ledger.apply_fill(db_pool, order.order_id, Fill("f-1", D("4"), D("100"), executed_at=NOW))
    if working is OrderStatus.PENDING_CANCEL:
        await ledger.record_status(db_pool, RecordStatusInput(order.order_id, working), NOW)
    change = RecordStatusInput(
        order.order_id, OrderStatus.REJECTED, reason="halted", code="BROKER_REJECTED"
    )
    closed = await ledger.record_status(db_pool, change, NOW)
    assert closed.status is OrderStatus.CANCELED and closed.filled_quantity == D("4")
    assert closed.reject_code == "BROKER_REJECTED" and "halted" in (closed.reject_reason or "")
    assert (await load(db_pool, portfolio.id)).reservations == {}


async def test_a_broker_reject_of_an_unfilled_order_pending_cancel_rejects_it(db_pool):
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    await ledger.record_status(
        db_pool, RecordStatusInput(order.order_id, OrderStatus.PENDING_CANCEL), NOW
    )
    change = RecordStatusInput(order.order_id, OrderStatus.REJECTED, reason="no", code="X")
    closed = await ledger.record_status(db_pool, change, NOW)
    assert closed.status is OrderStatus.REJECTED
    assert (await load(db_pool, portfolio.id)).reservations == {}


async def test_a_stale_working_status_after_the_cancel_completed_changes_nothing(db_pool):
    """A poll that started before the cancel answers `submitted` (no broker id) after the
    order closed: a no-op, not a ValidationError that would fail the workflow."""
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    change = RecordStatusInput(order.order_id, OrderStatus.CANCELED, reason="client")
    canceled = await ledger.record_status(db_pool, change, NOW)
    for stale in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.REJECTED):
        again = await ledger.record_status(db_pool, RecordStatusInput(order.order_id, stale), NOW)
        assert again == canceled


async def test_a_no_op_status_change_answers_with_the_row_as_it_is_under_the_lock(db_pool):
    """Two records race: the main loop closes the order while a cancel records
    pending_cancel. The loser's no-op must answer with the closed row, never the row it
    read before it waited for the lock (a cancel update answered pending_cancel)."""
    portfolio = await new_portfolio(db_pool)
    order = await submitted(db_pool, portfolio, "AAPL", "10")
    async with db_pool.acquire() as conn, conn.transaction():
        # Hold the portfolio lock, as the winning transaction does, while the loser starts.
        await conn.execute("SELECT 1 FROM portfolios WHERE id = $1 FOR UPDATE", portfolio.id)
        loser = asyncio.create_task(
            ledger.record_status(
                db_pool, RecordStatusInput(order.order_id, OrderStatus.PENDING_CANCEL), NOW
            )
        )
        await asyncio.sleep(0.2)  # the loser has read its unlocked head and now waits
        await conn.execute(
            "UPDATE orders SET status = 'canceled', version = version + 1, closed_at = $2 "
            "WHERE id = $1",
            order.order_id,
            NOW,
        )
        await conn.execute("DELETE FROM reservations WHERE order_id = $1", order.order_id)
    answer = await loser
    assert answer.status is OrderStatus.CANCELED
