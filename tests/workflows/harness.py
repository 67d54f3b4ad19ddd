"""A trading stack inside the test process: the time-skipping Temporal server, the real
activities on the real PostgreSQL, the paper venue and its outbox relay, and a scripted
market so each test decides the prices."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.bracket_activities import BracketActivities
from activities.calendar.sessions import MarketSessions
from activities.operations_activities import OperationsActivities
from activities.order_activities import OrderActivities
from activities.parent_activities import ParentActivities
from activities.protection_activities import ProtectionActivities
from activities.store import ledger
from activities.store.repositories import UnitOfWork
from activities.venue.exchange import PaperVenue
from activities.venue.outbox import OutboxRelay, temporal_deliver
from bootstrap.heartbeat import HeartbeatInterceptor
from contracts.payloads import (
    OrderRequest,
    OrderSnapshot,
    OrderWorkflowInput,
    OrderWorkflowOptions,
    order_id_for,
    workflow_id_for,
)
from contracts.ports import Broker, Deliver
from domain.commissions import PerShare
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio, RiskLimits
from tests.fakes.feeds import ScriptedFeed
from workflows.bracket import BracketWorkflow
from workflows.operations import WORKFLOWS as OPERATIONS_WORKFLOWS
from workflows.order import OrderWorkflow
from workflows.parent import ParentOrderWorkflow
from workflows.protection import ProtectionWorkflow

LIMITS = RiskLimits(
    max_position_size=Decimal("1000000"),
    max_order_notional=Decimal("1000000"),
    max_concentration=Decimal("1"),
    max_positions=100,
    daily_loss_limit=Decimal("1000000"),
)
COMMISSION = PerShare(rate=Decimal("0.005"), minimum=Decimal("1.00"))


@dataclass
class Stack:
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    feed: ScriptedFeed
    venue: PaperVenue
    task_queue: str
    portfolio: Portfolio
    options: OrderWorkflowOptions
    handles: dict[UUID, WorkflowHandle[Any, Any]] = field(default_factory=dict)

    async def place(
        self,
        symbol: str,
        quantity: str,
        side: str = "buy",
        order_type: str = "market",
        tif: str = "gtc",
        limit: str | None = None,
        stop: str | None = None,
        client_order_id: str | None = None,
    ) -> OrderSnapshot:
        """Start an order workflow and return once risk has decided.

        The API does both in one update-with-start; here the workflow is started and then
        asked with the `decision` update (as tests/faults/campaign.py does). The decision is
        made in the first workflow task, by local activities, so under load (a hundred
        orders on one portfolio row) the placing update can stay unaccepted for more than
        the test server's 10 s update wait. The client then sends the same
        update-with-start again, and the time-skipping test server answers a repeated one
        (deduplicated by request id, the update never attached) with a NullPointerException
        in waitForUpdateResponse: "Application error processing RPC", on every retry. A
        real server attaches the update to the running workflow; a plain update is
        deduplicated by its update id on both."""
        client_order_id = client_order_id or str(uuid.uuid4())
        order_id = order_id_for(self.portfolio.id, client_order_id)
        request = OrderRequest(
            order_id=order_id,
            portfolio_id=self.portfolio.id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=OrderSide(side),
            quantity=Decimal(quantity),
            order_type=OrderType(order_type),
            time_in_force=TimeInForce(tif),
            limit_price=None if limit is None else Decimal(limit),
            stop_price=None if stop is None else Decimal(stop),
        )
        handle = await self.env.client.start_workflow(
            OrderWorkflow.run,
            OrderWorkflowInput(request=request, options=self.options),
            id=workflow_id_for(order_id),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        # The handle update-with-start gives: it follows the workflow across continue-as-new
        # and its result() does not unlock the test server's clock by itself (`result`
        # below does that, once).
        self.handles[order_id] = WorkflowHandle(
            self.env.client,
            handle.id,
            first_execution_run_id=handle.first_execution_run_id or handle.result_run_id,
            result_run_id=handle.result_run_id,
            result_type=OrderSnapshot,
        )
        try:
            decided: OrderSnapshot = await handle.execute_update(OrderWorkflow.decision)
        except RPCError as err:
            # Refused in its first task, the order's workflow may close before the update
            # reaches it: then its result is the decision.
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            decided = await self.handles[order_id].result()
        return decided

    def handle(self, order_id: UUID) -> WorkflowHandle[Any, Any]:
        return self.handles[order_id]

    async def result(self, order_id: UUID) -> OrderSnapshot:
        """The workflow's result, letting the server skip time while we wait (only handles
        from start_workflow do that by themselves, not those from update-with-start)."""
        async with self.env.time_skipping_unlocked():  # type: ignore[attr-defined]
            result: OrderSnapshot = await self.handles[order_id].result()
        return result

    async def order(self, order_id: UUID) -> OrderSnapshot:
        async with UnitOfWork(self.pool) as uow:
            snapshot = await uow.orders.find(order_id)
        assert snapshot is not None
        return snapshot

    async def wait_for(
        self,
        order_id: UUID,
        done: Callable[[OrderSnapshot], bool] = lambda o: o.status.is_terminal,
        timeout: float = 15.0,
    ) -> OrderSnapshot:
        """Wait in real time (no time skipping) until the stored order satisfies `done`."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = await self.order(order_id)
            if done(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; order is {snapshot}")
            await asyncio.sleep(0.02)

    async def portfolio_now(self) -> Portfolio:
        async with UnitOfWork(self.pool) as uow:
            return await uow.portfolios.get(self.portfolio.id)

    async def venue_orders(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM venue_orders"))


def terminal(status: OrderStatus) -> Callable[[OrderSnapshot], bool]:
    return lambda o: o.status is status


@contextlib.asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    *,
    cash: str = "100000.00",
    broker: Callable[[PaperVenue], Broker] | None = None,
    deliver: Callable[[Deliver], Deliver] | None = None,
    options: OrderWorkflowOptions | None = None,
    venue_tick_ms: int = 10,
) -> AsyncIterator[Stack]:
    """Everything a worker runs, wired as the worker wires it, with test hooks:
    `broker` wraps the venue (fault injection), `deliver` wraps the relay's signal sender."""
    feed = ScriptedFeed()
    sessions = MarketSessions("always_open")
    # A scripted quote keeps its timestamp until the test sets the next one, so a short
    # refresh window makes every set_quote a fresh quote without waiting a second.
    venue = PaperVenue(
        pool, feed, sessions, COMMISSION, latency_ms=0, quote_refresh=timedelta(milliseconds=1)
    )
    portfolio = Portfolio(initial_capital=Decimal(cash), limits=LIMITS, name="test")
    await ledger.create_portfolio(pool, portfolio)
    task_queue = f"orders-{uuid.uuid4()}"
    activities = OrderActivities(
        pool,
        feed,
        broker(venue) if broker else venue,
        sessions,
        COMMISSION,
        clock=lambda: datetime.now(UTC),
    )
    send = temporal_deliver(env.client, pool)
    relay = OutboxRelay(pool, deliver(send) if deliver else send)
    stop = asyncio.Event()
    stack = Stack(
        env=env,
        pool=pool,
        feed=feed,
        venue=venue,
        task_queue=task_queue,
        portfolio=portfolio,
        options=options or OrderWorkflowOptions(poll_interval_seconds=30),
    )
    operations = OperationsActivities(pool, venue, feed, sessions)
    parents = ParentActivities(pool, feed, sessions, COMMISSION)
    guards = ProtectionActivities(pool, feed)
    brackets = BracketActivities(pool, sessions, COMMISSION)
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[
            OrderWorkflow,
            ParentOrderWorkflow,
            BracketWorkflow,
            ProtectionWorkflow,
            *OPERATIONS_WORKFLOWS,
        ],
        activities=[
            *activities.all(),
            *operations.all(),
            *parents.all(),
            *brackets.all(),
            *guards.all(),
        ],
        interceptors=[HeartbeatInterceptor()],
    ):
        tasks = [
            asyncio.create_task(venue.run(stop, tick_ms=venue_tick_ms)),
            asyncio.create_task(relay.run(stop, interval_ms=10)),
        ]
        try:
            yield stack
            if os.environ.get("RECORD_HISTORIES"):
                await record_histories(stack)
        finally:
            await terminate_leftovers(env.client, pool)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def terminate_leftovers(client: Client, pool: asyncpg.Pool) -> None:
    """End every workflow a test left running (a resting order, a kill switch).

    The time-skipping server is shared by the whole session; a leftover's activity waiting
    for this test's worker, which is gone, would hold the clock for every later test.
    """
    rows = await pool.fetch(
        "SELECT 'order-' || id AS workflow_id FROM orders "
        "UNION ALL SELECT 'trading-state-' || id FROM portfolios "
        "UNION ALL SELECT 'protection-' || portfolio_id || '-' || symbol FROM positions"
    )
    deadline = time.monotonic() + SETTLE_SECONDS
    for row in rows:
        handle = client.get_workflow_handle(row["workflow_id"])
        with contextlib.suppress(RPCError):  # closed already, or never started
            while time.monotonic() < deadline and not await _between_tasks(handle):
                await asyncio.sleep(0.02)
            await handle.terminate("test finished")


