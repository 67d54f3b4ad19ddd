"""Broker faults never lose money: on the time-skipping server, with the real store, paper
venue and outbox, behind a broker link and an event path that the test can cut.

The rule under test: an order closes in the books only when the broker says it closed, or
provably never received it; an outage of any length only makes the order wait, visibly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal as D

import pytest
from temporalio.client import WorkflowExecutionStatus

from activities.store.queries import find_stuck_orders
from activities.venue.outbox import temporal_deliver
from contracts.payloads import (
    BrokerEvent,
    BrokerEventType,
    CancelRequest,
    OrderSnapshot,
    OrderWorkflowOptions,
)
from domain.orders import OrderStatus
from workflows.order import BROKER_STATUS, OrderWorkflow

from .harness import Stack, running_stack, terminal

pytestmark = pytest.mark.integration

POLL_SOON = OrderWorkflowOptions(poll_interval_seconds=30, max_poll_interval_seconds=60)


class BrokerLink:
    """The paper venue behind a link the test cuts and restores: while it is down every
    call fails as a network error, and the venue's events do not get through either (the
    outbox keeps them and the relay retries). The venue itself keeps working."""

    def __init__(self) -> None:
        self.down = False
        self.calls: Counter[str] = Counter()
        self.venue = None

    def broker(self, venue):
        self.venue = venue
        return self

    def events(self, send):
        async def deliver(workflow_id, event):
            if self.down:
                raise ConnectionError("event stream unreachable")
            await send(workflow_id, event)

        return deliver

    def _through(self, name: str) -> None:
        self.calls[name] += 1
        if self.down:
            raise ConnectionError(f"broker unreachable ({name})")

    async def submit(self, request):
        self._through("submit")
        return await self.venue.submit(request)

    async def get_order(self, client_order_id):
        self._through("get_order")
        return await self.venue.get_order(client_order_id)

    async def cancel(self, client_order_id):
        self._through("cancel")
        return await self.venue.cancel(client_order_id)

    async def positions(self):
        return await self.venue.positions()

    async def open_orders(self):
        return await self.venue.open_orders()


async def skip(stack: Stack, total: timedelta) -> None:
    """Let `total` of workflow time pass, in steps short enough for one RPC deadline."""
    step = timedelta(minutes=3)
    while total > timedelta(0):
        await stack.env.sleep(min(step, total))
        total -= step


async def broker_status(stack: Stack, order_id) -> str | None:
    description = await stack.handle(order_id).describe()
    return description.typed_search_attributes.get(BROKER_STATUS)


async def unreachable_since(stack: Stack, order_id):
    return await stack.pool.fetchval(
        "SELECT broker_unreachable_since FROM orders WHERE id = $1", order_id
    )


async def books_equal_the_venue(stack: Stack, order_id) -> None:
    ours = await stack.order(order_id)
    theirs = await stack.venue.get_order(str(order_id))
    assert ours.status is theirs.status
    assert ours.filled_quantity == theirs.filled_quantity
    executions = await stack.pool.fetch(
        "SELECT execution_id FROM executions WHERE order_id = $1", order_id
    )
    assert {r["execution_id"] for r in executions} == {e.execution_id for e in theirs.executions}
    portfolio = await stack.portfolio_now()
    assert portfolio.ledger_imbalance() == 0 and portfolio.cash >= 0


async def resting_order(
    stack: Stack, symbol: str, quote: tuple[str, str], quantity: str, limit: str
) -> OrderSnapshot:
    """A GTC limit buy below the market `quote` (bid, ask), resting at the venue."""
    bid, ask = quote
    stack.feed.set_quote(symbol, bid, ask)
    decided = await stack.place(symbol, quantity, order_type="limit", limit=limit, tif="gtc")
    await stack.wait_for(decided.order_id, terminal(OrderStatus.SUBMITTED))
    return decided


async def test_a_twenty_minute_outage_leaves_a_resting_order_open_and_its_fill_is_booked(
    own_temporal_env, db_pool
):
    link = BrokerLink()
    async with running_stack(
        own_temporal_env, db_pool, broker=link.broker, deliver=link.events, options=POLL_SOON
    ) as stack:
        decided = await resting_order(stack, "AAPL", ("199.98", "200.00"), "10", limit="190.00")

        link.down = True
        await skip(stack, timedelta(minutes=20))
        waiting = await stack.order(decided.order_id)
        assert waiting.status is OrderStatus.SUBMITTED  # never compensated, never canceled
        assert await broker_status(stack, decided.order_id) == "unreachable"
        assert await unreachable_since(stack, decided.order_id) is not None
        stuck = await find_stuck_orders(db_pool, timedelta(0))
        assert decided.order_id in {s.order_id for s in stuck}
        assert link.calls["get_order"] > 3  # it kept asking

        stack.feed.set_quote("AAPL", "189.98", "190.00")  # the venue fills while we are cut off
        link.down = False
        filled = await stack.wait_for(decided.order_id, terminal(OrderStatus.FILLED), timeout=30)
        assert filled.filled_quantity == D("10")
        await stack.wait_for(decided.order_id, lambda o: True)
        await skip(stack, timedelta(minutes=1))
        assert await unreachable_since(stack, decided.order_id) is None
        assert await broker_status(stack, decided.order_id) == "reachable"
        portfolio = await stack.portfolio_now()
        assert portfolio.positions["AAPL"].quantity == D("10")
        assert portfolio.reservations == {}
        await books_equal_the_venue(stack, decided.order_id)


async def test_a_cancel_signal_during_an_outage_waits_for_the_broker_instead_of_failing(
    own_temporal_env, db_pool
):
    link = BrokerLink()
    async with running_stack(
        own_temporal_env, db_pool, broker=link.broker, deliver=link.events, options=POLL_SOON
    ) as stack:
        decided = await resting_order(stack, "MSFT", ("399.98", "400.00"), "5", limit="380.00")
        handle = stack.handle(decided.order_id)

        link.down = True
        await handle.signal(OrderWorkflow.cancel_request, CancelRequest("kill switch"))
        await handle.signal(OrderWorkflow.cancel_request, CancelRequest("operator, again"))
        await skip(stack, timedelta(minutes=15))
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        pending = await stack.order(decided.order_id)
        assert pending.status is OrderStatus.PENDING_CANCEL
        assert (await stack.portfolio_now()).reservations != {}  # still held: it may fill
        assert (await stack.venue.get_order(str(decided.order_id))).status is OrderStatus.SUBMITTED

        link.down = False
        canceled = await stack.wait_for(decided.order_id, terminal(OrderStatus.CANCELED), 30)
        assert canceled.filled_quantity == 0
        assert (await stack.venue.get_order(str(decided.order_id))).status is (OrderStatus.CANCELED)
        assert (await stack.portfolio_now()).reservations == {}
        await books_equal_the_venue(stack, decided.order_id)


async def test_a_cancel_update_during_an_outage_answers_once_the_broker_confirms(
    own_temporal_env, db_pool
):
    """The API's DELETE path (the `cancel` update) while the broker is away: the update stays
    open, the order pending_cancel with its reservation, until the broker confirms."""
    link = BrokerLink()
    async with running_stack(
        own_temporal_env, db_pool, broker=link.broker, deliver=link.events, options=POLL_SOON
    ) as stack:
        decided = await resting_order(stack, "NVDA", ("99.98", "100.00"), "5", limit="90.00")
        handle = stack.handle(decided.order_id)

        link.down = True
        update = asyncio.create_task(
            handle.execute_update(OrderWorkflow.cancel, CancelRequest("client DELETE"))
        )
        await skip(stack, timedelta(minutes=15))
        assert not update.done()
        assert (await stack.order(decided.order_id)).status is OrderStatus.PENDING_CANCEL
        assert (await stack.portfolio_now()).reservations != {}

        link.down = False
        answered = await asyncio.wait_for(update, timeout=30)
        assert answered.status is OrderStatus.CANCELED and answered.filled_quantity == 0
        assert (await stack.portfolio_now()).reservations == {}
        await books_equal_the_venue(stack, decided.order_id)


async def test_an_order_canceled_while_its_submit_cannot_reach_the_broker_closes_once_the_broker_says_it_never_got_it(  # noqa: E501
    own_temporal_env, db_pool
):
    link = BrokerLink()
    async with running_stack(
        own_temporal_env, db_pool, broker=link.broker, deliver=link.events, options=POLL_SOON
    ) as stack:
        stack.feed.set_quote("NVDA", "179.98", "180.00")
        link.down = True
        decided = await stack.place("NVDA", "3", order_type="limit", limit="170.00", tif="gtc")
        await skip(stack, timedelta(minutes=6))
        assert (await stack.order(decided.order_id)).status is OrderStatus.ACCEPTED
        await stack.handle(decided.order_id).signal(
            OrderWorkflow.cancel_request, CancelRequest("changed my mind")
        )
        await skip(stack, timedelta(minutes=6))
        assert not (await stack.order(decided.order_id)).is_terminal  # cannot know yet

        link.down = False
        await skip(stack, timedelta(minutes=12))
        result = await stack.result(decided.order_id)
        assert result.status is OrderStatus.CANCELED
        assert await stack.venue_orders() == 0  # it never reached the venue
        assert (await stack.portfolio_now()).reservations == {}


class AnswerLost(BrokerLink):
    """The first submit reaches the venue, then the link goes down before the answer."""

    async def submit(self, request):
        if self.calls["submit"] == 0:
            self.calls["submit"] += 1
            await self.venue.submit(request)
            self.down = True
            raise TimeoutError("the answer was lost")
        return await super().submit(request)


async def test_an_order_whose_submit_landed_unseen_is_canceled_at_the_broker_not_just_forgotten(
    own_temporal_env, db_pool
):
    link = AnswerLost()
    async with running_stack(
        own_temporal_env, db_pool, broker=link.broker, deliver=link.events, options=POLL_SOON
    ) as stack:
        stack.feed.set_quote("AMD", "159.98", "160.00")
        decided = await stack.place("AMD", "4", order_type="limit", limit="150.00", tif="gtc")
        await skip(stack, timedelta(minutes=6))
        await stack.handle(decided.order_id).signal(
            OrderWorkflow.cancel_request, CancelRequest("changed my mind")
        )
        await skip(stack, timedelta(minutes=3))
        link.down = False
        await skip(stack, timedelta(minutes=12))
        result = await stack.result(decided.order_id)
        assert result.status is OrderStatus.CANCELED
        assert (await stack.venue.get_order(str(decided.order_id))).status is (
            OrderStatus.CANCELED
        )  # not left working at the venue
        assert (await stack.portfolio_now()).reservations == {}
        await books_equal_the_venue(stack, decided.order_id)


async def test_a_fill_reported_after_the_workflow_closed_is_booked_once_and_flagged(
    temporal_env, db_pool
):
    """The venue reports a fill for an order whose workflow has already closed: it is
    applied to the ledger once (by execution id) and kept for operators, never dropped."""
    async with running_stack(temporal_env, db_pool) as stack:
        stack.feed.set_quote("KO", "60.00", "60.01")
        decided = await stack.place("KO", "5", order_type="limit", limit="55.00", tif="gtc")
        await stack.wait_for(decided.order_id, terminal(OrderStatus.SUBMITTED))
        await stack.handle(decided.order_id).signal(
            OrderWorkflow.cancel_request, CancelRequest("client")
        )
        closed = await stack.result(decided.order_id)
        assert closed.status is OrderStatus.CANCELED
        cash_before = (await stack.portfolio_now()).cash

        late = BrokerEvent(
            event=BrokerEventType.FILL,
            client_order_id=str(decided.order_id),
            timestamp=closed.updated_at,
            broker_order_id=closed.broker_order_id,
            execution_id="late-exec-1",
            quantity=D("2"),
            price=D("55.00"),
            cumulative_quantity=D("2"),
        )
        deliver = temporal_deliver(temporal_env.client, db_pool)
        for _ in range(3):  # redelivered: booked once
            await deliver(f"order-{decided.order_id}", late)

        portfolio = await stack.portfolio_now()
        assert portfolio.positions["KO"].quantity == D("2")
        assert portfolio.cash == cash_before - D("110.00")
        assert portfolio.ledger_imbalance() == 0 and portfolio.reservations == {}
        assert (
            await db_pool.fetchval(
                "SELECT count(*) FROM executions WHERE execution_id = 'late-exec-1'"
            )
            == 1
        )
        flagged = await db_pool.fetch("SELECT order_id, applied FROM late_broker_events")
        assert [(r["order_id"], r["applied"]) for r in flagged] == [(decided.order_id, True)]
        order = await stack.order(decided.order_id)
        assert order.status is OrderStatus.CANCELED and order.filled_quantity == D("2")
