"""The paper venue's matching rules (activities/venue/matching.py): pure functions of an
order, a quote and the clock, tested without a database or Temporal.

Unless a test says otherwise: a working DAY market buy of 500 AAPL, an open market, a quote
of 99.99 x 100.00 with 1000 shares displayed on each side and the last trade at 100.00, a
1-second quote refresh and 5 bps of slippage for an order taking the whole displayed size.
"""

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.venue.matching import (
    Match,
    VenueOrder,
    decide,
    quote_bucket,
    slipped_price,
    stop_hit,
)
from contracts.payloads import BrokerEventType
from domain.market import Quote
from domain.orders import OrderSide, OrderType, TimeInForce

D = Decimal

T0 = datetime(2024, 3, 4, 15, 0, 0, tzinfo=UTC)  # on a whole second: the start of a bucket
NOW = T0 + timedelta(seconds=5)
REFRESH = timedelta(seconds=1)
BPS = D("5")


def venue_order(**changes: Any) -> VenueOrder:
    """A working order built from a dict row, as `venue_orders` would hand it over."""
    row: dict[str, Any] = {
        "client_order_id": "client-1",
        "broker_order_id": "broker-1",
        "symbol": "AAPL",
        "side": "buy",
        "order_type": "market",
        "time_in_force": "day",
        "quantity": D("500"),
        "limit_price": None,
        "stop_price": None,
        "status": "new",
        "filled_quantity": D("0"),
        "filled_notional": D("0"),
        "triggered": False,
        "created_at": T0 - timedelta(seconds=10),
        "expires_at": None,
        "last_quote_at": None,
        "reason": None,
        "fills": 0,
    }
    unknown = set(changes) - set(row)
    assert not unknown, f"not a venue_orders column: {unknown}"
    row.update(changes)
    return VenueOrder.from_row(row)


def quote(
    bid: str = "99.99",
    ask: str = "100.00",
    *,
    bid_size: str = "1000",
    ask_size: str = "1000",
    last: str = "100.00",
    at: datetime = T0,
) -> Quote:
    return Quote(
        symbol="AAPL",
        bid=D(bid),
        ask=D(ask),
        bid_size=D(bid_size),
        ask_size=D(ask_size),
        last=D(last),
        timestamp=at,
    )


def run(
    order: VenueOrder,
    q: Quote | None,
    *,
    now: datetime = NOW,
    market_open: bool = True,
    bps: Decimal = BPS,
) -> Match:
    return decide(order, q, now, market_open, REFRESH, bps)


# -- rows ----------------------------------------------------------------------------------


def test_a_venue_order_is_read_from_any_mapping_with_its_enums_parsed() -> None:
    order = venue_order(side="sell", order_type="stop_limit", time_in_force="gtc")

    assert order.side is OrderSide.SELL
    assert order.order_type is OrderType.STOP_LIMIT
    assert order.time_in_force is TimeInForce.GTC


def test_the_remaining_quantity_is_the_quantity_less_what_has_been_filled() -> None:
    assert venue_order(quantity=D("500"), filled_quantity=D("120")).remaining == D("380")


@pytest.mark.parametrize(
    ("time_in_force", "one_pass"),
    [("day", False), ("gtc", False), ("ioc", True), ("fok", True)],
)
def test_only_ioc_and_fok_orders_are_one_pass_orders(time_in_force: str, one_pass: bool) -> None:
    assert venue_order(time_in_force=time_in_force).one_pass is one_pass


# -- market orders and slippage ------------------------------------------------------------


def test_a_market_buy_fills_at_the_ask_plus_slippage_rounded_up() -> None:
    # 100.00 + 100.00 x 5 / 10000 x 500 / 1000 = 100.025: a half cent, rounded against the buyer
    match = run(venue_order(quantity=D("500")), quote())

    assert match.quantity == D("500")
    assert match.price == D("100.03")
    assert match.quote_at == T0
    assert match.close is None
    assert match.reason is None
    assert match.triggered is False


