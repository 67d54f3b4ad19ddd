"""Operations on the real PostgreSQL and the broker fakes, without Temporal.

The brokers' side of reconciliation, the discrepancies no order workflow can repair, the
halt transaction, stuck orders, and the operator command line.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities.brokers.alpaca_rest import AlpacaBroker
from activities.calendar.sessions import MarketSessions
from activities.operations_activities import OperationsActivities
from activities.store import ledger
from activities.store.queries import find_stuck_orders
from activities.store.repositories import UnitOfWork
from activities.venue.exchange import PaperVenue
from contracts.payloads import (
    DiscrepancyKind,
    OrderRequest,
    ReconciliationReport,
    RecordTradingStateInput,
    ReportStatus,
)
from domain.commissions import PerShare
from domain.orders import Order, OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio, TradingState
from tests.fakes.alpaca import OPEN, FakeAlpaca
from tests.fakes.feeds import ScriptedFeed
from tests.fakes.server import json_response
from worker import operator_cli as operator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 18, 20, 0, tzinfo=UTC)


def request(symbol: str = "AAPL", quantity: str = "10", limit: str | None = None, **kw):
    return OrderRequest(
        order_id=kw.pop("order_id", uuid4()),
        portfolio_id=kw.pop("portfolio_id", uuid4()),
        client_order_id=str(uuid4()),
        symbol=symbol,
        side=kw.pop("side", OrderSide.BUY),
        quantity=Decimal(quantity),
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        time_in_force=TimeInForce.GTC,
        limit_price=None if limit is None else Decimal(limit),
    )


@pytest.fixture
async def venue(db_pool) -> PaperVenue:
    feed = ScriptedFeed(clock=lambda: NOW)
    feed.set_quote("AAPL", "189.99", "190.00")
    feed.set_quote("MSFT", "399.99", "400.00")
    return PaperVenue(
        db_pool, feed, MarketSessions("always_open"), PerShare(), latency_ms=0, clock=lambda: NOW
    )


async def store_order(pool, portfolio: Portfolio, status: OrderStatus, updated_at: datetime):
    """An order row as the saga leaves it, last changed at `updated_at`."""
    order = Order("MSFT", Decimal("3"), OrderSide.BUY, portfolio_id=portfolio.id)
    order.created_at = updated_at
    order.accept(at=updated_at)
    if status is not OrderStatus.ACCEPTED:
        order.submit(f"B-{order.id}", at=updated_at)
    async with UnitOfWork(pool) as uow:
        snapshot = await uow.orders.add(order)
        await uow.commit()
    return snapshot


async def test_the_paper_venue_reports_net_positions_and_its_working_orders(venue):
    bought = request(quantity="10")
    sold = request(quantity="4", side=OrderSide.SELL)
    resting = request(symbol="MSFT", quantity="2", limit="350.00")
    for order in (bought, sold, resting):
        await venue.submit(order)
    await venue.match_once()

    assert await venue.positions() == {"AAPL": Decimal("6")}
    (working,) = await venue.open_orders()
    assert working.client_order_id == str(resting.order_id)
    assert (working.status, working.filled_quantity) == (OrderStatus.SUBMITTED, 0)


async def test_orders_the_saga_cannot_repair_are_flagged(db_pool, venue):
    portfolio = Portfolio(initial_capital=Decimal("100000.00"))
    await ledger.create_portfolio(db_pool, portfolio)
    missing = await store_order(db_pool, portfolio, OrderStatus.SUBMITTED, NOW)
    not_yet_sent = await store_order(db_pool, portfolio, OrderStatus.ACCEPTED, NOW)
    foreign = request(symbol="MSFT", quantity="1", limit="300.00")  # placed behind our back
    await venue.submit(foreign)

    activities = OperationsActivities(
        db_pool,
        venue,
        venue.market_data,
        MarketSessions("always_open"),  # type: ignore[arg-type]
    )
    report = ReconciliationReport(uuid4(), NOW, ReportStatus.RUNNING)
    found = (await activities.compare_with_broker(report)).discrepancies

    assert {d.kind for d in found} == {
        DiscrepancyKind.ORDER_MISSING_AT_BROKER,
        DiscrepancyKind.ORDER_OPEN_ONLY_AT_BROKER,
    }
    by_kind = {d.kind: d for d in found}
    assert by_kind[DiscrepancyKind.ORDER_MISSING_AT_BROKER].order_id == missing.order_id
    orphan = by_kind[DiscrepancyKind.ORDER_OPEN_ONLY_AT_BROKER]
    assert orphan.order_id is None and orphan.note == "not placed by this system"
    assert orphan.actual["client_order_id"] == str(foreign.order_id)
    assert not any(d.order_id == not_yet_sent.order_id for d in found)
    assert not any(d.kind.repairable for d in found)


async def test_halting_lists_the_open_orders_in_the_transaction_that_halts(db_pool, venue):
    portfolio = Portfolio(initial_capital=Decimal("100000.00"))
    await ledger.create_portfolio(db_pool, portfolio)
    open_order = await store_order(db_pool, portfolio, OrderStatus.SUBMITTED, NOW)
    activities = OperationsActivities(
        db_pool,
        venue,
        venue.market_data,
        MarketSessions("always_open"),  # type: ignore[arg-type]
    )
    halt = RecordTradingStateInput(portfolio.id, TradingState.HALTED, "test")
    first = await activities.record_trading_state(halt)
    again = await activities.record_trading_state(halt)  # a retried activity
    assert (first.previous, first.state) == (TradingState.ACTIVE, TradingState.HALTED)
    assert first.orders_to_cancel == again.orders_to_cancel == [open_order.order_id]
    state = await db_pool.fetchval(
        "SELECT trading_state FROM portfolios WHERE id = $1", portfolio.id
    )
    assert state == "halted"


async def test_stuck_orders_are_those_at_the_broker_unchanged_for_too_long(db_pool):
    portfolio = Portfolio(initial_capital=Decimal("100000.00"))
    await ledger.create_portfolio(db_pool, portfolio)
    old = await store_order(db_pool, portfolio, OrderStatus.SUBMITTED, NOW - timedelta(hours=2))
    await store_order(db_pool, portfolio, OrderStatus.SUBMITTED, NOW - timedelta(minutes=5))
    await store_order(db_pool, portfolio, OrderStatus.ACCEPTED, NOW - timedelta(hours=3))

    (stuck,) = await find_stuck_orders(db_pool, timedelta(minutes=15), now=NOW)
    assert (stuck.order_id, stuck.status, stuck.age) == (
        old.order_id,
        OrderStatus.SUBMITTED,
        timedelta(hours=2),
    )
    assert stuck.workflow_id == f"order-{old.order_id}"
    assert await find_stuck_orders(db_pool, timedelta(hours=3), now=NOW) == []


@pytest.fixture
async def alpaca() -> AsyncIterator[FakeAlpaca]:
    fake = FakeAlpaca()

    async def list_orders(request: Request) -> Response:  # GET /v2/orders?status=open
        assert request.query_params["status"] == "open"
        return json_response([o for o in fake.orders.values() if o["status"] in OPEN])

    fake.app.router.routes.append(Route("/v2/orders", list_orders, methods=["GET"]))
    async with fake:
        yield fake


async def test_alpaca_lists_its_open_orders_for_reconciliation(alpaca):
    broker = AlpacaBroker(alpaca.api_key, alpaca.secret_key, alpaca.base_url, timeout_seconds=1)
    resting = request(quantity="5", limit="150.00")
    await broker.submit(resting)
    filled = request(quantity="2", limit="190.00")
    await broker.submit(filled)
    await alpaca.fill(str(filled.order_id), "2", "187.00")

    (state,) = await broker.open_orders()
    assert state.client_order_id == str(resting.order_id)
    assert (state.status, state.filled_quantity) == (OrderStatus.SUBMITTED, 0)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trading")
    operator.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_the_operator_commands_parse_as_documented():
    stuck = parse("orders", "stuck", "--older-than", "1h30m")
    assert stuck.older_than == timedelta(hours=1, minutes=30)
    assert parse("orders", "stuck").older_than == timedelta(minutes=15)
    order_id = uuid4()
    assert parse("orders", "reconcile", f"order-{order_id}").order_id == order_id
    halt = parse("halt", "--portfolio", str(order_id), "--reason", "broker outage")
    assert (halt.state, halt.portfolio, halt.reason) == (
        TradingState.HALTED,
        [order_id],
        "broker outage",
    )
    assert parse("resume").state is TradingState.ACTIVE and parse("resume").portfolio is None
    assert parse("reduce").state is TradingState.REDUCING
    with pytest.raises(SystemExit):
        parse("orders", "stuck", "--older-than", "soon")
    assert operator.format_age(timedelta(hours=26)) == "1d 2h"
    assert operator.format_age(timedelta(minutes=75)) == "1h 15m"
    assert operator.format_age(timedelta(seconds=42)) == "42s"
    assert operator.stuck_query() == (
        'ExecutionStatus="Running" AND (OrderStatus IN '
        '("submitted", "partially_filled", "pending_cancel") OR BrokerStatus="unreachable")'
    )
