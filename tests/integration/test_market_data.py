"""The simulated feed and the scripted feed: deterministic, valid quotes and consistent bars."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.market_data.simulated import DEFAULT_UNIVERSE, MAX_EXCURSION, SimulatedFeed
from domain.analytics import beta, correlation
from domain.errors import ValidationError
from domain.market import Bar, SymbolNotFoundError, Timeframe
from domain.values import tick_size_for
from tests.fakes.feeds import ScriptedFeed

AT = datetime(2026, 11, 27, 15, 4, 5, 678901, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def on_tick_grid(price: Decimal) -> bool:
    return price % tick_size_for(price) == 0


def test_the_default_universe_holds_the_liquid_us_names():
    feed = SimulatedFeed()
    for symbol in ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "SPY", "QQQ"):
        assert symbol in feed.symbols()
    assert len(feed.symbols()) >= 20
    assert feed.symbols() == sorted(DEFAULT_UNIVERSE)


def test_two_feeds_with_the_same_seed_quote_identically_at_the_same_instant():
    first, second = SimulatedFeed(seed=42), SimulatedFeed(seed=42)
    for symbol in first.symbols():
        assert first.quote(symbol, AT) == second.quote(symbol, AT)
        assert first.bars(symbol, Timeframe.MINUTE_5, 20, AT) == second.bars(
            symbol, Timeframe.MINUTE_5, 20, AT
        )


def test_a_quote_depends_only_on_the_instant_not_on_what_was_asked_before():
    feed = SimulatedFeed()
    before = feed.quote("AAPL", AT)
    feed.bars("AAPL", Timeframe.DAY_1, 300, AT + timedelta(days=400))
    feed.quote("AAPL", AT - timedelta(days=3))
    assert feed.quote("AAPL", AT) == before


def test_feeds_with_different_seeds_quote_differently():
    mids = {SimulatedFeed(seed=seed).mid("AAPL", AT) for seed in range(5)}
    assert len(mids) == 5


def test_quotes_move_over_time():
    feed = SimulatedFeed()
    seconds = [feed.mid("AAPL", AT + timedelta(seconds=s)) for s in range(60)]
    assert len(set(seconds)) == 60
    days = [feed.quote("AAPL", AT + timedelta(days=d)).bid for d in range(30)]
    assert len(set(days)) > 20


def test_the_feed_quotes_at_its_clock_when_no_instant_is_given():
    feed = SimulatedFeed(clock=lambda: AT)
    assert feed.quote("MSFT") == feed.quote("MSFT", AT)
    assert feed.quote("MSFT").timestamp == AT


def test_an_instant_in_another_zone_is_the_same_instant():
    feed = SimulatedFeed()
    tokyo = AT.astimezone(timezone(timedelta(hours=9)))
    assert feed.quote("NVDA", tokyo) == feed.quote("NVDA", AT)


def test_a_naive_instant_is_refused():
    with pytest.raises(ValidationError):
        SimulatedFeed().quote("AAPL", datetime(2026, 11, 27, 15))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=instants)
def test_every_quote_of_every_symbol_is_a_valid_top_of_book(at):
    feed = SimulatedFeed()
    for symbol in feed.symbols():
        quote = feed.quote(symbol, at)
        assert quote.bid < quote.ask
        assert quote.bid <= quote.last <= quote.ask
        for price in (quote.bid, quote.ask, quote.last):
            assert on_tick_grid(price), (symbol, price)
        assert quote.ask - quote.bid <= 5 * tick_size_for(quote.ask)
        for size in (quote.bid_size, quote.ask_size):
            assert 100 <= size <= 2000 and size % 100 == 0
        assert quote.timestamp == at


@settings(max_examples=40, deadline=None)
@given(at=instants, seed=st.integers(min_value=-(2**64), max_value=2**64))
def test_prices_stay_within_the_bounded_excursion_around_the_reference(at, seed):
    assert MAX_EXCURSION <= Decimal("0.25")
    feed = SimulatedFeed(seed=seed)
    for symbol, reference in DEFAULT_UNIVERSE.items():
        assert abs(feed.mid(symbol, at) / reference - 1) <= MAX_EXCURSION


def test_volatile_and_cheap_names_quote_wider_spreads_than_an_index_fund():
    feed = SimulatedFeed()

    def average_spread_in_ticks(symbol: str) -> Decimal:
        quotes = [feed.quote(symbol, AT + timedelta(seconds=s)) for s in range(200)]
        ticks = [(q.ask - q.bid) / tick_size_for(q.ask) for q in quotes]
        return sum(ticks, Decimal(0)) / len(ticks)

    assert average_spread_in_ticks("TSLA") > average_spread_in_ticks("SPY")
    assert average_spread_in_ticks("F") > average_spread_in_ticks("SPY")


def test_index_funds_move_together_and_a_volatile_name_has_the_higher_beta():
    feed = SimulatedFeed()
    series = {s: feed.price_series(s, 120, AT) for s in ("SPY", "DIA", "JNJ", "TSLA", "KO")}
    assert correlation(series["SPY"], series["DIA"]) > Decimal("0.9")
    assert correlation(series["SPY"], series["JNJ"]) < Decimal("0.9")
    assert beta(series["TSLA"], series["SPY"]) > beta(series["KO"], series["SPY"])


def test_an_unknown_symbol_is_symbol_not_found():
    feed = SimulatedFeed()
    with pytest.raises(SymbolNotFoundError):
        feed.quote("NOPE", AT)
    with pytest.raises(SymbolNotFoundError):
        feed.bars("NOPE", Timeframe.DAY_1, 5, AT)
    with pytest.raises(SymbolNotFoundError):
        feed.price_series("NOPE", 5, AT)


def test_a_lower_case_symbol_is_not_silently_upper_cased():
    with pytest.raises(SymbolNotFoundError):
        SimulatedFeed().quote("aapl", AT)


def test_a_custom_universe_replaces_the_default_one():
    feed = SimulatedFeed(universe={"ACME": Decimal("0.5000"), "BIG": Decimal("12")})
    assert feed.symbols() == ["ACME", "BIG"]
    quote = feed.quote("ACME", AT)
    assert tick_size_for(quote.bid) == Decimal("0.0001") and on_tick_grid(quote.bid)
    with pytest.raises(SymbolNotFoundError):
        feed.quote("AAPL", AT)


def test_a_universe_priced_in_floats_or_lower_case_is_refused():
    with pytest.raises(ValidationError):
        SimulatedFeed(universe={"ACME": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        SimulatedFeed(universe={"acme": Decimal(1)})


@pytest.mark.parametrize("timeframe", list(Timeframe))
def test_bars_are_oldest_first_contiguous_and_end_with_the_bar_containing_end(timeframe):
    feed = SimulatedFeed()
    bars = feed.bars("AAPL", timeframe, 50, AT)
    span = timedelta(seconds=timeframe.seconds)
    assert len(bars) == 50
    assert bars[-1].start <= AT < bars[-1].start + span
    assert bars[-1].start.timestamp() % timeframe.seconds == 0
    for previous, bar in zip(bars, bars[1:], strict=False):
        assert bar.start - previous.start == span
        assert bar.open == previous.close
    assert bars[-1].close == feed.bars("AAPL", timeframe, 1, AT)[0].close


def test_every_bar_bounds_its_open_and_close_on_the_tick_grid():
    feed = SimulatedFeed()
    for symbol in feed.symbols():
        for bar in feed.bars(symbol, Timeframe.HOUR_1, 48, AT):
            assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
            assert all(on_tick_grid(p) for p in (bar.open, bar.high, bar.low, bar.close))
            assert bar.volume > 0 and bar.volume % 100 == 0


def test_the_last_bar_closes_at_the_price_of_end_and_has_traded_part_of_its_volume():
    feed = SimulatedFeed()
    start = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    partial = feed.bars("AAPL", Timeframe.HOUR_1, 1, start + timedelta(minutes=6))[0]
    whole = feed.bars("AAPL", Timeframe.HOUR_1, 2, start + timedelta(hours=1))[0]
    assert partial.start == whole.start == start
    assert partial.open == whole.open
    assert (
        partial.close
        == feed.bars("AAPL", Timeframe.MINUTE_1, 1, start + timedelta(minutes=6))[0].close
    )
    assert partial.volume <= whole.volume


@pytest.mark.parametrize("limit", [0, -1, 1001, True])
def test_a_bar_limit_outside_1_to_1000_is_refused(limit):
    with pytest.raises(ValidationError) as refused:
        SimulatedFeed().bars("AAPL", Timeframe.MINUTE_1, limit, AT)
    assert refused.value.field == "limit"


def test_the_largest_allowed_bar_request_is_answered():
    assert len(SimulatedFeed().bars("SPY", Timeframe.DAY_1, 1000, AT)) == 1000


def test_daily_closes_are_the_closes_of_the_last_whole_daily_bars():
    feed = SimulatedFeed()
    closes = feed.price_series("MSFT", 10, AT)
    daily = feed.bars("MSFT", Timeframe.DAY_1, 11, AT)
    assert closes == [bar.close for bar in daily[:-1]]


async def test_the_async_adapter_answers_like_the_sync_methods():
    feed = SimulatedFeed(clock=lambda: AT)
    assert await feed.ready()
    assert await feed.get_quote("META") == feed.quote("META", AT)
    assert await feed.get_bars("META", Timeframe.MINUTE_15, 10) == feed.bars(
        "META", Timeframe.MINUTE_15, 10, AT
    )
    assert await feed.get_price_series("META", 30) == feed.price_series("META", 30, AT)
    with pytest.raises(SymbolNotFoundError):
        await feed.get_quote("NOPE")


async def test_a_scripted_feed_returns_the_quote_it_was_given_until_it_moves():
    feed = ScriptedFeed(clock=lambda: AT)
    feed.set_quote("AAPL", Decimal("100.00"), Decimal("100.02"), bid_size=300, ask_size=500)
    quote = await feed.get_quote("AAPL")
    assert (quote.bid, quote.ask) == (Decimal("100.00"), Decimal("100.02"))
    assert (quote.bid_size, quote.ask_size) == (Decimal(300), Decimal(500))
    assert quote.last == Decimal("100.01") and quote.timestamp == AT
    feed.set_quote("AAPL", "101.50", "101.51", last="101.51")
    assert (await feed.get_quote("AAPL")).bid == Decimal("101.50")
    assert feed.symbols() == ["AAPL"]


async def test_a_scripted_feed_knows_only_the_symbols_it_was_given():
    feed = ScriptedFeed()
    feed.set_quote("AAPL", 100, 101)
    with pytest.raises(SymbolNotFoundError):
        await feed.get_quote("MSFT")
    with pytest.raises(SymbolNotFoundError):
        await feed.get_bars("MSFT", Timeframe.DAY_1, 5)
    with pytest.raises(SymbolNotFoundError):
        await feed.get_price_series("MSFT", 5)


def test_a_scripted_feed_refuses_a_crossed_quote():
    with pytest.raises(ValidationError):
        ScriptedFeed().set_quote("AAPL", Decimal("101"), Decimal("100"))


async def test_a_scripted_feed_serves_the_bars_and_closes_it_was_given():
    feed = ScriptedFeed()
    bars = [
        Bar(
            symbol="SPY",
            timeframe=Timeframe.DAY_1,
            start=AT + timedelta(days=d),
            open=Decimal(100 + d),
            high=Decimal(102 + d),
            low=Decimal(99 + d),
            close=Decimal(101 + d),
            volume=Decimal(1000),
        )
        for d in range(5)
    ]
    feed.set_bars("SPY", list(reversed(bars)))
    feed.set_price_series("SPY", ["100", "101", "102"])
    assert await feed.get_bars("SPY", Timeframe.DAY_1, 2) == bars[-2:]
    assert await feed.get_bars("SPY", Timeframe.DAY_1, 10, end=AT + timedelta(days=1)) == bars[:2]
    assert await feed.get_bars("SPY", Timeframe.MINUTE_1, 10) == []
    assert await feed.get_price_series("SPY", 2) == [Decimal("101"), Decimal("102")]