def test_a_market_sell_fills_at_the_bid_less_slippage_rounded_down() -> None:
    # 100.00 - 100.00 x 5 / 10000 x 500 / 1000 = 99.975: a half cent, rounded against the seller
    match = run(venue_order(side="sell", quantity=D("500")), quote(bid="100.00", ask="100.01"))

    assert match.quantity == D("500")
    assert match.price == D("99.97")
    assert match.quote_at == T0


def test_a_market_buy_takes_at_most_the_displayed_ask_size() -> None:
    # all 1000 displayed: 100.00 + 100.00 x 5 / 10000 x 1000 / 1000 = 100.05
    match = run(venue_order(quantity=D("1500")), quote(ask_size="1000", bid_size="5000"))

    assert match.quantity == D("1000")
    assert match.price == D("100.05")
    assert match.close is None  # a DAY order rests for the other 500


def test_a_market_sell_takes_at_most_the_displayed_bid_size() -> None:
    match = run(venue_order(side="sell", quantity=D("900")), quote(bid_size="300", ask_size="5000"))

    assert match.quantity == D("300")
    # all 300 displayed: 99.99 - 99.99 x 5 / 10000 = 99.940005, to the nearest cent
    assert match.price == D("99.94")


def test_a_market_order_fills_nothing_when_nothing_is_displayed() -> None:
    match = run(venue_order(), quote(ask_size="0"))

    assert match == Match(triggered=False)
    assert not match.changes(venue_order())


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("200", "100.01"),  # 100.00 x 5 / 10000 x 0.2 = 0.010: exactly one cent
        ("500", "100.03"),  # 0.025: half a cent, rounded up against the buyer
        ("800", "100.04"),  # 0.040
        ("1000", "100.05"),  # 0.050: the whole displayed size moves the price the full 5 bps
    ],
)
def test_a_buys_slippage_grows_with_its_share_of_the_displayed_size(
    quantity: str, expected: str
) -> None:
    price = slipped_price(D("100.00"), OrderSide.BUY, D(quantity), D("1000"), BPS)

    assert price == D(expected)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("200", "99.99"),  # 100.00 - 0.010
        ("500", "99.97"),  # 99.975: half a cent, rounded down against the seller
        ("800", "99.96"),  # 99.960
        ("1000", "99.95"),  # 99.950
    ],
)
def test_a_sells_slippage_grows_with_its_share_of_the_displayed_size(
    quantity: str, expected: str
) -> None:
    price = slipped_price(D("100.00"), OrderSide.SELL, D(quantity), D("1000"), BPS)

    assert price == D(expected)


def test_slippage_rounds_to_the_nearest_cent_and_a_half_cent_against_the_taker() -> None:
    # 100.00 x 5 / 10000 x 300 / 1000 = 0.015 -> 100.015 (half: up); 700: 0.035 -> 100.035 (up)
    # 100.00 x 7 / 10000 x 100 / 1000 = 0.007 -> 100.007 -> nearest cent 100.01
    # 100.00 x 3 / 10000 x 100 / 1000 = 0.003 -> 100.003 -> nearest cent 100.00
    assert slipped_price(D("100.00"), OrderSide.BUY, D("300"), D("1000"), BPS) == D("100.02")
    assert slipped_price(D("100.00"), OrderSide.BUY, D("700"), D("1000"), BPS) == D("100.04")
    assert slipped_price(D("100.00"), OrderSide.BUY, D("100"), D("1000"), D("7")) == D("100.01")
    assert slipped_price(D("100.00"), OrderSide.BUY, D("100"), D("1000"), D("3")) == D("100.00")
    assert slipped_price(D("100.00"), OrderSide.SELL, D("100"), D("1000"), D("3")) == D("100.00")
    assert slipped_price(D("100.00"), OrderSide.SELL, D("100"), D("1000"), D("7")) == D("99.99")


