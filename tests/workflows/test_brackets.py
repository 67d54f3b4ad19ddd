"""Brackets, OCO and OTO on the time-skipping server, the real PostgreSQL and the paper
venue: legs only for filled shares, one leg filling cancels the other, cancelling the parent
cancels everything, and the venue never fills two legs of one OCO group in one pass. After
each test the books balance and nothing stays reserved."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
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

from activities.calendar.sessions import MarketSessions
from activities.store.queries import find_stuck_orders
from activities.store.repositories import UnitOfWork
from activities.venue.exchange import PaperVenue
from contracts.payloads import (
    BracketWorkflowInput,
    CancelRequest,
    LegPlan,
    OrderRequest,
    OrderSnapshot,
    entry_client_order_id,
    leg_client_order_id,
    oco_group_for,
    order_id_for,
    workflow_id_for,
)
from domain.orders import OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from tests.fakes.feeds import ScriptedFeed
from tests.workflows.harness import COMMISSION, Stack, running_stack, terminal
from workflows.bracket import BracketWorkflow

pytestmark = pytest.mark.integration

HISTORIES = Path(__file__).parent / "histories" / "order_classes"
T = TypeVar("T")


async def place_structure(
    stack: Stack,
    order_class: OrderClass,
    quantity: str,
    *,
    side: OrderSide = OrderSide.BUY,
    limit: str | None = None,
    take_profit: str | None = None,
    stop_loss: str | None = None,
) -> tuple[OrderSnapshot, WorkflowHandle[Any, Any]]:
    client_order_id = f"{order_class.value}-{uuid.uuid4()}"
    order_id = order_id_for(stack.portfolio.id, client_order_id)
    if order_class is OrderClass.OCO:
        limit = take_profit
    request = OrderRequest(
        order_id=order_id,
        portfolio_id=stack.portfolio.id,
        client_order_id=client_order_id,
        symbol="AAPL",
        side=side,
        quantity=D(quantity),
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        limit_price=None if limit is None else D(limit),
        order_class=order_class,
    )
    legs = LegPlan(
        take_profit_limit=None if take_profit is None else D(take_profit),
        stop_loss_stop=None if stop_loss is None else D(stop_loss),
    )
    start = WithStartWorkflowOperation(
        BracketWorkflow.run,
        BracketWorkflowInput(request, legs, stack.options),
        id=workflow_id_for(order_id),
        task_queue=stack.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    decided: OrderSnapshot = await stack.env.client.execute_update_with_start_workflow(
        BracketWorkflow.decision, start_workflow_operation=start
    )
    return decided, await start.workflow_handle()


def leg_id(stack: Stack, parent: UUID, role: str, group: int = 1) -> UUID:
    return order_id_for(stack.portfolio.id, leg_client_order_id(parent, role, group))


def entry_id(stack: Stack, parent: UUID) -> UUID:
    return order_id_for(stack.portfolio.id, entry_client_order_id(parent))


async def until(what: str, check: Callable[[], Awaitable[T | None]]) -> T:
    """Wait in real time (the venue fills in real time) until `check` answers."""
    deadline = time.monotonic() + 20
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def children(stack: Stack, parent: UUID) -> list[OrderSnapshot]:
    async with UnitOfWork(stack.pool) as uow:
        rows = await uow.conn.fetch(
            "SELECT id FROM orders WHERE parent_order_id = $1 ORDER BY client_order_id", parent
        )
        found = [await uow.orders.find(row["id"]) for row in rows]
    return [child for child in found if child is not None]


async def legs_resting(stack: Stack, parent: UUID, count: int) -> list[OrderSnapshot] | None:
    """The parent's exit legs once `count` of them rest at the venue."""
    legs = [c for c in await children(stack, parent) if "-entry" not in c.client_order_id]
    resting = [leg for leg in legs if leg.status is OrderStatus.SUBMITTED]
    return legs if len(legs) == count and len(resting) == count else None


async def books_balance(stack: Stack) -> None:
    portfolio = await stack.portfolio_now()
    assert portfolio.ledger_imbalance() == 0
    assert portfolio.reserved() == 0
    assert portfolio.reservations == {}


