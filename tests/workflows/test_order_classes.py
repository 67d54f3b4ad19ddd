"""Parent orders (TWAP, VWAP) on the time-skipping server, the real PostgreSQL and the paper
venue: slices at their times, children as ordinary order workflows, the parent's
reservation handed to its slices, cancel, and a worker crash in the middle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import pytest
from temporalio.client import WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.calendar.sessions import MarketSessions
from activities.order_activities import OrderActivities
from activities.parent_activities import ParentActivities
from activities.store import ledger
from activities.store.repositories import UnitOfWork
from activities.venue.exchange import PaperVenue
from activities.venue.outbox import OutboxRelay, temporal_deliver
from contracts.payloads import (
    CancelRequest,
    ExecutionPlan,
    OrderRequest,
    OrderSnapshot,
    OrderWorkflowOptions,
    ParentWorkflowInput,
    child_client_order_id,
    order_id_for,
    workflow_id_for,
)
from domain.market import Bar, Timeframe
from domain.orders import OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio
from tests.fakes.feeds import ScriptedFeed
from tests.workflows.harness import COMMISSION, LIMITS, terminate_leftovers
from workflows.operations import WORKFLOWS as OPERATIONS_WORKFLOWS
from workflows.order import OrderWorkflow
from workflows.parent import ParentOrderWorkflow

pytestmark = pytest.mark.integration

HISTORIES = Path(__file__).parent / "histories" / "order_classes"
T = TypeVar("T")


@dataclass
class World:
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    feed: ScriptedFeed
    portfolio: Portfolio
    task_queue: str

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """One worker's life: workflow worker, venue loop and outbox relay, all new objects
        on the same PostgreSQL; on exit they stop and the workflows stay, as in a crash."""
        sessions = MarketSessions("always_open")
        venue = PaperVenue(
            self.pool,
            self.feed,
            sessions,
            COMMISSION,
            latency_ms=0,
            quote_refresh=timedelta(milliseconds=1),
        )
        clock = lambda: datetime.now(UTC)  # noqa: E731
        orders = OrderActivities(self.pool, self.feed, venue, sessions, COMMISSION, clock=clock)
        parents = ParentActivities(self.pool, self.feed, sessions, COMMISSION, clock=clock)
        relay = OutboxRelay(self.pool, temporal_deliver(self.env.client, self.pool))
        stop = asyncio.Event()
        async with Worker(
            self.env.client,
            task_queue=self.task_queue,
            workflows=[OrderWorkflow, ParentOrderWorkflow, *OPERATIONS_WORKFLOWS],
            activities=[*orders.all(), *parents.all()],
            # No sticky cache: the next worker gets every task at once and replays the
            # history, as after a crash, instead of the server waiting out a gone worker.
            max_cached_workflows=0,
        ):
            tasks = [
                asyncio.create_task(venue.run(stop, tick_ms=10)),
                asyncio.create_task(relay.run(stop, interval_ms=10)),
            ]
            try:
                yield
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def place_parent(
        self,
        quantity: str,
        plan: ExecutionPlan,
        order_type: OrderType = OrderType.MARKET,
        limit_price: str | None = None,
    ) -> tuple[OrderSnapshot, WorkflowHandle[Any, Any]]:
        client_order_id = f"algo-{uuid.uuid4()}"
        order_id = order_id_for(self.portfolio.id, client_order_id)
        request = OrderRequest(
            order_id=order_id,
            portfolio_id=self.portfolio.id,
            client_order_id=client_order_id,
            symbol="AAPL",
            side=OrderSide.BUY,
            quantity=D(quantity),
            order_type=order_type,
            time_in_force=TimeInForce.GTC,
            limit_price=None if limit_price is None else D(limit_price),
            order_class=plan.algorithm,
        )
        start = WithStartWorkflowOperation(
            ParentOrderWorkflow.run,
            ParentWorkflowInput(
                request,
                plan,
                # The workers here keep no workflow cache (see `worker`), which local
                # activities need: the children run their store steps as regular ones.
                OrderWorkflowOptions(poll_interval_seconds=30, local_store_steps=False),
            ),
            id=workflow_id_for(order_id),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        decided: OrderSnapshot = await self.env.client.execute_update_with_start_workflow(
            ParentOrderWorkflow.decision, start_workflow_operation=start
        )
        return decided, await start.workflow_handle()

    async def children(self, parent_id: UUID) -> list[OrderSnapshot]:
        async with UnitOfWork(self.pool) as uow:
            rows = await uow.conn.fetch(
                "SELECT id FROM orders WHERE parent_order_id = $1 ORDER BY client_order_id",
                parent_id,
            )
            found = [await uow.orders.find(row["id"]) for row in rows]
        return [child for child in found if child is not None]

    async def order(self, order_id: UUID) -> OrderSnapshot:
        async with UnitOfWork(self.pool) as uow:
            found = await uow.orders.find(order_id)
        assert found is not None
        return found

    async def reserved(self) -> D:
        async with UnitOfWork(self.pool) as uow:
            portfolio = await uow.portfolios.get(self.portfolio.id)
        return portfolio.reserved()

    async def until(self, what: str, check: Callable[[], Awaitable[T | None]]) -> T:
        """Wait in real time (the venue fills in real time) until `check` answers."""
        deadline = time.monotonic() + 20
        while True:
            value = await check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def filled_children(self, parent_id: UUID, count: int) -> list[OrderSnapshot] | None:
        children = await self.children(parent_id)
        done = [c for c in children if c.status is OrderStatus.FILLED]
        return children if len(children) == count and len(done) == count else None


@pytest.fixture
async def world(
    own_temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool
) -> AsyncIterator[World]:
    """Hours of skipped time: a clock of its own (see own_temporal_env)."""
    temporal_env = own_temporal_env
    portfolio = Portfolio(initial_capital=D("100000.00"), limits=LIMITS, name="algos")
    await ledger.create_portfolio(db_pool, portfolio)
    feed = ScriptedFeed()
    feed.set_quote("AAPL", "149.99", "150.01")
    yield World(temporal_env, db_pool, feed, portfolio, f"orders-{uuid.uuid4()}")
    await terminate_leftovers(temporal_env.client, db_pool)


async def record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """The parent's history for the replay test (RECORD_HISTORIES=1)."""
    if os.environ.get("RECORD_HISTORIES"):
        HISTORIES.mkdir(parents=True, exist_ok=True)
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_twap_over_an_hour_in_twelve_slices_survives_a_crash_after_slice_five(
    world: World,
):
    plan = ExecutionPlan(OrderClass.TWAP, duration_seconds=3600, slices=12)
    async with world.worker():
        parent, handle = await world.place_parent("120", plan)
        assert parent.status is OrderStatus.ACCEPTED
        assert parent.order_class is OrderClass.TWAP
        # The whole quantity is reserved at acceptance: 120 at the ask plus the buffer.
        assert await world.reserved() >= D("120") * D("150.01")
        await world.until("slice 1", lambda: world.filled_children(parent.order_id, 1))
        for sent in range(2, 6):
            await world.env.sleep(timedelta(minutes=5))
            await world.until(
                f"slice {sent}", lambda n=sent: world.filled_children(parent.order_id, n)
            )
    # The worker died after slice 5; the next one picks the parent up where it was.
    assert len(await world.children(parent.order_id)) == 5

    async with world.worker():
        async with world.env.time_skipping_unlocked():  # type: ignore[attr-defined]
            done: OrderSnapshot = await handle.result()

    children = await world.children(parent.order_id)
    expected = sorted(child_client_order_id(parent.order_id, i) for i in range(12))
    assert [c.client_order_id for c in children] == expected  # each slice once, none lost
    assert all(c.parent_order_id == parent.order_id for c in children)
    assert all(c.quantity == 10 and c.status is OrderStatus.FILLED for c in children)
    venue_rows = await world.pool.fetchval(
        "SELECT count(*) FROM venue_orders WHERE client_order_id = ANY($1::text[])",
        [str(c.order_id) for c in children],
    )
    assert venue_rows == 12  # each child reached the venue exactly once
    starts = sorted([await _started(world, c.order_id) for c in children])
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert all(gap >= timedelta(minutes=5) - timedelta(seconds=1) for gap in gaps), gaps
    assert starts[-1] - starts[0] >= timedelta(minutes=55) - timedelta(seconds=1)
    assert done.status is OrderStatus.FILLED and done.filled_quantity == 120
    assert done.average_fill_price == D("150.01")
    stored = await world.order(parent.order_id)
    assert stored.status is OrderStatus.FILLED and stored.commission == 0
    assert await world.reserved() == 0
    async with UnitOfWork(world.pool) as uow:
        portfolio = await uow.portfolios.get(world.portfolio.id)
    assert portfolio.positions["AAPL"].quantity == 120
    await record(handle, "twap_twelve_slices_with_a_crash")