def test_an_order_small_against_the_displayed_size_trades_at_the_touch() -> None:
    # 100.00 x 5 / 10000 x 10 / 1000 = 0.0005: a twentieth of a cent, rounded away
    assert slipped_price(D("100.00"), OrderSide.BUY, D("10"), D("1000"), BPS) == D("100.00")
    assert slipped_price(D("100.00"), OrderSide.SELL, D("10"), D("1000"), BPS) == D("100.00")


def test_zero_slippage_bps_fills_a_market_order_at_the_touch() -> None:
    match = run(venue_order(quantity=D("1000")), quote(), bps=D("0"))

    assert match.price == D("100.00")


def test_sub_dollar_slippage_is_rounded_to_the_hundredth_of_a_cent_tick() -> None:
    # 0.5000 x 5 / 10000 x 200 / 1000 = 0.00005: half a 0.0001 tick, against the taker
    assert slipped_price(D("0.5000"), OrderSide.BUY, D("200"), D("1000"), BPS) == D("0.5001")
    assert slipped_price(D("0.5000"), OrderSide.SELL, D("200"), D("1000"), BPS) == D("0.4999")
    # 0.5000 x 5 / 10000 x 500 / 1000 = 0.000125 -> 0.500125 -> nearest 0.0001 tick 0.5001
    assert slipped_price(D("0.5000"), OrderSide.BUY, D("500"), D("1000"), BPS) == D("0.5001")


def test_a_sell_that_slips_below_a_dollar_is_priced_on_the_sub_dollar_tick() -> None:
    # 1.00 - 1.00 x 5 / 10000 = 0.9995, which a cent tick would have rounded to 1.00 or 0.99
    assert slipped_price(D("1.00"), OrderSide.SELL, D("1000"), D("1000"), BPS) == D("0.9995")


def test_a_sub_dollar_market_buy_fills_on_the_sub_dollar_tick() -> None:
    match = run(venue_order(quantity=D("200")), quote(bid="0.4999", ask="0.5000", last="0.5000"))

    assert match.quantity == D("200")
    assert match.price == D("0.5001")


def test_a_callers_decimal_context_does_not_move_a_slipped_price() -> None:
    with localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = ROUND_DOWN
        price = slipped_price(D("100.00"), OrderSide.BUY, D("500"), D("1000"), BPS)

    assert price == D("100.03")


# -- limit orders --------------------------------------------------------------------------


def test_a_limit_buy_fills_at_the_ask_not_at_its_limit_when_the_ask_is_below_it() -> None:
    order = venue_order(order_type="limit", limit_price=D("100.50"), quantity=D("1000"))

    match = run(order, quote(ask="100.00"))

    assert match.quantity == D("1000")
    assert match.price == D("100.00")  # the whole displayed size, and still no slippage
    assert match.quote_at == T0


def test_a_limit_buy_fills_when_the_ask_equals_its_limit() -> None:
    order = venue_order(order_type="limit", limit_price=D("100.00"))

    match = run(order, quote(ask="100.00"))

    assert match.quantity == D("500")
    assert match.price == D("100.00")


def test_a_limit_buy_does_not_fill_while_the_ask_is_above_its_limit() -> None:
    order = venue_order(order_type="limit", limit_price=D("99.99"))

    match = run(order, quote(bid="99.98", ask="100.00"))

    assert match == Match(triggered=False)
    assert not match.changes(order)


def test_a_limit_sell_fills_at_the_bid_not_at_its_limit_when_the_bid_is_above_it() -> None:
    order = venue_order(side="sell", order_type="limit", limit_price=D("99.50"), quantity=D("800"))

    match = run(order, quote(bid="99.99", bid_size="1000"))

    assert match.quantity == D("800")
    assert match.price == D("99.99")


