"""The paper venue against the real PostgreSQL: matching rules, cancels, submits, the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import asyncpg
import pytest

from activities.calendar.sessions import MarketSessions
from activities.venue.exchange import VENUE_LOCK_KEY, PaperVenue, broker_order_id_for
from contracts.payloads import BrokerEventType, OrderRequest
from contracts.ports import BrokerOrderNotFoundError, BrokerRejectedError
from domain.commissions import CommissionModel, FixedPerTrade, PerShare
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from tests.fakes.feeds import ScriptedFeed

pytestmark = pytest.mark.integration

BUY, SELL = OrderSide.BUY, OrderSide.SELL
# Thursday 15 January 2026, 10:00 in New York: the exchange is open.
START = datetime(2026, 1, 15, 15, 0, tzinfo=UTC)


class Clock:
    """The venue's and the feed's time, moved by the test."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 1) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Venue:
    pool: asyncpg.Pool
    clock: Clock
    feed: ScriptedFeed
    sessions: MarketSessions
    venue: PaperVenue

    async def submit(self, **fields: object) -> str:
        request = order(**fields)
        await self.venue.submit(request)
        return str(request.order_id)

    async def match(self) -> int:
        """One pass, after the venue's latency has passed."""
        self.clock.advance(1)
        return await self.venue.match_once()

    def quote(self, bid: str, ask: str, bid_size: int = 1000, ask_size: int = 1000, **kw: str):
        """A new quote: the clock moves on first, so it is a new quote bucket."""
        self.clock.advance(1)
        return self.feed.set_quote("AAPL", bid, ask, bid_size=bid_size, ask_size=ask_size, **kw)

    async def events(self, client_order_id: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT event FROM venue_outbox WHERE client_order_id = $1 ORDER BY id",
            client_order_id,
        )
        return [row["event"] for row in rows]

    async def row(self, client_order_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT * FROM venue_orders WHERE client_order_id = $1", client_order_id
        )
        assert row is not None
        return row


def order(
    symbol: str = "AAPL",
    side: OrderSide = BUY,
    quantity: str = "100",
    order_type: OrderType = OrderType.MARKET,
    time_in_force: TimeInForce = TimeInForce.GTC,
    limit_price: str | None = None,
    stop_price: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        order_id=uuid4(),
        portfolio_id=uuid4(),
        client_order_id=f"c-{uuid4().hex[:8]}",
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=time_in_force,
        limit_price=None if limit_price is None else Decimal(limit_price),
        stop_price=None if stop_price is None else Decimal(stop_price),
    )


MakeVenue = Callable[..., Awaitable[Venue]]


@pytest.fixture
def make_venue(db_pool: asyncpg.Pool) -> MakeVenue:
    async def make(
        commission_model: CommissionModel | None = None,
        mode: str = "always_open",
        start: datetime = START,
    ) -> Venue:
        clock = Clock(start)
        feed = ScriptedFeed(clock=clock)
        feed.set_quote("AAPL", "199.90", "200.00")
        sessions = MarketSessions(mode)  # type: ignore[arg-type]
        venue = PaperVenue(
            db_pool,
            feed,
            sessions,
            commission_model or PerShare(),
            latency_ms=50,
            slippage_bps=Decimal("5"),
            clock=clock,
        )
        return Venue(db_pool, clock, feed, sessions, venue)

    return make


@pytest.fixture
async def v(make_venue: MakeVenue) -> Venue:
    return await make_venue()


# -- market orders ----------------------------------------------------------------------------


