"""Issue 11, "suspected from reading": the Alpaca items, each proven or refuted on the wire.

Against the wire-level Alpaca fake on 127.0.0.1 (real alpaca-py, real websocket) and, for
the reconnect hook, the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

import bootstrap.control as control
from activities.brokers.alpaca_rest import AlpacaError, execution_id_for
from activities.store import ledger
from activities.store.ledger import MarketContext
from contracts.payloads import BrokerEvent, order_id_for
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import Portfolio, RiskLimits
from tests.fakes.alpaca import FakeAlpaca
from tests.integration.test_alpaca import Recorder, broker_for, order, streaming, until

pytestmark = pytest.mark.integration


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca() as server:
        yield server


# -- 1. the stream's execution id and polling's are the same for the same fill ---------------


async def test_stream_and_fill_activities_name_every_fill_alike_even_written_differently(
    fake: FakeAlpaca,
) -> None:
    """Refutes "the id from the stream's order snapshot and the one from the FILL
    activities' cum_qty can differ": three fractional partial fills, each reaching us over
    the stream (snapshot `filled_qty`) and by polling (`cum_qty`), with Alpaca writing the
    two numbers with different scales ("2.50" on the order, "2.5" in the activity). Every
    fill gets one id, quantity and price either way, so none is applied twice or missed."""
    broker, recorder = broker_for(fake), Recorder()
    request = order(quantity="7.25", limit="187.25")
    client_order_id = str(request.order_id)
    async with streaming(fake, recorder):
        await broker.submit(request)
        await until(lambda: recorder.kinds() == ["new"])
        for qty, price in (("2.5", "187.10"), ("1.75", "187.1250"), ("3", "187.20")):
            filled = await fake.fill(client_order_id, qty, price)
            # Alpaca writes the order's filled_qty with trailing zeros now and then.
            update = dict(fake.last_update)
            update["order"] = dict(update["order"], filled_qty=f"{filled['filled_qty']}0")
            await fake.send_update(update)  # the same fill again, written differently
        await until(lambda: len(recorder.delivered) == 7)

    streamed = [event for event in recorder.events() if event.event.is_fill]
    polled = (await broker.get_order(client_order_id)).executions
    broker_order_id = fake.order(client_order_id)["id"]
    expected = [
        execution_id_for(broker_order_id, Decimal(cumulative))
        for cumulative in ("2.5", "4.25", "7.25")
    ]
    assert [e.execution_id for e in polled] == expected
    # Each fill was streamed twice (once re-written): both copies carry the polled id.
    assert [e.execution_id for e in streamed] == [x for x in expected for _ in range(2)]
    applied: dict[str, BrokerEvent] = {}  # the workflow applies each execution id once
    for event in streamed + polled:
        first = applied.setdefault(event.execution_id or "", event)
        assert (first.quantity, first.price) == (event.quantity, event.price)
    assert sum(e.quantity or 0 for e in applied.values()) == Decimal("7.25")
    assert [e.event.value for e in polled] == ["partial_fill", "partial_fill", "fill"]


async def test_a_trade_update_whose_snapshot_is_not_the_order_after_its_fill_is_refused(
    fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the suspicion holds: the stream names a fill by its order snapshot, so a
    snapshot taken after a later fill (or before this one) names it like another fill.
    A partial_fill of 6 arriving with the order already filled to 10 would be booked as
    "cum-10" (6 at the first price); the real cum-10 fill (4 at the second price) is then
    a duplicate, and polling adds cum-6: 12 shares of a 10-share order, one fill twice, one
    missed. A fill of 4 with the snapshot from before it (filled 6) would be named "cum-6".
    The detectable cases (a partial_fill of a filled order, a fill of an unfilled one) are
    refused; polling then books both fills once, each at its own price."""
    broker, recorder = broker_for(fake), Recorder()
    request = order(quantity="10", limit="187.25")
    client_order_id = str(request.order_id)
    async with streaming(fake, recorder):
        await broker.submit(request)
        await until(lambda: recorder.kinds() == ["new"])
        listening, fake.listeners = fake.listeners, set()  # both updates are held back
        await fake.fill(client_order_id, "6", "187.10")
        first = dict(fake.last_update)
        await fake.fill(client_order_id, "4", "187.20")
        final = dict(fake.last_update)
        fake.listeners = listening
        # The first fill's update arrives with the snapshot of the filled order...
        await fake.send_update(dict(first, order=final["order"]))
        # ...and the last one's with the snapshot from before it; then the real last one.
        await fake.send_update(dict(final, order=first["order"]))
        await fake.send_update(final)
        await until(lambda: len(recorder.delivered) == 2)

    streamed = [event for event in recorder.events() if event.event.is_fill]
    broker_order_id = fake.order(client_order_id)["id"]
    assert [(e.execution_id, e.quantity) for e in streamed] == [
        (execution_id_for(broker_order_id, Decimal("10")), Decimal("4"))
    ]
    assert sum("is not the order right after this" in r.getMessage() for r in caplog.records) == 2
    polled = (await broker.get_order(client_order_id)).executions
    applied: dict[str, BrokerEvent] = {}  # the workflow applies each execution id once
    for event in streamed + polled:
        applied.setdefault(event.execution_id or "", event)
    assert sorted((e.quantity, e.price) for e in applied.values()) == [
        (Decimal("4"), Decimal("187.20")),
        (Decimal("6"), Decimal("187.10")),
    ]