async def record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """The parent's history for the replay test (RECORD_HISTORIES=1)."""
    if os.environ.get("RECORD_HISTORIES"):
        HISTORIES.mkdir(parents=True, exist_ok=True)
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_a_bracket_whose_take_profit_is_hit_cancels_its_stop_loss(
    temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool
):
    async with running_stack(temporal_env, db_pool) as stack:
        stack.feed.set_quote("AAPL", "149.99", "150.01")
        parent, handle = await place_structure(
            stack, OrderClass.BRACKET, "10", take_profit="155.00", stop_loss="145.00"
        )
        assert parent.status is OrderStatus.ACCEPTED
        assert parent.order_class is OrderClass.BRACKET
        legs = await until("both legs", lambda: legs_resting(stack, parent.order_id, 2))
        assert sorted((leg.order_type, leg.quantity, leg.side) for leg in legs) == [
            (OrderType.LIMIT, 10, OrderSide.SELL),
            (OrderType.STOP, 10, OrderSide.SELL),
        ]
        assert (await stack.portfolio_now()).positions["AAPL"].quantity == 10

        stack.feed.set_quote("AAPL", "155.00", "155.02")

        done = await stack.wait_for(parent.order_id)
        assert done.status is OrderStatus.FILLED and done.filled_quantity == 10
        assert done.average_fill_price == D("150.01")
        take_profit = await stack.order(leg_id(stack, parent.order_id, "tp"))
        stop_loss = await stack.order(leg_id(stack, parent.order_id, "sl"))
        assert take_profit.status is OrderStatus.FILLED
        assert take_profit.average_fill_price == D("155.00")
        assert stop_loss.status is OrderStatus.CANCELED and stop_loss.filled_quantity == 0
        portfolio = await stack.portfolio_now()
        assert portfolio.positions["AAPL"].quantity == 0
        commissions = D("2.00")  # the per-share minimum, once per order
        assert portfolio.cash == D("100000.00") + 10 * (D("155.00") - D("150.01")) - commissions
        await books_balance(stack)
        await record(handle, "bracket_take_profit_hit")


async def test_a_bracket_whose_stop_loss_is_hit_cancels_its_take_profit(
    temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool
):
    async with running_stack(temporal_env, db_pool) as stack:
        stack.feed.set_quote("AAPL", "149.99", "150.01")
        parent, _ = await place_structure(
            stack,
            OrderClass.BRACKET,
            "10",
            limit="150.01",
            take_profit="155.00",
            stop_loss="145.00",
        )
        await until("both legs", lambda: legs_resting(stack, parent.order_id, 2))

        stack.feed.set_quote("AAPL", "143.99", "144.01", last="144.00")

        done = await stack.wait_for(parent.order_id)
        assert done.status is OrderStatus.FILLED and done.filled_quantity == 10
        take_profit = await stack.order(leg_id(stack, parent.order_id, "tp"))
        stop_loss = await stack.order(leg_id(stack, parent.order_id, "sl"))
        assert stop_loss.status is OrderStatus.FILLED and stop_loss.filled_quantity == 10
        assert take_profit.status is OrderStatus.CANCELED and take_profit.filled_quantity == 0
        assert (await stack.portfolio_now()).positions["AAPL"].quantity == 0
        await books_balance(stack)


async def test_a_partly_filled_entry_gets_legs_of_its_size_and_cancelling_the_parent_cancels_all(
    temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool
):
    async with running_stack(temporal_env, db_pool) as stack:
        # Only 40 shares are offered: the entry fills 40 of 100 and rests for the rest.
        stack.feed.set_quote("AAPL", "149.99", "150.01", ask_size=40)
        parent, handle = await place_structure(
            stack,
            OrderClass.BRACKET,
            "100",
            limit="150.01",
            take_profit="155.00",
            stop_loss="145.00",
        )
        legs = await until("legs for 40", lambda: legs_resting(stack, parent.order_id, 2))
        assert [leg.quantity for leg in legs] == [40, 40]
        entry = await stack.order(entry_id(stack, parent.order_id))
        assert entry.status is OrderStatus.PARTIALLY_FILLED and entry.filled_quantity == 40
        # `trading orders stuck` lists the entry and the legs at the broker, not the parent.
        later = datetime.now(UTC) + timedelta(hours=1)
        stuck = {o.order_id for o in await find_stuck_orders(stack.pool, timedelta(0), later)}
        assert stuck == {entry.order_id, *(leg.order_id for leg in legs)}

        canceled = await handle.execute_update(
            BracketWorkflow.cancel, CancelRequest("changed my mind")
        )

        assert canceled.status is OrderStatus.CANCELED and canceled.filled_quantity == 40
        for child in await children(stack, parent.order_id):
            assert child.status is OrderStatus.CANCELED, child
        entry = await stack.order(entry_id(stack, parent.order_id))
        assert entry.filled_quantity == 40
        assert (await stack.portfolio_now()).positions["AAPL"].quantity == 40
        await books_balance(stack)
        await record(handle, "bracket_partial_entry_canceled")