async def test_market_buy_fills_at_the_ask_plus_size_dependent_slippage(v: Venue):
    v.quote("199.90", "200.00", ask_size=1000)
    oid = await v.submit(quantity="1000")

    assert await v.venue.match_once() == 0  # the venue's latency has not passed yet
    assert await v.match() == 1

    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.FILLED
    assert state.filled_quantity == Decimal("1000")
    [fill] = state.executions
    # 5 bps x (1000 / 1000 displayed) of 200.00 = 0.10
    assert fill.event is BrokerEventType.FILL
    assert fill.price == Decimal("200.10")
    assert fill.quantity == Decimal("1000")
    assert fill.cumulative_quantity == Decimal("1000")
    assert fill.execution_id == f"{broker_order_id_for(oid)}-1"
    assert fill.commission == Decimal("5.00")  # PerShare: 0.005 x 1000
    assert fill.timestamp == v.clock.now
    assert await v.events(oid) == ["new", "fill"]
    assert (await v.row(oid))["filled_notional"] == Decimal("200100.00")


@pytest.mark.parametrize(
    ("side", "quantity", "expected"),
    [
        # 200.00 + 5 bps x 100/1000 = 200.01 exactly
        (BUY, "100", Decimal("200.01")),
        # 199.90 - 5 bps x 500/1000 = 199.850025, to the nearest tick
        (SELL, "500", Decimal("199.85")),
        # 200.00 + 5 bps x 10/1000 = 200.001: under half a tick, the touch
        (BUY, "10", Decimal("200.00")),
        # 200.00 + 5 bps x 50/1000 = 200.005: exactly half a tick goes against the buyer
        (BUY, "50", Decimal("200.01")),
        # 199.90 - 5 bps x 50/1000 = 199.895005...: nearest tick is 199.90 - a hair below
        # half, so the seller keeps the touch
        (SELL, "50", Decimal("199.90")),
    ],
)
async def test_slippage_is_rounded_to_the_nearest_tick_ties_against_the_taker(
    v: Venue, side: OrderSide, quantity: str, expected: Decimal
):
    oid = await v.submit(side=side, quantity=quantity)
    await v.match()
    [fill] = (await v.venue.get_order(oid)).executions
    assert fill.price == expected


async def test_two_orders_share_one_quotes_displayed_size_instead_of_both_taking_it(v: Venue):
    v.quote("49.95", "50.00", ask_size=40)
    first = await v.submit(quantity="30")
    second = await v.submit(quantity="30")

    assert await v.match() == 2
    filled = [(await v.venue.get_order(o)).filled_quantity for o in (first, second)]
    assert sorted(filled) == [Decimal("10"), Decimal("30")]  # the second took what was left

    assert await v.match() == 0  # the quote is spent for everyone
    v.quote("50.05", "50.10", ask_size=40)
    assert await v.match() == 1
    for o in (first, second):
        assert (await v.venue.get_order(o)).status is OrderStatus.FILLED


async def test_order_larger_than_displayed_size_fills_across_quote_updates_never_twice_on_one(
    v: Venue,
):
    v.quote("49.95", "50.00", ask_size=300)
    oid = await v.submit(quantity="500")

    assert await v.match() == 1
    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.PARTIALLY_FILLED
    assert state.filled_quantity == Decimal("300")

    # Same quote, later pass: its displayed size is spent.
    assert await v.match() == 0
    assert (await v.venue.get_order(oid)).filled_quantity == Decimal("300")

    v.quote("50.05", "50.10", ask_size=1000)
    assert await v.match() == 1

    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.FILLED
    first, second = state.executions
    # 50.00 + 5 bps x 300/300 = 50.025 -> 50.03; 50.10 + 5 bps x 200/1000 = 50.10501 -> 50.11
    assert (first.event, first.quantity, first.price) == (
        BrokerEventType.PARTIAL_FILL,
        Decimal("300"),
        Decimal("50.03"),
    )
    assert (second.event, second.quantity, second.price) == (
        BrokerEventType.FILL,
        Decimal("200"),
        Decimal("50.11"),
    )
    assert [first.cumulative_quantity, second.cumulative_quantity] == [Decimal(300), Decimal(500)]
    broker_id = broker_order_id_for(oid)
    assert [first.execution_id, second.execution_id] == [f"{broker_id}-1", f"{broker_id}-2"]
    assert await v.events(oid) == ["new", "partial_fill", "fill"]
    assert (await v.row(oid))["filled_notional"] == Decimal("300") * Decimal("50.03") + Decimal(
        "200"
    ) * Decimal("50.11")