def test_a_limit_sell_fills_when_the_bid_equals_its_limit() -> None:
    order = venue_order(side="sell", order_type="limit", limit_price=D("99.99"))

    match = run(order, quote(bid="99.99"))

    assert match.quantity == D("500")
    assert match.price == D("99.99")


def test_a_limit_sell_does_not_fill_while_the_bid_is_below_its_limit() -> None:
    order = venue_order(side="sell", order_type="limit", limit_price=D("100.00"))

    match = run(order, quote(bid="99.99", ask="100.00"))

    assert match == Match(triggered=False)
    assert not match.changes(order)


def test_a_limit_order_takes_at_most_the_displayed_size() -> None:
    order = venue_order(order_type="limit", limit_price=D("101.00"), quantity=D("5000"))

    match = run(order, quote(ask_size="1200"))

    assert match.quantity == D("1200")
    assert match.price == D("100.00")


# -- stops ---------------------------------------------------------------------------------


def test_a_buy_stop_triggers_when_the_last_trade_reaches_the_stop() -> None:
    assert stop_hit(venue_order(order_type="stop", stop_price=D("101.00")), D("101.00"))
    assert stop_hit(venue_order(order_type="stop", stop_price=D("101.00")), D("101.01"))


def test_a_buy_stop_does_not_trigger_while_the_last_trade_is_below_the_stop() -> None:
    assert not stop_hit(venue_order(order_type="stop", stop_price=D("101.00")), D("100.99"))


def test_a_sell_stop_triggers_when_the_last_trade_falls_to_the_stop() -> None:
    order = venue_order(side="sell", order_type="stop", stop_price=D("99.00"))

    assert stop_hit(order, D("99.00"))
    assert stop_hit(order, D("98.99"))


def test_a_sell_stop_does_not_trigger_while_the_last_trade_is_above_the_stop() -> None:
    order = venue_order(side="sell", order_type="stop", stop_price=D("99.00"))

    assert not stop_hit(order, D("99.01"))


def test_an_untriggered_buy_stop_changes_nothing_even_if_the_ask_is_above_the_stop() -> None:
    # the trigger is the last trade, not the quote
    order = venue_order(order_type="stop", stop_price=D("100.00"))

    match = run(order, quote(bid="100.00", ask="100.10", last="99.99"))

    assert match == Match(triggered=False)
    assert not match.changes(order)


def test_a_triggered_buy_stop_fills_at_once_at_the_ask_with_slippage() -> None:
    order = venue_order(order_type="stop", stop_price=D("101.00"), quantity=D("500"))

    match = run(order, quote(bid="101.00", ask="101.02", last="101.00"))

    # 101.02 + 101.02 x 5 / 10000 x 500 / 1000 = 101.045255 -> nearest cent 101.05
    assert match.triggered is True
    assert match.quantity == D("500")
    assert match.price == D("101.05")
    assert match.quote_at == T0


def test_a_triggered_sell_stop_fills_at_the_bid_with_slippage() -> None:
    order = venue_order(side="sell", order_type="stop", stop_price=D("99.00"), quantity=D("1000"))

    match = run(order, quote(bid="98.90", ask="98.92", last="98.95"))

    # 98.90 - 98.90 x 5 / 10000 = 98.85055 -> nearest cent 98.85
    assert match.triggered is True
    assert match.quantity == D("1000")
    assert match.price == D("98.85")


def test_a_stop_triggered_on_an_earlier_pass_fills_after_the_last_trade_comes_back() -> None:
    order = venue_order(order_type="stop", stop_price=D("101.00"), triggered=True)

    match = run(order, quote(last="100.00"))

    assert match.triggered is True
    assert match.quantity == D("500")
    assert match.price == D("100.03")


def test_a_stop_limit_triggers_and_keeps_the_trigger_when_its_limit_is_not_marketable() -> None:
    order = venue_order(order_type="stop_limit", stop_price=D("101.00"), limit_price=D("101.50"))

    match = run(order, quote(bid="101.55", ask="101.60", last="101.00"))

    assert match == Match(triggered=True)
    assert match.changes(order)  # the trigger itself is written to the row