# A workflow task or an activity in flight holds the time-skipping server's clock, and the
# test server's terminate releases neither hold (TestWorkflowMutableStateImpl.
# terminateWorkflowExecution unlocks nothing): a workflow terminated in the middle of a task
# locks the shared clock for every later test, which then waits hours of "skipped" time in
# real time. A test that ends as soon as the books show a step (the step's local activity
# commits inside the workflow task) would do that; so leftovers are first given a moment to
# finish their task.
SETTLE_SECONDS = 5.0
_IN_A_TASK = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
}


async def _between_tasks(handle: WorkflowHandle[Any, Any]) -> bool:
    """Closed, or waiting for a timer or a signal: no workflow task or activity in flight."""
    description = await handle.describe()
    if description.close_time is not None:
        return True
    if description.raw_description.pending_activities:
        return False
    last = None
    async for event in handle.fetch_history_events():
        last = event.event_type
    return last not in _IN_A_TASK


HISTORIES = Path(__file__).parent / "histories"


async def record_histories(stack: Stack) -> None:
    """Save the histories of this test's closed order workflows for the replay test
    (run the suite with RECORD_HISTORIES=1 after a deliberate workflow change)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "test").split("::")[-1].split(" ")[0]
    HISTORIES.mkdir(exist_ok=True)
    deadline = time.monotonic() + SETTLE_SECONDS
    for n, handle in enumerate(list(stack.handles.values())[:3]):
        while time.monotonic() < deadline and not await _between_tasks(handle):
            await asyncio.sleep(0.02)  # its last task may still be running
        description = await handle.describe()
        if description.close_time is None:
            continue
        history = await handle.fetch_history()
        (HISTORIES / f"{test}-{n}.json").write_text(history.to_json())