# -- limit, stop and stop-limit orders ----------------------------------------------------------


async def test_resting_limit_buy_fills_at_the_ask_only_once_the_price_moves_through_it(v: Venue):
    oid = await v.submit(order_type=OrderType.LIMIT, limit_price="99.50")
    v.quote("99.90", "100.00")
    assert await v.match() == 0
    v.quote("99.55", "99.60")
    assert await v.match() == 0
    assert (await v.venue.get_order(oid)).status is OrderStatus.SUBMITTED

    v.quote("99.40", "99.45")
    assert await v.match() == 1

    [fill] = (await v.venue.get_order(oid)).executions
    assert fill.price == Decimal("99.45")  # better than the limit; no slippage on a limit


async def test_limit_sell_fills_at_the_bid_when_bid_reaches_the_limit(v: Venue):
    oid = await v.submit(side=SELL, order_type=OrderType.LIMIT, limit_price="201.00")
    assert await v.match() == 0
    v.quote("201.00", "201.05")
    assert await v.match() == 1
    [fill] = (await v.venue.get_order(oid)).executions
    assert fill.price == Decimal("201.00")


async def test_buy_stop_triggers_when_the_last_trade_reaches_the_stop(v: Venue):
    v.quote("100.40", "100.50", last="100.45")
    oid = await v.submit(order_type=OrderType.STOP, stop_price="101.00")
    assert await v.match() == 0
    # The ask is through the stop but the last trade is not: no trigger.
    v.quote("100.95", "101.05", last="100.99")
    assert await v.match() == 0
    assert (await v.row(oid))["triggered"] is False

    v.quote("100.99", "101.01", last="101.00")
    assert await v.match() == 1

    row = await v.row(oid)
    assert (row["triggered"], row["status"]) == (True, "filled")
    [fill] = (await v.venue.get_order(oid)).executions
    # A stop becomes a market order: 101.01 + 5 bps x 100/1000 = 101.0150505 -> 101.02
    assert fill.price == Decimal("101.02")


async def test_sell_stop_limit_triggers_then_rests_as_a_limit_until_marketable(v: Venue):
    v.quote("95.10", "95.20", last="95.15")
    oid = await v.submit(
        side=SELL, order_type=OrderType.STOP_LIMIT, stop_price="95.00", limit_price="94.90"
    )
    assert await v.match() == 0

    v.quote("94.80", "94.85", last="94.95")  # triggers; the bid is below the limit
    assert await v.match() == 0
    row = await v.row(oid)
    assert (row["triggered"], row["status"]) == (True, "new")

    v.quote("94.92", "94.97", last="95.50")  # back above the stop: still triggered
    assert await v.match() == 1
    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.FILLED
    assert state.executions[0].price == Decimal("94.92")


# -- IOC, FOK, DAY ----------------------------------------------------------------------------


async def test_ioc_fills_what_is_displayed_then_cancels_the_rest(v: Venue):
    v.quote("199.90", "200.00", ask_size=200)
    oid = await v.submit(quantity="500", time_in_force=TimeInForce.IOC)

    assert await v.match() == 2  # the partial fill and the cancel

    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.CANCELED
    assert state.filled_quantity == Decimal("200")
    assert [e.event for e in state.executions] == [BrokerEventType.PARTIAL_FILL]
    assert await v.events(oid) == ["new", "partial_fill", "canceled"]
    canceled = await v.pool.fetchval(
        "SELECT payload->>'cumulative_quantity' FROM venue_outbox "
        "WHERE client_order_id = $1 AND event = 'canceled'",
        oid,
    )
    assert canceled == "200"

    v.quote("199.90", "200.00", ask_size=5000)
    assert await v.match() == 0  # one pass only