def test_a_triggered_stop_limit_rests_as_a_limit_after_the_price_comes_back() -> None:
    order = venue_order(
        order_type="stop_limit", stop_price=D("101.00"), limit_price=D("101.50"), triggered=True
    )

    match = run(order, quote(bid="101.38", ask="101.40", last="100.50"))

    assert match.triggered is True
    assert match.quantity == D("500")
    assert match.price == D("101.40")  # the touch, no slippage


def test_a_triggered_stop_limit_still_waits_while_its_limit_is_not_marketable() -> None:
    order = venue_order(
        order_type="stop_limit", stop_price=D("101.00"), limit_price=D("101.50"), triggered=True
    )

    match = run(order, quote(bid="101.55", ask="101.60", last="100.50"))

    assert match == Match(triggered=True)
    assert not match.changes(order)


def test_an_untriggered_stop_limit_does_not_fill_though_its_limit_is_marketable() -> None:
    order = venue_order(order_type="stop_limit", stop_price=D("101.00"), limit_price=D("101.50"))

    match = run(order, quote(bid="100.48", ask="100.50", last="100.50"))

    assert match == Match(triggered=False)


def test_a_sell_stop_limit_triggers_and_fills_at_the_bid_in_the_same_pass() -> None:
    order = venue_order(
        side="sell", order_type="stop_limit", stop_price=D("99.00"), limit_price=D("98.50")
    )

    match = run(order, quote(bid="98.80", ask="98.85", last="98.90"))

    assert match.triggered is True
    assert match.quantity == D("500")
    assert match.price == D("98.80")


# -- one fill per quote bucket -------------------------------------------------------------


def test_an_order_never_fills_twice_on_the_same_quote_bucket() -> None:
    order = venue_order(quantity=D("1500"), filled_quantity=D("1000"), last_quote_at=T0)

    match = run(order, quote(at=T0 + timedelta(milliseconds=700)))

    assert match == Match(triggered=False)
    assert not match.changes(order)


def test_an_order_fills_again_on_a_later_quote_bucket() -> None:
    order = venue_order(quantity=D("1500"), filled_quantity=D("1000"), last_quote_at=T0)

    match = run(order, quote(at=T0 + timedelta(seconds=1, milliseconds=200)))

    assert match.quantity == D("500")
    assert match.quote_at == T0 + timedelta(seconds=1)  # the bucket, not the quote's instant


def test_a_large_order_fills_across_quote_updates_one_displayed_size_at_a_time() -> None:
    order = venue_order(quantity=D("2500"))
    filled = D(0)
    fills = []
    for second in range(4):
        at = T0 + timedelta(seconds=second, milliseconds=300)
        for q in (quote(at=at), quote(at=at + timedelta(milliseconds=500))):  # two per bucket
            match = run(order, q, now=at + timedelta(seconds=1))
            if match.quantity:
                filled += match.quantity
                fills.append((match.quantity, match.quote_at))
                order = venue_order(
                    quantity=D("2500"), filled_quantity=filled, last_quote_at=match.quote_at
                )

    assert fills == [
        (D("1000"), T0),
        (D("1000"), T0 + timedelta(seconds=1)),
        (D("500"), T0 + timedelta(seconds=2)),
    ]


def test_a_limit_order_does_not_fill_twice_on_the_same_quote_bucket_either() -> None:
    order = venue_order(
        order_type="limit",
        limit_price=D("101.00"),
        quantity=D("1500"),
        filled_quantity=D("1000"),
        last_quote_at=T0,
    )

    assert run(order, quote(at=T0)) == Match(triggered=False)


# -- IOC and FOK ---------------------------------------------------------------------------


