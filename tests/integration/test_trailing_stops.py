"""Trailing stops: the matching rule (pure), the Alpaca mapping, and a trailing stop on the
real venue and a real order workflow across a rally and a drop, with the worker (workflow
worker, venue loop and outbox relay) stopped and started again in the middle."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.brokers.alpaca_rest import order_body
from activities.calendar.sessions import MarketSessions
from activities.order_activities import OrderActivities
from activities.store import ledger
from activities.store.repositories import UnitOfWork
from activities.venue.exchange import PaperVenue
from activities.venue.matching import VenueOrder, decide
from activities.venue.outbox import OutboxRelay, temporal_deliver
from contracts.payloads import (
    OrderRequest,
    OrderSnapshot,
    OrderWorkflowInput,
    OrderWorkflowOptions,
    order_id_for,
    workflow_id_for,
)
from contracts.ports import BrokerRejectedError
from domain.market import Quote
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio
from tests.fakes.feeds import ScriptedFeed
from tests.workflows.harness import COMMISSION, LIMITS, terminate_leftovers
from workflows.operations import WORKFLOWS as OPERATIONS_WORKFLOWS
from workflows.order import OrderWorkflow

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


# -- the rule --------------------------------------------------------------------------------


def _order(side: str = "sell", **fields: Any) -> VenueOrder:
    values: dict[str, Any] = {
        "client_order_id": "c-1",
        "broker_order_id": "PV-1",
        "symbol": "AAPL",
        "side": OrderSide(side),
        "order_type": OrderType.TRAILING_STOP,
        "time_in_force": TimeInForce.GTC,
        "quantity": D(10),
        "limit_price": None,
        "stop_price": None,
        "status": "new",
        "filled_quantity": D(0),
        "filled_notional": D(0),
        "triggered": False,
        "created_at": NOW - timedelta(minutes=1),
        "expires_at": None,
        "last_quote_at": None,
        "reason": None,
        "fills": 0,
        "trail_price": D("2.00"),
    }
    return VenueOrder(**(values | fields))


def _quote(last: str, at: datetime = NOW) -> Quote:
    price = D(last)
    return Quote("AAPL", price - D("0.01"), price + D("0.01"), D(1000), D(1000), price, at)


def _pass(order: VenueOrder, last: str, at: datetime = NOW) -> tuple[VenueOrder, Any]:
    match = decide(order, _quote(last, at), at, True, timedelta(seconds=1), D(0))
    return replace(order, mark=match.mark, triggered=match.triggered), match


def test_a_sell_trailing_stop_follows_the_rally_and_triggers_a_trail_below_the_high():
    order = _order()
    order, match = _pass(order, "150.00")
    assert (order.mark, match.triggered, match.quantity) == (D("150.00"), False, 0)
    for last in ("151.00", "155.00", "154.00", "153.01"):
        order, match = _pass(order, last)
        assert not match.triggered, last
    assert order.mark == D("155.00")  # a fall does not lower the mark

    order, match = _pass(order, "153.00")

    assert match.triggered and match.quantity == 10
    assert match.price == D("152.99")  # a market order at the bid
    assert match.mark == D("155.00")


def test_a_buy_trailing_stop_follows_the_drop_and_triggers_a_percent_above_the_low():
    order = _order("buy", trail_price=None, trail_percent=D("1"))
    for last in ("100.00", "98.00", "97.00", "97.96"):
        order, match = _pass(order, last)
        assert not match.triggered, last
    assert order.mark == D("97.00")  # the low; the stop stands at 97.97

    order, match = _pass(order, "97.97")

    assert match.triggered and match.price == D("97.98")  # at the ask


def test_a_stored_mark_is_where_the_stop_resumes_not_the_price_of_the_moment():
    resumed = _order(mark=D("155.00"))
    _, match = _pass(resumed, "152.50")
    assert match.triggered  # 155 - 2 = 153: the stop is above the price
    fresh = _order()
    _, match = _pass(fresh, "152.50")
    assert not match.triggered  # a stop that started at 152.50 would stand at 150.50


def test_alpaca_gets_its_own_trailing_stop_with_the_trail():
    request = OrderRequest(
        order_id=uuid.uuid4(),
        portfolio_id=uuid.uuid4(),
        client_order_id="t-1",
        symbol="AAPL",
        side=OrderSide.SELL,
        quantity=D(5),
        order_type=OrderType.TRAILING_STOP,
        time_in_force=TimeInForce.GTC,
        trail_percent=D("1.5"),
    )
    body = order_body(request)
    assert body["type"] == "trailing_stop" and body["trail_percent"] == "1.5"
    assert "trail_price" not in body and "stop_price" not in body
    with pytest.raises(BrokerRejectedError):
        order_body(replace(request, trail_percent=None))
    with pytest.raises(BrokerRejectedError):
        order_body(replace(request, order_type=OrderType.MARKET))


# -- on the venue, through a worker restart --------------------------------------------------


@dataclass
class World:
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    feed: ScriptedFeed
    portfolio: Portfolio
    task_queue: str
    sessions: MarketSessions

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[PaperVenue]:
        """One worker's life: the workflow worker, a venue loop and an outbox relay, all
        new objects reading the same PostgreSQL, stopped on exit (workflows stay)."""
        venue = PaperVenue(
            self.pool,
            self.feed,
            self.sessions,
            COMMISSION,
            latency_ms=0,
            quote_refresh=timedelta(milliseconds=1),
        )
        activities = OrderActivities(
            self.pool,
            self.feed,
            venue,
            self.sessions,
            COMMISSION,
            clock=lambda: datetime.now(UTC),
        )
        relay = OutboxRelay(self.pool, temporal_deliver(self.env.client, self.pool))
        stop = asyncio.Event()
        async with Worker(
            self.env.client,
            task_queue=self.task_queue,
            workflows=[OrderWorkflow, *OPERATIONS_WORKFLOWS],
            activities=activities.all(),
            # No sticky cache: every workflow task goes to the shared queue, so the next
            # worker gets the order's tasks at once (and replays its history, as after a
            # crash) instead of the server waiting out the gone worker's sticky queue.
            max_cached_workflows=0,
        ):
            tasks = [
                asyncio.create_task(venue.run(stop, tick_ms=10)),
                asyncio.create_task(relay.run(stop, interval_ms=10)),
            ]
            try:
                yield venue
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def place(self, side: str, quantity: str, **fields: Any) -> OrderSnapshot:
        client_order_id = str(uuid.uuid4())
        order_id = order_id_for(self.portfolio.id, client_order_id)
        request = OrderRequest(
            order_id=order_id,
            portfolio_id=self.portfolio.id,
            client_order_id=client_order_id,
            symbol="AAPL",
            side=OrderSide(side),
            quantity=D(quantity),
            time_in_force=TimeInForce.GTC,
            **fields,
        )
        start = WithStartWorkflowOperation(
            OrderWorkflow.run,
            # No workflow cache on these workers (see below): no local activities.
            OrderWorkflowInput(
                request, OrderWorkflowOptions(poll_interval_seconds=30, local_store_steps=False)
            ),
            id=workflow_id_for(order_id),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        decided: OrderSnapshot = await self.env.client.execute_update_with_start_workflow(
            OrderWorkflow.decision, start_workflow_operation=start
        )
        return decided

    async def order(self, order_id: UUID) -> OrderSnapshot:
        async with UnitOfWork(self.pool) as uow:
            found = await uow.orders.find(order_id)
        assert found is not None
        return found

    async def until(self, what: str, check: Any, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def mark(self, order_id: UUID) -> D | None:
        value: D | None = await self.pool.fetchval(
            "SELECT mark FROM venue_orders WHERE client_order_id = $1", str(order_id)
        )
        return value


@pytest.fixture
async def world(temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool) -> AsyncIterator[World]:
    portfolio = Portfolio(initial_capital=D("100000.00"), limits=LIMITS, name="trailing")
    await ledger.create_portfolio(db_pool, portfolio)
    feed = ScriptedFeed()
    world = World(
        temporal_env,
        db_pool,
        feed,
        portfolio,
        f"orders-{uuid.uuid4()}",
        MarketSessions("always_open"),
    )
    try:
        yield world
    finally:
        await terminate_leftovers(temporal_env.client, db_pool)


@pytest.mark.integration
async def test_a_trailing_stop_survives_a_worker_restart_and_resumes_from_its_mark(world: World):
    feed = world.feed
    feed.set_quote("AAPL", "149.99", "150.01", last="150.00")
    async with world.worker():
        entry = await world.place("buy", "10")
        await world.until("the entry fill", lambda: _status(world, entry, OrderStatus.FILLED))
        stop = await world.place(
            "sell", "10", order_type=OrderType.TRAILING_STOP, trail_price=D("2.00")
        )
        assert stop.status is OrderStatus.ACCEPTED and stop.trail_price == D("2.00")
        await world.until("the mark", lambda: _mark_is(world, stop.order_id, "150.00"))
        for last in ("151.00", "153.00", "155.00"):  # the rally
            feed.set_quote("AAPL", _minus(last), _plus(last), last=last)
            await world.until(
                f"mark {last}", lambda last=last: _mark_is(world, stop.order_id, last)
            )
        feed.set_quote("AAPL", "153.99", "154.01", last="154.00")  # a dip, above the stop

    # The worker is gone. The price moves while nothing watches: a venue that restarted
    # from the price of the moment would put the stop at 152.00.
    feed.set_quote("AAPL", "153.49", "153.51", last="153.50")
    assert await world.mark(stop.order_id) == D("155.00")

    async with world.worker():
        feed.set_quote("AAPL", "152.49", "152.51", last="152.50")  # the drop, through 153.00
        done = await world.until(
            "the stop's fill", lambda: _status(world, stop, OrderStatus.FILLED)
        )

    assert done.filled_quantity == 10 and done.average_fill_price == D("152.49")
    assert await world.mark(stop.order_id) == D("155.00")
    portfolio = await _portfolio(world)
    assert "AAPL" not in {p.symbol for p in portfolio.open_positions()}
    assert portfolio.reserved() == 0


async def _status(world: World, order: OrderSnapshot, status: OrderStatus) -> Any:
    now = await world.order(order.order_id)
    return now if now.status is status else None


async def _mark_is(world: World, order_id: UUID, value: str) -> bool:
    return await world.mark(order_id) == D(value)


async def _portfolio(world: World) -> Portfolio:
    async with UnitOfWork(world.pool) as uow:
        return await uow.portfolios.get(world.portfolio.id)


def _minus(last: str) -> str:
    return str(D(last) - D("0.01"))


def _plus(last: str) -> str:
    return str(D(last) + D("0.01"))