async def test_fok_is_canceled_unfilled_when_it_cannot_fill_completely(v: Venue):
    v.quote("199.90", "200.00", ask_size=200)
    oid = await v.submit(quantity="500", time_in_force=TimeInForce.FOK)

    assert await v.match() == 1

    state = await v.venue.get_order(oid)
    assert (state.status, state.filled_quantity, state.executions) == (
        OrderStatus.CANCELED,
        Decimal(0),
        [],
    )
    assert await v.events(oid) == ["new", "canceled"]


async def test_fok_fills_completely_when_the_displayed_size_covers_it(v: Venue):
    v.quote("199.90", "200.00", ask_size=200)
    oid = await v.submit(quantity="200", time_in_force=TimeInForce.FOK)

    assert await v.match() == 1

    state = await v.venue.get_order(oid)
    assert (state.status, state.filled_quantity) == (OrderStatus.FILLED, Decimal("200"))
    assert await v.events(oid) == ["new", "fill"]


async def test_ioc_stop_not_triggered_at_its_first_pass_is_canceled(v: Venue):
    v.quote("99.90", "100.00", last="99.95")
    oid = await v.submit(
        order_type=OrderType.STOP, stop_price="101.00", time_in_force=TimeInForce.IOC
    )

    assert await v.match() == 1

    state = await v.venue.get_order(oid)
    assert (state.status, state.filled_quantity) == (OrderStatus.CANCELED, Decimal(0))
    assert await v.events(oid) == ["new", "canceled"]


async def test_day_order_expires_at_the_session_close(v: Venue):
    submitted_at = v.clock.now
    oid = await v.submit(
        order_type=OrderType.LIMIT, limit_price="150.00", time_in_force=TimeInForce.DAY
    )
    expires_at = (await v.row(oid))["expires_at"]
    assert expires_at == v.sessions.next_close(submitted_at)

    v.clock.now = expires_at - timedelta(microseconds=1)
    assert await v.venue.match_once() == 0
    v.clock.now = expires_at
    assert await v.venue.match_once() == 1

    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.EXPIRED
    assert state.reason == "expired at the close"
    assert await v.events(oid) == ["new", "expired"]


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_of_a_resting_order_cancels_it_once(v: Venue):
    oid = await v.submit(order_type=OrderType.LIMIT, limit_price="150.00")
    await v.match()

    state = await v.venue.cancel(oid)
    assert (state.status, state.filled_quantity) == (OrderStatus.CANCELED, Decimal(0))

    again = await v.venue.cancel(oid)
    assert again == state
    assert await v.events(oid) == ["new", "canceled"]

    v.quote("149.00", "149.50")
    assert await v.match() == 0  # a canceled order no longer matches


async def test_cancel_of_a_partially_filled_order_reports_the_filled_quantity(v: Venue):
    v.quote("199.90", "200.00", ask_size=300)
    oid = await v.submit(quantity="500")
    await v.match()

    state = await v.venue.cancel(oid)

    assert (state.status, state.filled_quantity) == (OrderStatus.CANCELED, Decimal("300"))
    assert len(state.executions) == 1
    payload = await v.pool.fetchval(
        "SELECT payload FROM venue_outbox WHERE client_order_id = $1 AND event = 'canceled'", oid
    )
    assert payload["cumulative_quantity"] == "300"


async def test_cancel_of_a_filled_order_changes_nothing(v: Venue):
    oid = await v.submit()
    await v.match()
    before = dict(await v.row(oid))

    state = await v.venue.cancel(oid)

    assert state.status is OrderStatus.FILLED
    assert len(state.executions) == 1
    assert dict(await v.row(oid)) == before
    assert await v.events(oid) == ["new", "fill"]


async def test_unknown_order_is_not_found(v: Venue):
    with pytest.raises(BrokerOrderNotFoundError):
        await v.venue.get_order("nope")
    with pytest.raises(BrokerOrderNotFoundError):
        await v.venue.cancel("nope")


