"""The venue's outbox relay against the real PostgreSQL: order, exactly once, redelivery."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import uuid4

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.calendar.sessions import MarketSessions
from activities.venue.exchange import PaperVenue, broker_order_id_for
from activities.venue.outbox import OutboxRelay, _listener_lost, temporal_deliver
from contracts.payloads import BrokerEvent, BrokerEventType, OrderRequest
from domain.commissions import PerShare
from domain.orders import OrderSide, OrderType
from tests.fakes.feeds import ScriptedFeed

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 15, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """A deliver function that records what it was given, and fails when told to."""

    def __init__(self, fail_on: set[int] | None = None, delay: float = 0) -> None:
        self.delivered: list[tuple[str, BrokerEvent]] = []
        self.calls = 0
        self.fail_on = fail_on or set()  # 1-based call numbers that raise
        self.delay = delay

    async def __call__(self, workflow_id: str, event: BrokerEvent) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.calls in self.fail_on:
            raise ConnectionError("temporal unavailable")
        self.delivered.append((workflow_id, event))

    def kinds(self) -> list[tuple[str, str]]:
        return [(wf, event.event.value) for wf, event in self.delivered]


def request(quantity: str = "500", symbol: str = "AAPL", **fields: object) -> OrderRequest:
    return OrderRequest(
        order_id=uuid4(),
        portfolio_id=uuid4(),
        client_order_id="c1",
        symbol=symbol,
        side=OrderSide.BUY,
        quantity=Decimal(quantity),
        order_type=OrderType.MARKET,
        **fields,  # type: ignore[arg-type]
    )


SYMBOLS = itertools.count(1)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feed(clock: Clock) -> ScriptedFeed:
    feed = ScriptedFeed(clock=clock)
    feed.set_quote("AAPL", "199.90", "200.00", ask_size=300)
    return feed


@pytest.fixture
def venue(db_pool: asyncpg.Pool, feed: ScriptedFeed, clock: Clock) -> PaperVenue:
    return PaperVenue(db_pool, feed, MarketSessions("always_open"), PerShare(), clock=clock)


async def fill_partially(venue: PaperVenue, feed: ScriptedFeed, clock: Clock) -> str:
    """An order of 500 against 300 displayed: events new, partial_fill; returns its id.
    Each order trades its own symbol: one quote's displayed size is shared by all orders,
    and a fresh quote for an earlier order's symbol would fill it further."""
    symbol = f"SYM{next(SYMBOLS)}"
    feed.set_quote(symbol, "199.90", "200.00", ask_size=300)
    order = request(symbol=symbol)
    await venue.submit(order)
    clock.now += timedelta(seconds=1)
    await venue.match_once()
    return str(order.order_id)


async def undelivered(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM venue_outbox WHERE delivered_at IS NULL")


async def test_relay_delivers_events_in_order_once_and_marks_them_delivered(
    db_pool: asyncpg.Pool, venue: PaperVenue, feed: ScriptedFeed, clock: Clock
):
    a = await fill_partially(venue, feed, clock)
    b = await fill_partially(venue, feed, clock)
    await venue.cancel(a)
    recorder = Recorder()
    relay = OutboxRelay(db_pool, recorder)

    assert await relay.relay_once() == 5
    assert await relay.relay_once() == 0

    assert recorder.kinds() == [
        (f"order-{a}", "new"),
        (f"order-{a}", "partial_fill"),
        (f"order-{b}", "new"),
        (f"order-{b}", "partial_fill"),
        (f"order-{a}", "canceled"),
    ]
    assert await undelivered(db_pool) == 0


async def test_relayed_fill_carries_exact_decimals(
    db_pool: asyncpg.Pool, venue: PaperVenue, feed: ScriptedFeed, clock: Clock
):
    oid = await fill_partially(venue, feed, clock)
    recorder = Recorder()
    await OutboxRelay(db_pool, recorder).relay_once()

    (_, new), (_, fill) = recorder.delivered
    assert new == BrokerEvent(
        event=BrokerEventType.NEW,
        client_order_id=oid,
        timestamp=START,
        broker_order_id=broker_order_id_for(oid),
    )
    # 200.00 + 5 bps x 300/300 = 200.10; PerShare 0.005 x 300 = 1.50
    assert fill == BrokerEvent(
        event=BrokerEventType.PARTIAL_FILL,
        client_order_id=oid,
        timestamp=START + timedelta(seconds=1),
        broker_order_id=broker_order_id_for(oid),
        execution_id=f"{broker_order_id_for(oid)}-1",
        quantity=Decimal("300"),
        price=Decimal("200.10"),
        commission=Decimal("1.50"),
        cumulative_quantity=Decimal("300"),
    )
    assert str(fill.price) == "200.10" and str(fill.commission) == "1.50"
    assert fill == (await venue.get_order(oid)).executions[0]  # the same event as polling gives


async def test_relay_stops_at_a_failed_delivery_and_redelivers_it_next_pass(
    db_pool: asyncpg.Pool, venue: PaperVenue, feed: ScriptedFeed, clock: Clock
):
    a = await fill_partially(venue, feed, clock)
    b = await fill_partially(venue, feed, clock)
    recorder = Recorder(fail_on={2})  # a's partial fill fails the first time
    relay = OutboxRelay(db_pool, recorder)

    assert await relay.relay_once() == 1
    assert relay.stalled
    assert await undelivered(db_pool) == 3

    assert await relay.relay_once() == 3
    assert not relay.stalled
    assert recorder.kinds() == [
        (f"order-{a}", "new"),
        (f"order-{a}", "partial_fill"),
        (f"order-{b}", "new"),
        (f"order-{b}", "partial_fill"),
    ]
    assert await undelivered(db_pool) == 0


async def test_relay_takes_at_most_a_batch_per_pass(
    db_pool: asyncpg.Pool, venue: PaperVenue, feed: ScriptedFeed, clock: Clock
):
    await fill_partially(venue, feed, clock)
    await fill_partially(venue, feed, clock)
    relay = OutboxRelay(db_pool, Recorder(), batch_size=3)

    assert [await relay.relay_once() for _ in range(3)] == [3, 1, 0]


async def test_concurrent_relays_deliver_each_event_once_and_each_order_in_order(
    db_pool: asyncpg.Pool, venue: PaperVenue, feed: ScriptedFeed, clock: Clock
):
    orders = [await fill_partially(venue, feed, clock) for _ in range(6)]
    for oid in orders[::2]:
        await venue.cancel(oid)
    recorder = Recorder(delay=0.002)  # shared: one log of what reached the workflows
    relays = [OutboxRelay(db_pool, recorder, batch_size=3) for _ in range(3)]

    for _ in range(20):
        if not await undelivered(db_pool):
            break
        await asyncio.gather(*(relay.relay_once() for relay in relays))
    assert await undelivered(db_pool) == 0

    assert len(recorder.delivered) == 15  # 6 x (new, partial_fill) + 3 canceled
    for oid in orders:
        kinds = [event.event.value for wf, event in recorder.delivered if wf == f"order-{oid}"]
        canceled = ["canceled"] if oid in orders[::2] else []
        assert kinds == ["new", "partial_fill", *canceled]


async def test_run_wakes_on_the_venue_notify_and_stops_promptly(
    db_pool: asyncpg.Pool, venue: PaperVenue
):
    recorder = Recorder()
    relay = OutboxRelay(db_pool, recorder)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, interval_ms=60_000))  # polling would be too late
    try:
        await asyncio.sleep(0.1)  # the first (empty) pass has run; now it waits
        order = request()
        await venue.submit(order)
        deadline = asyncio.get_running_loop().time() + 3
        while not recorder.delivered:
            assert asyncio.get_running_loop().time() < deadline, "no NOTIFY wake-up"
            await asyncio.sleep(0.01)
        assert recorder.kinds() == [(f"order-{order.order_id}", "new")]
    finally:
        stop.set()
        await asyncio.wait_for(task, 1)