def test_an_ioc_order_fills_what_is_displayed_and_cancels_the_rest() -> None:
    order = venue_order(time_in_force="ioc", quantity=D("1500"))

    match = run(order, quote(ask_size="1000"))

    assert match.quantity == D("1000")
    assert match.price == D("100.05")
    assert match.close is BrokerEventType.CANCELED
    assert match.reason == "IOC: unfilled quantity canceled"


def test_an_ioc_order_that_fills_completely_is_not_canceled() -> None:
    order = venue_order(time_in_force="ioc", quantity=D("500"))

    match = run(order, quote())

    assert match.quantity == D("500")
    assert match.close is None
    assert match.reason is None


def test_an_ioc_limit_that_is_not_marketable_is_canceled_with_nothing_filled() -> None:
    order = venue_order(order_type="limit", limit_price=D("99.00"), time_in_force="ioc")

    match = run(order, quote())

    assert match.quantity == D("0")
    assert match.price is None
    assert match.close is BrokerEventType.CANCELED
    assert match.reason == "IOC: unfilled quantity canceled"


def test_an_ioc_stop_that_is_not_triggered_is_canceled() -> None:
    order = venue_order(order_type="stop", stop_price=D("105.00"), time_in_force="ioc")

    match = run(order, quote())

    assert match.triggered is False
    assert match.quantity == D("0")
    assert match.close is BrokerEventType.CANCELED


def test_a_fok_order_that_can_fill_completely_fills_and_is_not_canceled() -> None:
    order = venue_order(time_in_force="fok", quantity=D("1000"))

    match = run(order, quote(ask_size="1000"))

    assert match.quantity == D("1000")
    assert match.price == D("100.05")
    assert match.close is None


def test_a_fok_order_larger_than_the_displayed_size_is_canceled_with_nothing_filled() -> None:
    order = venue_order(time_in_force="fok", quantity=D("1001"))

    match = run(order, quote(ask_size="1000"))

    assert match == Match(
        triggered=False,
        quantity=D("0"),
        price=None,
        quote_at=None,
        close=BrokerEventType.CANCELED,
        reason="FOK: not fillable in full at once",
    )


def test_a_fok_sell_with_nothing_displayed_is_canceled() -> None:
    order = venue_order(side="sell", time_in_force="fok")

    match = run(order, quote(bid_size="0"))

    assert match.quantity == D("0")
    assert match.close is BrokerEventType.CANCELED
    assert match.reason == "FOK: not fillable in full at once"


# -- closed market, missing quote ----------------------------------------------------------


@pytest.mark.parametrize("time_in_force", ["day", "gtc"])
def test_a_resting_order_does_nothing_while_the_market_is_closed(time_in_force: str) -> None:
    order = venue_order(time_in_force=time_in_force)

    match = run(order, quote(), market_open=False)

    assert match == Match(triggered=False)
    assert not match.changes(order)


@pytest.mark.parametrize("time_in_force", ["day", "gtc"])
def test_a_resting_order_does_nothing_without_a_quote(time_in_force: str) -> None:
    order = venue_order(time_in_force=time_in_force)

    match = run(order, None)

    assert match == Match(triggered=False)
    assert not match.changes(order)


def test_a_triggered_stop_keeps_its_trigger_while_the_market_is_closed() -> None:
    order = venue_order(order_type="stop", stop_price=D("101.00"), triggered=True)

    match = run(order, None, market_open=False)

    assert match == Match(triggered=True)
    assert not match.changes(order)


@pytest.mark.parametrize("time_in_force", ["ioc", "fok"])
def test_a_one_pass_order_is_canceled_when_the_market_is_closed(time_in_force: str) -> None:
    match = run(venue_order(time_in_force=time_in_force), quote(), market_open=False)

    assert match.quantity == D("0")
    assert match.close is BrokerEventType.CANCELED
    assert match.reason == "market closed"


@pytest.mark.parametrize("time_in_force", ["ioc", "fok"])
def test_a_one_pass_order_is_canceled_when_there_is_no_quote(time_in_force: str) -> None:
    match = run(venue_order(time_in_force=time_in_force), None)

    assert match.quantity == D("0")
    assert match.close is BrokerEventType.CANCELED
    assert match.reason == "no quote for AAPL"