# -- submit -----------------------------------------------------------------------------------


async def test_duplicate_submit_returns_the_existing_order_and_writes_one_row(v: Venue):
    request = order()
    first = await v.venue.submit(request)
    second = await v.venue.submit(request)

    assert not first.already_existed
    assert second.already_existed
    assert (
        second.broker_order_id
        == first.broker_order_id
        == broker_order_id_for(str(request.order_id))
    )
    assert await v.pool.fetchval("SELECT count(*) FROM venue_orders") == 1
    assert await v.events(str(request.order_id)) == ["new"]


async def test_concurrent_duplicate_submits_create_one_order(v: Venue):
    request = order()
    results = await asyncio.gather(*(v.venue.submit(request) for _ in range(8)))

    assert sum(not r.already_existed for r in results) == 1
    assert len({r.broker_order_id for r in results}) == 1
    assert await v.pool.fetchval("SELECT count(*) FROM venue_orders") == 1
    assert await v.events(str(request.order_id)) == ["new"]


async def test_submit_of_an_unknown_symbol_is_rejected_and_stays_rejected(v: Venue):
    request = order(symbol="ZZZZ")
    with pytest.raises(BrokerRejectedError, match="unknown symbol ZZZZ"):
        await v.venue.submit(request)
    with pytest.raises(BrokerRejectedError, match="unknown symbol ZZZZ"):
        await v.venue.submit(request)

    oid = str(request.order_id)
    state = await v.venue.get_order(oid)
    assert (state.status, state.reason) == (OrderStatus.REJECTED, "unknown symbol ZZZZ")
    assert await v.events(oid) == ["rejected"]


@pytest.mark.parametrize(
    "fields",
    [
        {"quantity": "0"},  # the schema refuses a non-positive quantity
        {"order_type": OrderType.LIMIT},  # a limit order without a limit price
    ],
)
async def test_submit_of_a_malformed_order_is_refused_without_a_trace(v: Venue, fields: dict):
    with pytest.raises(BrokerRejectedError, match="cannot take this order"):
        await v.submit(**fields)
    assert await v.pool.fetchval("SELECT count(*) FROM venue_orders") == 0
    assert await v.pool.fetchval("SELECT count(*) FROM venue_outbox") == 0


async def test_closed_market_rejects_day_ioc_fok_but_takes_gtc(make_venue: MakeVenue):
    saturday = datetime(2026, 1, 17, 15, 0, tzinfo=UTC)
    v = await make_venue(mode="calendar", start=saturday)
    for tif in (TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK):
        with pytest.raises(BrokerRejectedError, match="market closed"):
            await v.submit(time_in_force=tif)

    gtc = await v.submit(time_in_force=TimeInForce.GTC)
    assert (await v.venue.get_order(gtc)).status is OrderStatus.SUBMITTED
    v.quote("199.90", "200.00")
    assert await v.match() == 0  # no fills while the market is closed

    v.clock.now = datetime(2026, 1, 20, 15, 0, tzinfo=UTC)  # Tuesday (Monday is MLK day)
    v.quote("199.90", "200.00")
    assert await v.match() == 1
    assert (await v.venue.get_order(gtc)).status is OrderStatus.FILLED


async def test_a_per_trade_fee_is_charged_once_per_order_not_per_partial_fill(
    make_venue: MakeVenue,
):
    v = await make_venue(commission_model=FixedPerTrade(Decimal("4.95")))
    v.quote("199.90", "200.00", ask_size=300)
    oid = await v.submit(quantity="500")
    await v.match()
    v.quote("199.90", "200.00", ask_size=300)
    await v.match()

    state = await v.venue.get_order(oid)
    assert [e.commission for e in state.executions] == [Decimal("4.95"), Decimal("0.00")]
    assert state.status is OrderStatus.FILLED