async def test_vwap_sizes_its_slices_by_the_volume_profile_of_the_bars(world: World):
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)
    volumes = [100] * 5 + [300] * 5 + [100] * 5 + [500] * 5
    world.feed.set_bars(
        "AAPL",
        [
            Bar("AAPL", Timeframe.MINUTE_1, start + timedelta(minutes=i), *[D(150)] * 4, D(v))
            for i, v in enumerate(volumes)
        ],
    )
    plan = ExecutionPlan(OrderClass.VWAP, duration_seconds=600, slices=4)
    async with world.worker():
        parent, handle = await world.place_parent("100", plan)
        async with world.env.time_skipping_unlocked():  # type: ignore[attr-defined]
            done: OrderSnapshot = await handle.result()

    children = await world.children(parent.order_id)
    assert [c.quantity for c in children] == [10, 30, 10, 50]
    assert done.status is OrderStatus.FILLED and done.filled_quantity == 100
    assert await world.reserved() == 0
    await record(handle, "vwap_four_slices")


async def test_cancelling_a_parent_stops_its_slices_and_cancels_its_working_children(
    world: World,
):
    plan = ExecutionPlan(OrderClass.TWAP, duration_seconds=3600, slices=12)
    async with world.worker():
        parent, handle = await world.place_parent(
            "120", plan, order_type=OrderType.LIMIT, limit_price="140.00"
        )
        await world.until("slice 1 resting", lambda: _resting(world, parent.order_id, 1))
        await world.env.sleep(timedelta(minutes=5))
        await world.until("slice 2 resting", lambda: _resting(world, parent.order_id, 2))

        canceled = await handle.execute_update(
            ParentOrderWorkflow.cancel, CancelRequest("changed my mind")
        )

        assert canceled.status is OrderStatus.CANCELED and canceled.filled_quantity == 0
        await world.env.sleep(timedelta(hours=2))  # the remaining slices' times pass
        children = await world.children(parent.order_id)
        assert len(children) == 2  # the unsent slices are never sent
        assert all(c.status is OrderStatus.CANCELED for c in children)
        assert await world.reserved() == 0
    await record(handle, "twap_canceled_after_two_slices")


async def _resting(world: World, parent_id: UUID, count: int) -> bool:
    children = await world.children(parent_id)
    return len(children) == count and all(c.status is OrderStatus.SUBMITTED for c in children)


async def _started(world: World, order_id: UUID) -> datetime:
    """When the order's workflow started, on the server's (skipped) clock."""
    handle = world.env.client.get_workflow_handle(workflow_id_for(order_id))
    return (await handle.describe()).start_time