def test_a_closed_market_is_the_reason_given_when_there_is_no_quote_either() -> None:
    match = run(venue_order(time_in_force="ioc"), None, market_open=False)

    assert match.reason == "market closed"


# -- expiry --------------------------------------------------------------------------------


def test_an_order_expires_at_its_expiry_before_any_matching() -> None:
    order = venue_order(expires_at=NOW)

    match = run(order, quote(), now=NOW)  # marketable, and yet

    assert match == Match(
        triggered=False, close=BrokerEventType.EXPIRED, reason="expired at the close"
    )
    assert match.changes(order)


def test_an_order_past_its_expiry_expires_while_the_market_is_closed() -> None:
    order = venue_order(expires_at=NOW - timedelta(hours=1))

    match = run(order, None, now=NOW, market_open=False)

    assert match.close is BrokerEventType.EXPIRED
    assert match.reason == "expired at the close"
    assert match.quantity == D("0")


def test_an_order_just_before_its_expiry_still_fills() -> None:
    order = venue_order(expires_at=NOW + timedelta(microseconds=1))

    match = run(order, quote(), now=NOW)

    assert match.quantity == D("500")
    assert match.close is None


def test_an_expired_one_pass_order_is_expired_not_canceled() -> None:
    match = run(venue_order(time_in_force="ioc", expires_at=NOW), None, now=NOW, market_open=False)

    assert match.close is BrokerEventType.EXPIRED


def test_an_expiring_stop_keeps_its_trigger_unchanged() -> None:
    order = venue_order(order_type="stop", stop_price=D("101.00"), triggered=True, expires_at=NOW)

    match = run(order, quote(last="102.00"), now=NOW)

    assert match.triggered is True
    assert match.quantity == D("0")
    assert match.close is BrokerEventType.EXPIRED


# -- Match.changes -------------------------------------------------------------------------


def test_a_match_changes_nothing_when_it_neither_triggers_fills_nor_closes() -> None:
    assert not Match(triggered=False).changes(venue_order(triggered=False))
    assert not Match(triggered=True).changes(venue_order(triggered=True))


def test_a_match_changes_the_order_when_it_triggers_fills_or_closes() -> None:
    order = venue_order()

    assert Match(triggered=True).changes(order)
    assert Match(triggered=False, quantity=D("1"), price=D("100.00"), quote_at=T0).changes(order)
    assert Match(triggered=False, close=BrokerEventType.CANCELED).changes(order)
    assert Match(triggered=False, close=BrokerEventType.EXPIRED).changes(order)


# -- quote buckets -------------------------------------------------------------------------


def test_a_quote_bucket_floors_the_time_to_the_refresh_window() -> None:
    assert quote_bucket(T0 + timedelta(milliseconds=1700), REFRESH) == T0 + timedelta(seconds=1)
    assert quote_bucket(T0 + timedelta(microseconds=999_999), REFRESH) == T0


def test_a_time_on_a_window_boundary_is_its_own_bucket() -> None:
    assert quote_bucket(T0, REFRESH) == T0
    assert quote_bucket(T0 + timedelta(seconds=3), REFRESH) == T0 + timedelta(seconds=3)


def test_a_quote_bucket_follows_the_refresh_length() -> None:
    at = T0 + timedelta(milliseconds=600)

    assert quote_bucket(at, timedelta(milliseconds=250)) == T0 + timedelta(milliseconds=500)
    assert quote_bucket(T0 + timedelta(seconds=7), timedelta(seconds=5)) == T0 + timedelta(
        seconds=5
    )


def test_a_quote_bucket_is_the_same_instant_whatever_the_time_zone() -> None:
    new_york = timezone(timedelta(hours=-5))
    at = (T0 + timedelta(milliseconds=1500)).astimezone(new_york)

    assert quote_bucket(at, REFRESH) == T0 + timedelta(seconds=1)