# -- 2. paging of fill activities ------------------------------------------------------------


async def test_a_fill_behind_sixty_pages_of_other_fills_is_found_by_resuming_the_paging(
    fake: FakeAlpaca,
) -> None:
    """Proves "paging of fill activities stops after 50 pages": an order whose own fill
    comes after 6,000 fills of another order (60 pages of account activities) could never
    be polled, every attempt failing at page 50. Fixed in alpaca_rest: a call that reads
    its 50 pages keeps its place, and the next attempt (Temporal's retry) resumes there."""
    broker = broker_for(fake)
    mine, busy = order(quantity="10", limit="187.25"), order(quantity="6000", limit="1")
    await broker.submit(mine)
    await broker.submit(busy)
    for _ in range(6000):
        await fake.fill(str(busy.order_id), "1", "1")
    await fake.fill(str(mine.order_id), "4", "187.01")
    await fake.fill(str(mine.order_id), "6", "187.02")

    with pytest.raises(AlpacaError, match="the next attempt resumes there"):
        await broker.get_order(str(mine.order_id))
    first_call = len([r for r in fake.requests if r.route == "activities"])
    state = await broker.get_order(str(mine.order_id))

    assert state.status is OrderStatus.FILLED
    assert [(e.quantity, e.price) for e in state.executions] == [
        (Decimal("4"), Decimal("187.01")),
        (Decimal("6"), Decimal("187.02")),
    ]
    pages = [r for r in fake.requests if r.route == "activities"]
    assert first_call == 50
    assert len(pages) == 61  # resumed at page 51: nothing was read twice


# -- 6. a stream reconnect re-reads every open order -----------------------------------------

LIMITS = RiskLimits(
    max_position_size=Decimal("1000000"),
    max_order_notional=Decimal("1000000"),
    max_concentration=Decimal("1"),
    max_positions=100,
    daily_loss_limit=Decimal("1000000"),
)


async def test_a_stream_reconnect_tells_every_open_order_to_re_read_not_only_the_newest_1000(
    db_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proves "a stream reconnect signals only the 1,000 newest open orders": with 1,050
    open orders, the hook the worker runs after every reconnect asks 1,000 of them; the 50
    oldest never re-read the broker, so fills sent while the stream was down stay missing
    until their next idle poll (minutes to hours)."""
    now = datetime.now(UTC)
    market = MarketContext(Decimal("0.99"), Decimal("1.01"), Decimal(0), True, now)

    async def place_many(book: int, count: int) -> list[UUID]:
        """`count` resting limit buys of one portfolio, oldest first; ten books side by side
        (each places under its own portfolio lock)."""
        portfolio = Portfolio(
            initial_capital=Decimal("1000000.00"), limits=LIMITS, name=f"many-{book}"
        )
        await ledger.create_portfolio(db_pool, portfolio)
        ids = []
        for n in range(count):
            client_order_id = f"reconnect-{book}-{n}"
            request = order(quantity="1", limit="1.00")
            request.order_id = order_id_for(portfolio.id, client_order_id)
            request.portfolio_id = portfolio.id
            request.client_order_id = client_order_id
            request.side, request.order_type = OrderSide.BUY, OrderType.LIMIT
            request.time_in_force = TimeInForce.GTC
            at = now + timedelta(microseconds=n * 10 + book)
            snapshot = await ledger.place_order(db_pool, request, at, market)
            assert snapshot.status is OrderStatus.ACCEPTED
            ids.append(snapshot.order_id)
        return ids

    books = await asyncio.gather(*(place_many(book, 105) for book in range(10)))
    placed = [order_id for ids in books for order_id in ids]
    assert len(placed) == 1050
    told: list[UUID] = []

    async def reconcile_order(client: object, order_id: UUID) -> None:
        told.append(order_id)  # the signal the worker would send to order-{order_id}

    monkeypatch.setattr(control, "reconcile_order", reconcile_order)
    sent = await control.reconcile_open_orders(None, db_pool)  # type: ignore[arg-type]

    assert sorted(told) == sorted(placed)
    assert sent == 1050
