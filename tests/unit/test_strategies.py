"""Pure strategies, sizing, the CSV reader, the replay fill rules and the strategy loader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from activities.backtest.data import BacktestInputError, read_csv
from activities.backtest.replay import fill_price
from bootstrap.strategies import StrategyError, load_strategy
from domain.errors import ValidationError
from domain.market import Bar, Timeframe
from domain.orders import OrderSide, OrderType
from domain.strategies import (
    Breakout,
    Exposure,
    SmaCrossover,
    StrategyState,
    Target,
    build,
    closing_order,
    opening_order,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def bars_from_closes(closes: list[str], symbol: str = "TEST") -> list[Bar]:
    out = []
    for i, close in enumerate(closes):
        c = Decimal(close)
        out.append(
            Bar(symbol, Timeframe.DAY_1, T0 + timedelta(days=i), c, c + 1, c - 1, c, Decimal(100))
        )
    return out


def state(bars: list[Bar], position: str = "0") -> StrategyState:
    return StrategyState("TEST", bars, Decimal(position), Decimal(1000), Decimal(1000))


# -- sma_crossover -------------------------------------------------------------------------


def test_sma_crossover_goes_long_on_the_bar_the_fast_average_crosses_above():
    strategy = SmaCrossover(fast=2, slow=3)
    # closes 10, 9, 8, 7: fast below slow; then 12: fast (9.5) > slow (9) -> cross up
    bars = bars_from_closes(["10", "9", "8", "7", "12"])
    assert strategy.decide(state(bars[:4])) is None  # falling: no cross
    target = strategy.decide(state(bars))
    assert target is not None and target.exposure is Exposure.LONG
    assert "crossed above" in target.reason


def test_sma_crossover_goes_short_or_flat_on_the_cross_below():
    bars = bars_from_closes(["7", "8", "9", "10", "5"])
    short = SmaCrossover(fast=2, slow=3).decide(state(bars, "10"))
    flat = SmaCrossover(fast=2, slow=3, allow_short=False).decide(state(bars, "10"))
    assert short is not None and short.exposure is Exposure.SHORT
    assert flat is not None and flat.exposure is Exposure.FLAT


def test_sma_crossover_needs_a_strict_cross_and_enough_bars():
    strategy = SmaCrossover(fast=2, slow=3)
    assert strategy.history == 4
    assert strategy.decide(state(bars_from_closes(["10", "9", "12"]))) is None  # too few
    # the averages touch (equal) on the previous bar: not a cross
    assert strategy.decide(state(bars_from_closes(["5", "5", "5", "5", "9"]))) is None


def test_sma_crossover_params_are_checked():
    assert build("sma_crossover", {"fast": "5", "slow": "20"}) == SmaCrossover(5, 20, True)
    assert build("sma_crossover", {"allow_short": "false"}) == SmaCrossover(10, 30, False)
    with pytest.raises(ValidationError, match="no parameter 'slwo'"):
        build("sma_crossover", {"slwo": "20"})
    with pytest.raises(ValidationError, match="bad value for fast"):
        build("sma_crossover", {"fast": "x"})
    with pytest.raises(ValidationError, match="must be below"):
        build("sma_crossover", {"fast": "30", "slow": "10"})


# -- breakout ------------------------------------------------------------------------------


def test_breakout_enters_above_the_channel_and_exits_below_it():
    strategy = Breakout(lookback=3)
    flat_then_up = bars_from_closes(["10", "10", "10", "13"])  # channel high 11, close 13
    up = strategy.decide(state(flat_then_up))
    assert up is not None and up.exposure is Exposure.LONG
    assert strategy.decide(state(flat_then_up, "5")) is None  # already long: hold
    down = bars_from_closes(["10", "10", "10", "7"])  # channel low 9, close 7
    exit_long = strategy.decide(state(down, "5"))
    assert exit_long is not None and exit_long.exposure is Exposure.FLAT
    assert strategy.decide(state(down, "0")) is None  # flat and no shorts: nothing to do
    short = Breakout(lookback=3, allow_short=True).decide(state(down, "0"))
    assert short is not None and short.exposure is Exposure.SHORT


# -- sizing --------------------------------------------------------------------------------


def pct(rate: str):
    return lambda side, qty, price: qty * price * Decimal(rate)


def test_closing_comes_first_and_only_when_the_position_points_the_wrong_way():
    long = Target(Exposure.LONG, "r")
    assert closing_order(long, Decimal(0)) is None
    assert closing_order(long, Decimal(5)) is None
    cover = closing_order(long, Decimal(-7))
    assert cover is not None and (cover.side, cover.quantity) == (OrderSide.BUY, Decimal(7))
    flat = closing_order(Target(Exposure.FLAT, "r"), Decimal(4))
    assert flat is not None and (flat.side, flat.quantity) == (OrderSide.SELL, Decimal(4))


def test_opening_buys_the_most_whole_shares_the_equity_pays_with_commission():
    # 10000 / (100 * 1.002) = 99.8 -> 99 shares; 99 * 100 + 19.80 <= 10000
    planned = opening_order(
        Target(Exposure.LONG, "r"), Decimal(0), Decimal(10000), Decimal(100), pct("0.002")
    )
    assert planned is not None and planned.quantity == Decimal(99) and planned.side is OrderSide.BUY
    exact = opening_order(
        Target(Exposure.SHORT, "r"), Decimal(0), Decimal(10000), Decimal(100), pct("0")
    )
    assert exact is not None and exact.quantity == Decimal(100) and exact.side is OrderSide.SELL
    minimum = opening_order(  # a $5 minimum commission costs one share at 10000 / 100
        Target(Exposure.LONG, "r"),
        Decimal(0),
        Decimal(10000),
        Decimal(100),
        lambda s, q, p: Decimal(5),
    )
    assert minimum is not None and minimum.quantity == Decimal(99)
    assert (
        opening_order(Target(Exposure.LONG, "r"), Decimal(0), Decimal(50), Decimal(100), pct("0"))
        is None
    )
    assert (
        opening_order(
            Target(Exposure.LONG, "r"), Decimal(3), Decimal(10000), Decimal(100), pct("0")
        )
        is None
    )


# -- replay fills ----------------------------------------------------------------------------


BAR = Bar(
    "TEST", Timeframe.DAY_1, T0, Decimal(100), Decimal(110), Decimal(95), Decimal(105), Decimal(1)
)


@pytest.mark.parametrize(
    ("order_type", "side", "limit", "stop", "expected"),
    [
        (OrderType.MARKET, OrderSide.BUY, None, None, "100"),
        (OrderType.LIMIT, OrderSide.BUY, "97", None, "97"),  # reached intrabar
        (OrderType.LIMIT, OrderSide.BUY, "101", None, "100"),  # opens through it
        (OrderType.LIMIT, OrderSide.BUY, "94", None, None),  # never reached
        (OrderType.LIMIT, OrderSide.SELL, "108", None, "108"),
        (OrderType.LIMIT, OrderSide.SELL, "99", None, "100"),
        (OrderType.STOP, OrderSide.BUY, None, "108", "108"),
        (OrderType.STOP, OrderSide.BUY, None, "98", "100"),  # gapped through: the open
        (OrderType.STOP, OrderSide.BUY, None, "111", None),
        (OrderType.STOP, OrderSide.SELL, None, "96", "96"),
        (OrderType.STOP, OrderSide.SELL, None, "102", "100"),
        (OrderType.STOP_LIMIT, OrderSide.BUY, "109", "108", "108"),
        (OrderType.STOP_LIMIT, OrderSide.BUY, "107", "108", "107"),
    ],
)
def test_fill_price_against_the_next_bar(order_type, side, limit, stop, expected):
    price = fill_price(
        order_type,
        side,
        BAR,
        None if limit is None else Decimal(limit),
        None if stop is None else Decimal(stop),
    )
    assert price == (None if expected is None else Decimal(expected))
    if order_type is OrderType.MARKET:
        assert fill_price(order_type, side, BAR, None, None, "close") == Decimal(105)


# -- CSV -------------------------------------------------------------------------------------


GOOD = (
    "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n2024-01-03,10.5,12,10,11,200\n"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_csv_reads_yahoo_format_case_insensitive_and_pandas_index(tmp_path):
    bars = read_csv(write(tmp_path, GOOD), "ABC")
    assert [b.close for b in bars] == [Decimal("10.5"), Decimal(11)]
    assert bars[0].start == datetime(2024, 1, 2, tzinfo=UTC)
    lower = read_csv(write(tmp_path, GOOD.replace("Date,Open", "timestamp,open")), "ABC")
    assert len(lower) == 2
    pandas = read_csv(write(tmp_path, GOOD.replace("Date,", ",")), "ABC")
    assert len(pandas) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Date,Open,High,Low,Volume\n2024-01-02,1,1,1,1\n", "missing column(s): Close"),
        ("Open,High,Low,Close,Volume\n1,1,1,1,1\n", "Date or Timestamp"),
        (GOOD + "2024-01-01,1,1,1,1,1\n", ":4: out of order date 2024-01-01"),
        (GOOD + "2024-01-03,1,1,1,1,1\n", ":4: duplicate date 2024-01-03"),
        (GOOD + "2024-01-04,1,x,1,1,1\n", ":4: High is not a number: 'x'"),
        (GOOD + "2024-01-04,1,1,1,NaN,1\n", ":4: Close is not a number"),
        (GOOD + "04/01/2024,1,1,1,1,1\n", ":4: not an ISO date"),
        ("Date,Open,High,Low,Close,Volume\n", "no rows"),
    ],
)
def test_csv_errors_are_one_line_naming_the_problem(tmp_path, text, message):
    with pytest.raises(BacktestInputError) as raised:
        read_csv(write(tmp_path, text), "ABC")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


# -- the loader ------------------------------------------------------------------------------


class Always:
    """A user strategy: always long."""

    name = "always"

    @classmethod
    def from_params(cls, params):
        if params:
            raise ValueError(f"no parameters, got {sorted(params)}")
        return cls()

    @property
    def history(self) -> int:
        return 1

    def decide(self, state):
        return Target(Exposure.LONG, "always long")


def test_loader_finds_builtins_and_importable_classes():
    assert isinstance(load_strategy("breakout", {"lookback": "5"}), Breakout)
    user = load_strategy(f"{__name__}:Always", {})
    assert isinstance(user, Always)
    assert build(f"{__name__}:Always", {}).decide(state(bars_from_closes(["5"]))) is not None


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown strategy 'nope'"),
        ("no_such_module:Thing", {}, "cannot import no_such_module"),
        (f"{__name__}:Missing", {}, "has no Missing"),
        (f"{__name__}:state", {}, "no from_params"),
        ("sma_crossover", {"speed": "1"}, "no parameter 'speed'"),
        (f"{__name__}:Always", {"x": "1"}, "no parameters"),
    ],
)
def test_loader_refuses_with_one_line(name, params, message):
    with pytest.raises(StrategyError, match=message):
        load_strategy(name, params)


# -- the replay venue ------------------------------------------------------------------------


async def test_the_replay_venue_fills_market_orders_now_and_resting_orders_as_bars_pass():
    from uuid import uuid4

    from activities.backtest.replay import BarReplay
    from contracts.payloads import OrderRequest
    from domain.commissions import PercentageOfNotional
    from domain.orders import OrderStatus, TimeInForce

    series = [
        Bar("TEST", Timeframe.DAY_1, T0, Decimal(100), Decimal(101), Decimal(99), Decimal(100), 1),
        Bar(
            "TEST",
            Timeframe.DAY_1,
            T0 + timedelta(days=1),
            *map(Decimal, ("100", "100", "96", "97")),
            1,
        ),
        Bar(
            "TEST",
            Timeframe.DAY_1,
            T0 + timedelta(days=2),
            *map(Decimal, ("94", "95", "93", "94")),
            1,
        ),
    ]
    delivered = []

    async def deliver(workflow_id, event):
        delivered.append((workflow_id, event.price))

    venue = BarReplay({"TEST": series}, PercentageOfNotional(Decimal("0.01")), deliver=deliver)

    def request(order_type, limit=None):
        return OrderRequest(
            order_id=uuid4(),
            portfolio_id=uuid4(),
            client_order_id="c",
            symbol="TEST",
            side=OrderSide.BUY,
            quantity=Decimal(10),
            order_type=order_type,
            time_in_force=TimeInForce.GTC,
            limit_price=limit,
        )

    market = request(OrderType.MARKET)
    await venue.submit(market)
    state = await venue.get_order(str(market.order_id))
    assert state.status is OrderStatus.FILLED and state.executions[0].price == Decimal(100)
    assert state.executions[0].commission == Decimal("10.00")  # 1 % of 1000
    assert (await venue.submit(market)).already_existed  # keyed by our order id

    limit = request(OrderType.LIMIT, Decimal("95"))
    await venue.submit(limit)  # bar 0: low 99, not reached
    assert (await venue.get_order(str(limit.order_id))).status is OrderStatus.SUBMITTED
    await venue.advance(2)  # bar 1: low 96, no; bar 2 opens at 94, through the limit
    filled = await venue.get_order(str(limit.order_id))
    assert filled.status is OrderStatus.FILLED and filled.executions[0].price == Decimal(94)
    assert filled.executions[0].timestamp == T0 + timedelta(days=2)
    assert [price for _, price in delivered] == [Decimal(100), Decimal(94)]
    await venue.advance(1)  # the clock never goes back
    assert venue.cursor == 2 and (await venue.get_quote("TEST")).ask == Decimal(94)