def test_a_quote_bucket_before_1970_still_floors_down() -> None:
    at = datetime(1969, 12, 31, 23, 59, 59, 250_000, tzinfo=UTC)

    assert quote_bucket(at, REFRESH) == datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)


# -- properties ----------------------------------------------------------------------------

# Prices on the tick grid: cents at or above a dollar, hundredths of a cent below.
dollar_prices = st.integers(min_value=100, max_value=1_000_000).map(lambda c: D(c).scaleb(-2))
sub_dollar_prices = st.integers(min_value=1, max_value=9_999).map(lambda n: D(n).scaleb(-4))
prices = st.one_of(dollar_prices, sub_dollar_prices)
sizes = st.integers(min_value=0, max_value=20_000).map(D)


@st.composite
def orders_and_quotes(draw: st.DrawFn) -> tuple[VenueOrder, Quote, Decimal]:
    bid, ask = sorted((draw(prices), draw(prices)))
    quantity = draw(st.integers(min_value=1, max_value=50_000))
    filled = draw(st.integers(min_value=0, max_value=quantity - 1))
    order_type = draw(st.sampled_from(["market", "limit"]))
    order = venue_order(
        side=draw(st.sampled_from(["buy", "sell"])),
        order_type=order_type,
        time_in_force=draw(st.sampled_from(["day", "gtc", "ioc", "fok"])),
        quantity=D(quantity),
        filled_quantity=D(filled),
        limit_price=draw(prices) if order_type == "limit" else None,
    )
    q = Quote(
        symbol="AAPL",
        bid=bid,
        ask=ask,
        bid_size=draw(sizes),
        ask_size=draw(sizes),
        last=draw(prices),
        timestamp=T0,
    )
    bps = D(draw(st.integers(min_value=0, max_value=500)))
    return order, q, bps


@settings(max_examples=500, deadline=None)
@given(orders_and_quotes())
def test_a_fill_never_exceeds_the_remaining_or_the_displayed_size_nor_beats_the_touch(
    case: tuple[VenueOrder, Quote, Decimal],
) -> None:
    order, q, bps = case
    displayed = q.displayed_size(order.side)

    match = run(order, q, bps=bps)

    assert D(0) <= match.quantity <= min(order.remaining, displayed)
    if match.quantity == 0:
        assert match.price is None
        assert match.quote_at is None
        return
    assert match.price is not None
    assert match.quote_at == T0
    if order.side is OrderSide.BUY:
        assert match.price >= q.ask
    else:
        assert match.price <= q.bid
    if order.limit_price is not None:
        assert match.price == q.far_touch(order.side)  # the touch, no slippage
        if order.side is OrderSide.BUY:
            assert match.price <= order.limit_price
        else:
            assert match.price >= order.limit_price


@settings(max_examples=500, deadline=None)
@given(
    touch=prices,
    side=st.sampled_from(list(OrderSide)),
    displayed=st.integers(min_value=1, max_value=20_000).map(D),
    share=st.integers(min_value=1, max_value=1000),
    bps=st.integers(min_value=0, max_value=500).map(D),
)
def test_a_slipped_price_is_on_the_tick_and_never_better_than_the_touch(
    touch: Decimal, side: OrderSide, displayed: Decimal, share: int, bps: Decimal
) -> None:
    quantity = max(D(1), (displayed * share / 1000).to_integral_value())
    quantity = min(quantity, displayed)

    price = slipped_price(touch, side, quantity, displayed, bps)

    tick = D("0.01") if price >= 1 else D("0.0001")
    assert price % tick == 0
    assert price > 0
    if side is OrderSide.BUY:
        assert price >= touch
    else:
        assert price <= touch
    # never moved by more than the full bps plus the rounding tick
    assert abs(price - touch) <= touch * bps / 10_000 + tick