async def test_run_keeps_retrying_a_failing_delivery_until_it_goes_through(
    db_pool: asyncpg.Pool, venue: PaperVenue
):
    recorder = Recorder(fail_on={1, 2})
    relay = OutboxRelay(db_pool, recorder)
    await venue.submit(request())
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, interval_ms=10))
    try:
        deadline = asyncio.get_running_loop().time() + 3
        while not recorder.delivered:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 1)
    assert recorder.calls == 3
    assert await undelivered(db_pool) == 0


# -- temporal_deliver -------------------------------------------------------------------------


class FakeClient:
    """Stands in for a Temporal client: records signals, or raises the error it is given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.signals: list[tuple[str, str, BrokerEvent]] = []

    def get_workflow_handle(self, workflow_id: str) -> FakeHandle:
        return FakeHandle(self, workflow_id)


class FakeHandle:
    def __init__(self, client: FakeClient, workflow_id: str) -> None:
        self.client = client
        self.workflow_id = workflow_id

    async def signal(self, name: str, arg: BrokerEvent) -> None:
        if self.client.error is not None:
            raise self.client.error
        self.client.signals.append((self.workflow_id, name, arg))


async def test_temporal_deliver_signals_broker_event_on_the_order_workflow(
    db_pool: asyncpg.Pool, venue: PaperVenue
):
    order = request()
    await venue.submit(order)
    client = FakeClient()

    assert (
        await OutboxRelay(db_pool, temporal_deliver(cast(Client, client), db_pool)).relay_once()
        == 1
    )

    [(workflow_id, name, event)] = client.signals
    assert (workflow_id, name, event.event) == (
        f"order-{order.order_id}",
        "broker_event",
        BrokerEventType.NEW,
    )


async def test_temporal_deliver_counts_a_missing_workflow_as_delivered(
    db_pool: asyncpg.Pool, venue: PaperVenue
):
    await venue.submit(request())
    client = FakeClient(RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b""))

    assert (
        await OutboxRelay(db_pool, temporal_deliver(cast(Client, client), db_pool)).relay_once()
        == 1
    )
    assert await undelivered(db_pool) == 0


async def test_temporal_deliver_leaves_the_event_undelivered_on_other_errors(
    db_pool: asyncpg.Pool, venue: PaperVenue
):
    await venue.submit(request())
    client = FakeClient(RPCError("server unavailable", RPCStatusCode.UNAVAILABLE, b""))

    assert (
        await OutboxRelay(db_pool, temporal_deliver(cast(Client, client), db_pool)).relay_once()
        == 0
    )
    assert await undelivered(db_pool) == 1


def test_a_listener_connection_the_pool_took_back_counts_as_lost_not_as_a_crash():
    """After a PostgreSQL restart asyncpg may already have released the LISTEN connection:
    asking it `is_closed()` raises. That once ended the relay silently for good."""

    class Released:
        def is_closed(self) -> bool:
            raise asyncpg.InterfaceError("connection has been released back to the pool")

    class Open:
        def is_closed(self) -> bool:
            return False

    assert _listener_lost(cast(Any, Released())) is True
    assert _listener_lost(cast(Any, Open())) is False