async def test_a_per_share_minimum_applies_once_across_ten_partial_fills(make_venue: MakeVenue):
    """100 shares at 10.00, $0.005 a share with a $1 minimum, filled 10 at a time: the
    order pays $1.00 in all (what risk reserved), not $1 on each of ten executions."""
    v = await make_venue(commission_model=PerShare(minimum=Decimal("1.00")))
    v.quote("9.99", "10.00", ask_size=10)
    oid = await v.submit(quantity="100", order_type=OrderType.LIMIT, limit_price="10.00")
    await v.match()
    for _ in range(9):
        v.quote("9.99", "10.00", ask_size=10)
        await v.match()

    state = await v.venue.get_order(oid)
    assert state.status is OrderStatus.FILLED and len(state.executions) == 10
    assert sum(e.commission for e in state.executions) == Decimal("1.00")
    assert state.executions[0].commission == Decimal("1.00")


# -- the matching loop ------------------------------------------------------------------------


async def _until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


LOCK_HOLDERS = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND granted
  AND ((classid::bigint << 32) | objid::bigint) = $1
"""


async def lock_holders(pool: asyncpg.Pool) -> list[int]:
    return [row["pid"] for row in await pool.fetch(LOCK_HOLDERS, VENUE_LOCK_KEY)]


async def wait_for_status(v: Venue, client_order_id: str, status: str) -> None:
    deadline = asyncio.get_running_loop().time() + 3
    while (await v.row(client_order_id))["status"] != status:
        assert asyncio.get_running_loop().time() < deadline, f"never {status}"
        await asyncio.sleep(0.01)


async def test_exactly_one_of_two_run_loops_matches_and_a_standby_takes_over(
    v: Venue, db_pool: asyncpg.Pool
):
    other = PaperVenue(db_pool, v.feed, v.sessions, PerShare(), clock=v.clock)
    stop_first, stop_other = asyncio.Event(), asyncio.Event()
    first_run = asyncio.create_task(v.venue.run(stop_first, tick_ms=10))
    other_run = asyncio.create_task(other.run(stop_other, tick_ms=10))
    try:
        await _until(lambda: v.venue.is_leader or other.is_leader)
        await asyncio.sleep(0.2)  # several ticks and lock retries
        assert [v.venue.is_leader, other.is_leader].count(True) == 1
        assert len(await lock_holders(db_pool)) == 1
        leader, standby = (v.venue, other) if v.venue.is_leader else (other, v.venue)

        # The leader's loop matches.
        oid = await v.submit()
        v.clock.advance(1)
        await wait_for_status(v, oid, "filled")

        # The leader stops (as if its process ended): the standby takes over.
        (stop_first if leader is v.venue else stop_other).set()
        await asyncio.wait_for(first_run if leader is v.venue else other_run, 1)
        assert not leader.is_leader
        await _until(lambda: standby.is_leader)
    finally:
        stop_first.set()
        stop_other.set()
        await asyncio.wait_for(asyncio.gather(first_run, other_run), 2)
    assert not v.venue.is_leader and not other.is_leader


async def test_run_survives_losing_its_database_session_and_keeps_matching(
    v: Venue, db_pool: asyncpg.Pool
):
    stop = asyncio.Event()
    loop = asyncio.create_task(v.venue.run(stop, tick_ms=10))
    try:
        await _until(lambda: v.venue.is_leader)
        [pid] = await lock_holders(db_pool)
        # The server ends the lock's session (a restart, a failover, an operator).
        assert await db_pool.fetchval("SELECT pg_terminate_backend($1)", pid)

        deadline = asyncio.get_running_loop().time() + 3
        while (holders := await lock_holders(db_pool)) in ([], [pid]):
            assert asyncio.get_running_loop().time() < deadline, "lock never taken again"
            await asyncio.sleep(0.01)
        assert len(holders) == 1

        oid = await v.submit()
        v.clock.advance(1)
        await wait_for_status(v, oid, "filled")
    finally:
        stop.set()
        await asyncio.wait_for(loop, 2)
    assert await lock_holders(db_pool) == []