async def test_an_oco_with_both_legs_marketable_in_one_pass_fills_only_one(
    temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool
):
    async with running_stack(temporal_env, db_pool) as stack:
        stack.feed.set_quote("AAPL", "149.99", "150.01")
        bought = await stack.place("AAPL", "10")
        await stack.wait_for(bought.order_id, terminal(OrderStatus.FILLED))
        parent, handle = await place_structure(
            stack,
            OrderClass.OCO,
            "10",
            side=OrderSide.SELL,
            take_profit="155.00",
            stop_loss="145.00",
        )
        assert parent.status is OrderStatus.ACCEPTED
        await until("both legs", lambda: legs_resting(stack, parent.order_id, 2))

        # The bid reaches the take-profit and the last trade crosses the stop at once.
        stack.feed.set_quote("AAPL", "156.00", "156.02", last="144.00")

        done = await stack.wait_for(parent.order_id)
        legs = await children(stack, parent.order_id)
        statuses = sorted(leg.status.value for leg in legs)
        assert statuses == ["canceled", "filled"]
        assert sum(leg.filled_quantity for leg in legs) == 10
        assert done.status is OrderStatus.FILLED and done.filled_quantity == 10
        executions = await stack.pool.fetchval(
            "SELECT count(*) FROM venue_executions WHERE client_order_id = ANY($1::text[])",
            [str(leg.order_id) for leg in legs],
        )
        assert executions == 1
        assert (await stack.portfolio_now()).positions["AAPL"].quantity == 0
        await books_balance(stack)
        await record(handle, "oco_both_marketable")


async def test_an_oto_places_its_one_leg_after_the_entry_fills(
    temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool
):
    async with running_stack(temporal_env, db_pool) as stack:
        stack.feed.set_quote("AAPL", "149.99", "150.01")
        parent, _ = await place_structure(stack, OrderClass.OTO, "5", take_profit="152.00")
        legs = await until("the leg", lambda: legs_resting(stack, parent.order_id, 1))
        assert legs[0].order_type is OrderType.LIMIT and legs[0].quantity == 5

        stack.feed.set_quote("AAPL", "152.00", "152.02")

        done = await stack.wait_for(parent.order_id)
        assert done.status is OrderStatus.FILLED
        leg = await stack.order(leg_id(stack, parent.order_id, "tp"))
        assert leg.status is OrderStatus.FILLED
        assert (await stack.portfolio_now()).positions["AAPL"].quantity == 0
        await books_balance(stack)


async def test_the_venue_fills_one_order_of_an_oco_group_per_pass(db_pool: asyncpg.Pool):
    """Both legs marketable on the same quote, one matching pass: one fills, the other is
    canceled in the same transaction, with its event."""
    feed = ScriptedFeed()
    feed.set_quote("AAPL", "149.99", "150.01")
    venue = PaperVenue(
        db_pool,
        feed,
        MarketSessions("always_open"),
        COMMISSION,
        latency_ms=0,
        quote_refresh=timedelta(milliseconds=1),
    )
    portfolio_id = uuid.uuid4()
    group = oco_group_for(uuid.uuid4(), 1)
    legs = [
        OrderRequest(
            uuid.uuid4(),
            portfolio_id,
            "tp",
            "AAPL",
            OrderSide.SELL,
            D("10"),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=D("155.00"),
            oco_group=group,
        ),
        OrderRequest(
            uuid.uuid4(),
            portfolio_id,
            "sl",
            "AAPL",
            OrderSide.SELL,
            D("10"),
            OrderType.STOP,
            TimeInForce.GTC,
            stop_price=D("145.00"),
            oco_group=group,
        ),
    ]
    for leg in legs:
        await venue.submit(leg)
    feed.set_quote("AAPL", "156.00", "156.02", last="144.00")

    await venue.match_once()

    states = [await venue.get_order(str(leg.order_id)) for leg in legs]
    assert sorted(state.status.value for state in states) == ["canceled", "filled"]
    assert sum(state.filled_quantity for state in states) == 10
    assert sum(len(state.executions) for state in states) == 1
    events = await db_pool.fetch(
        "SELECT event FROM venue_outbox WHERE client_order_id = ANY($1::text[]) ORDER BY id",
        [str(leg.order_id) for leg in legs],
    )
    assert sorted(row["event"] for row in events) == ["canceled", "fill", "new", "new"]
