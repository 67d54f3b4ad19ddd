"""The Polygon adapter (real polygon-api-client) against a wire-level fake of Polygon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from activities.market_data.polygon import PolygonDataError, PolygonError, PolygonMarketData
from activities.market_data.simulated import SimulatedFeed
from bootstrap.settings import Settings
from bootstrap.vendors import build_market_data
from domain.market import Quote, SymbolNotFoundError, Timeframe
from tests.fakes.polygon import Agg, FakePolygon
from tests.fakes.server import Fault

# More digits than a float carries: parsed through float, it would come back changed.
PRECISE = "187.1234567890123456789"
NOW = datetime(2026, 1, 15, 15, 30, tzinfo=UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon() as server:
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def polygon_for(fake: FakePolygon, clock: Callable[[], float] | None = None) -> PolygonMarketData:
    return PolygonMarketData(
        fake.api_key,
        base_url=fake.base_url,
        stream_url=fake.stream_url,
        timeout_seconds=2,
        clock=clock or Clock(),
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def agg(start: datetime, close: str, volume: str = "1000") -> Agg:
    price = Decimal(close)
    return Agg(start, price, price + 1, price - 1, price, Decimal(volume))


# -- quotes -----------------------------------------------------------------------------------


async def test_a_quote_is_the_nbbo_with_the_last_trade_in_exact_decimals(fake: FakePolygon) -> None:
    fake.set_quote("AAPL", bid=PRECISE, ask="187.1300", bid_size=300, ask_size=500, at=NOW)
    fake.set_trade("AAPL", price="187.125", at=NOW)

    quote = await polygon_for(fake).get_quote("AAPL")

    assert quote == Quote(
        symbol="AAPL",
        bid=Decimal(PRECISE),
        ask=Decimal("187.1300"),
        bid_size=Decimal(300),
        ask_size=Decimal(500),
        last=Decimal("187.125"),
        timestamp=NOW,
    )
    assert str(quote.bid) == PRECISE
    trade = await polygon_for(fake).get_last_trade("AAPL")
    assert (trade.price, trade.size, trade.timestamp) == (Decimal("187.125"), Decimal(100), NOW)


async def test_quotes_are_cached_for_the_ttl_and_concurrent_asks_share_one_fetch(
    fake: FakePolygon,
) -> None:
    fake.set_quote("AAPL", bid="187.10", ask="187.12")
    fake.set_trade("AAPL", price="187.11")
    clock = Clock()
    polygon = polygon_for(fake, clock)

    quotes = await asyncio.gather(*(polygon.get_quote("AAPL") for _ in range(5)))
    await polygon.get_quote("AAPL")
    assert len(set(quotes)) == 1
    assert (fake.hits("nbbo"), fake.hits("trade")) == (1, 1)

    clock.now += 1.5  # past the 1 s TTL
    fake.set_quote("AAPL", bid="187.20", ask="187.22")
    assert (await polygon.get_quote("AAPL")).bid == Decimal("187.20")
    assert fake.hits("nbbo") == 2


async def test_an_unknown_ticker_is_symbol_not_found(fake: FakePolygon) -> None:
    polygon = polygon_for(fake)
    with pytest.raises(SymbolNotFoundError):
        await polygon.get_quote("NOPE")
    with pytest.raises(SymbolNotFoundError):
        await polygon.get_bars("NOPE", Timeframe.DAY_1, 10, end=NOW)
    with pytest.raises(SymbolNotFoundError):
        await polygon.get_quote("../v3/x")  # never reaches a URL
    assert fake.hits("ticker") == 1


async def test_a_429_raises_at_once_and_the_next_call_succeeds(fake: FakePolygon) -> None:
    fake.set_quote("AAPL", bid="187.10", ask="187.12")
    fake.set_trade("AAPL", price="187.11")
    fake.faults.add("nbbo", Fault(status=429))
    polygon = polygon_for(fake)

    with pytest.raises(PolygonError, match="429"):
        await polygon.get_quote("AAPL")
    assert fake.hits("nbbo") == 1  # the client's own retries are off
    quote = await polygon.get_quote("AAPL")  # what Temporal's retry would do

    assert quote.bid == Decimal("187.10")
    assert fake.hits("nbbo") == 2


async def test_a_5xx_raises_for_temporal_to_retry(fake: FakePolygon) -> None:
    fake.add_aggs("AAPL", 1, "day", [agg(NOW - timedelta(days=1), "187")])
    fake.faults.add("aggs", Fault(status=503))
    with pytest.raises(PolygonError, match="503"):
        await polygon_for(fake).get_bars("AAPL", Timeframe.DAY_1, 5, end=NOW)
    assert fake.hits("aggs") == 1


async def test_malformed_answers_are_refused_with_a_clear_error(fake: FakePolygon) -> None:
    fake.set_trade("AAPL", price="187.11")
    polygon = polygon_for(fake)

    fake.set_quote("AAPL", bid="0", ask="187.12")
    with pytest.raises(PolygonDataError, match="p must be positive, got 0"):
        await polygon.get_quote("AAPL")
    fake.set_quote("AAPL", bid="187.20", ask="187.12")
    with pytest.raises(PolygonDataError, match="crossed"):
        await polygon.get_quote("AAPL")
    fake.faults.add("nbbo", Fault(body={"status": "OK", "results": None}))
    with pytest.raises(PolygonDataError, match="expected a JSON object"):
        await polygon.get_quote("AAPL")
    fake.faults.add(
        "aggs", Fault(body={"status": "OK", "results": [{"o": 1, "c": 1, "t": 1768435200000}]})
    )
    with pytest.raises(PolygonDataError, match="h is missing"):
        await polygon.get_bars("AAPL", Timeframe.DAY_1, 5, end=NOW)


# -- bars and series --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeframe", "multiplier", "timespan", "span"),
    [
        (Timeframe.MINUTE_1, 1, "minute", timedelta(minutes=1)),
        (Timeframe.MINUTE_5, 5, "minute", timedelta(minutes=5)),
        (Timeframe.MINUTE_15, 15, "minute", timedelta(minutes=15)),
        (Timeframe.HOUR_1, 1, "hour", timedelta(hours=1)),
        (Timeframe.DAY_1, 1, "day", timedelta(days=1)),
    ],
)
async def test_bars_of_each_timeframe_are_the_newest_up_to_end_oldest_first(
    fake: FakePolygon, timeframe: Timeframe, multiplier: int, timespan: str, span: timedelta
) -> None:
    starts = [NOW - span * back for back in range(10, -3, -1)]  # two bars after `end`
    fake.add_aggs(
        "AAPL", multiplier, timespan, [agg(s, f"187.{i:02d}01") for i, s in enumerate(starts)]
    )

    bars = await polygon_for(fake).get_bars("AAPL", timeframe, 4, end=NOW)

    assert [bar.start for bar in bars] == [NOW - span * back for back in (3, 2, 1, 0)]
    assert [bar.close for bar in bars] == [Decimal(f"187.{i:02d}01") for i in (7, 8, 9, 10)]
    assert all(bar.timeframe is timeframe and bar.symbol == "AAPL" for bar in bars)
    (request,) = [r for r in fake.requests if r.route == "aggs"]
    assert f"/range/{multiplier}/{timespan}/" in request.path
    assert request.query["sort"] == "desc"
    assert request.query["adjusted"] == "true"


async def test_a_historical_range_pages_through_polygon_answers(fake: FakePolygon) -> None:
    start = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    fake.add_aggs(
        "MSFT",
        1,
        "minute",
        [agg(start + timedelta(minutes=m), f"410.{m:04d}") for m in range(60)],
    )
    fake.max_results = 25
    polygon = polygon_for(fake)

    bars = await polygon.get_bars_range(
        "MSFT", Timeframe.MINUTE_1, start, start + timedelta(hours=2)
    )

    assert len(bars) == 60
    assert bars[0].start == start and bars[-1].close == Decimal("410.0059")
    assert [bar.start for bar in bars] == [start + timedelta(minutes=m) for m in range(60)]
    assert fake.hits("aggs") == 3


async def test_the_price_series_is_daily_closes_oldest_first(fake: FakePolygon) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=back) for back in range(30, -1, -1)]
    fake.add_aggs("SPY", 1, "day", [agg(day, f"650.{i:02d}5") for i, day in enumerate(days)])

    closes = await polygon_for(fake).get_price_series("SPY", 5)

    assert closes == [Decimal(f"650.{i:02d}5") for i in range(26, 31)]


# -- the stream -------------------------------------------------------------------------------


async def test_streamed_quotes_carry_exact_decimals_and_survive_a_dropped_socket(
    fake: FakePolygon,
) -> None:
    fake.set_trade("AAPL", price="187.11")
    clock = Clock()
    polygon = polygon_for(fake, clock)
    received: list[Quote] = []

    async def on_quote(quote: Quote) -> None:
        received.append(quote)

    stop = asyncio.Event()
    task = asyncio.create_task(
        polygon.stream_quotes(["AAPL"], on_quote, stop, backoff_base_seconds=0.05)
    )
    await until(lambda: any(fake.listeners.values()))
    await fake.publish_quote("AAPL", bid=PRECISE, ask="187.13", bid_lots=2, ask_lots=3)
    await until(lambda: len(received) == 1)
    await fake.drop_streams()
    await until(lambda: any(fake.listeners.values()))
    await fake.publish_trade("AAPL", price="187.1299")
    await fake.publish_quote("AAPL", bid="187.12", ask="187.14")
    await until(lambda: len(received) == 2)
    stop.set()
    await asyncio.wait_for(task, 5)

    first, second = received
    assert (first.bid, first.ask, first.bid_size, first.ask_size, first.last) == (
        Decimal(PRECISE),
        Decimal("187.13"),
        Decimal(200),
        Decimal(300),
        Decimal("187.11"),
    )
    assert second.last == Decimal("187.1299")
    assert polygon.stream_connections == 2
    assert await polygon.get_quote("AAPL") == second  # the stream refreshed the cache
    assert fake.hits("nbbo") == 0


# -- selection by configuration ---------------------------------------------------------------


def test_market_data_is_polygon_only_when_its_key_is_set(fake: FakePolygon) -> None:
    feed = SimulatedFeed(seed=7)
    assert build_market_data(Settings(polygon_api_key=None), feed) is feed
    polygon = build_market_data(Settings(polygon_api_key="key"), feed)
    assert isinstance(polygon, PolygonMarketData)
    assert polygon.symbols() == feed.symbols()


@pytest.mark.parametrize(
    ("name", "url"),
    [("polygon_base_url", "api.polygon.io"), ("polygon_stream_url", "https://socket.polygon.io")],
)
def test_a_malformed_polygon_url_fails_when_the_settings_are_built(name: str, url: str) -> None:
    with pytest.raises(ValidationError, match=name.upper()):
        Settings(**{"polygon_api_key": "key", name: url})


async def test_a_slow_answer_times_out_instead_of_hanging(fake: FakePolygon) -> None:
    fake.set_quote("AAPL", bid="187.10", ask="187.12")
    fake.set_trade("AAPL", price="187.11")
    fake.faults.add("nbbo", Fault(delay=1.0))
    polygon = PolygonMarketData(fake.api_key, base_url=fake.base_url, timeout_seconds=0.2)

    async with asyncio.timeout(0.8):  # the client itself would wait forever
        with pytest.raises(PolygonError, match="timed out"):
            await polygon.get_quote("AAPL")
    assert fake.hits("nbbo") == 1
