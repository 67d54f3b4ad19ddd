"""Portfolio ledger, buying-power reservations, trading state and pre-trade risk checks."""

from decimal import Decimal as D

import pytest

from domain.errors import ErrorCode
from domain.orders import Fill, Order, OrderSide, OrderStatus, OrderType
from domain.portfolio import Portfolio, RiskLimits, TradingState
from domain.risk import accept_order, check_order, required_reservation

BUY, SELL = OrderSide.BUY, OrderSide.SELL
GENEROUS = RiskLimits(
    max_position_size=D("1000000"),
    max_order_notional=D("1000000"),
    max_concentration=D("1"),
    daily_loss_limit=D("1000000"),
)


def portfolio(cash: str = "100000", limits: RiskLimits = GENEROUS) -> Portfolio:
    return Portfolio(initial_capital=D(cash), limits=limits)


def order(symbol: str, qty: str, side: OrderSide, limit: str | None = None) -> Order:
    if limit is None:
        return Order(symbol=symbol, quantity=D(qty), side=side)
    return Order(
        symbol=symbol,
        quantity=D(qty),
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=D(limit),
    )


def accepted(p: Portfolio, o: Order, price: str) -> Order:
    o.portfolio_id = p.id
    decision = accept_order(p, o, D(price))
    assert decision.approved, decision.reason
    o.submit(f"b-{o.id}")
    return o


def test_a_buy_fill_moves_cash_into_the_position_and_consumes_the_reservation():
    p = portfolio()
    o = accepted(p, order("AAPL", "100", BUY, limit="150.00"), "149.90")
    assert p.reserved() == D("15000.00")
    assert p.buying_power() == D("85000.00")
    p.apply_fill(o, Fill("e1", D("100"), D("149.95"), D("1.00")))
    assert p.cash == D("100000") - D("14995.00") - D("1.00")
    assert p.positions["AAPL"].quantity == D("100")
    assert o.status is OrderStatus.FILLED
    assert p.reserved() == 0  # filled orders release what is left
    assert p.ledger_imbalance() == 0


def test_a_fill_applied_twice_changes_nothing_the_second_time():
    p = portfolio()
    o = accepted(p, order("AAPL", "10", BUY), "100")
    assert p.apply_fill(o, Fill("e1", D("5"), D("100"))) is not None
    cash = p.cash
    assert p.apply_fill(o, Fill("e1", D("5"), D("100"))) is None
    assert p.cash == cash
    assert p.positions["AAPL"].quantity == D("5")


def test_releasing_a_canceled_order_gives_back_its_buying_power():
    p = portfolio()
    o = accepted(p, order("MSFT", "10", BUY, limit="400.00"), "401")
    assert p.reserved() == D("4000.00")
    o.request_cancel()
    o.cancel()
    assert p.release(o.id) == D("4000.00")
    assert p.release(o.id) == 0
    assert p.buying_power() == D("100000.00")


def test_insufficient_funds_is_denied_and_reserves_nothing():
    p = portfolio(cash="1000")
    o = order("AAPL", "10", BUY, limit="150.00")
    decision = accept_order(p, o, D("150"))
    assert not decision.approved
    assert decision.code is ErrorCode.INSUFFICIENT_FUNDS
    assert o.status is OrderStatus.REJECTED and o.reject_code == "INSUFFICIENT_FUNDS"
    assert p.reserved() == 0 and p.cash == D("1000")


def test_market_buys_reserve_the_price_plus_the_slippage_buffer():
    p = portfolio()
    o = order("AAPL", "10", BUY)
    assert required_reservation(p, o, D("100.00"), commission=D("1.00")) == D("1021.00")


def test_orders_compete_for_the_same_buying_power():
    p = portfolio(cash="10000")
    accepted(p, order("AAPL", "60", BUY, limit="100.00"), "100")
    second = check_order(p, order("MSFT", "50", BUY, limit="100.00"), D("100"))
    assert second.code is ErrorCode.INSUFFICIENT_FUNDS
    assert second.details == {"required": "5000.00", "available": "4000.00"}


def test_selling_a_held_position_needs_no_buying_power():
    p = portfolio(cash="10000")
    buy = accepted(p, order("AAPL", "100", BUY, limit="100.00"), "100")
    p.apply_fill(buy, Fill("e1", D("100"), D("100")))
    sell = order("AAPL", "100", SELL)
    decision = check_order(p, sell, D("100"))
    assert decision.approved and decision.reservation == 0


def test_two_open_sells_cannot_both_claim_the_same_long():
    p = portfolio(cash="10000")
    buy = accepted(p, order("AAPL", "50", BUY, limit="100.00"), "100")
    p.apply_fill(buy, Fill("e1", D("50"), D("100")))
    accepted(p, order("AAPL", "50", SELL), "100")
    second = check_order(p, order("AAPL", "50", SELL), D("100"))
    assert second.reservation > 0 or not second.approved  # it would open a short


def test_halted_portfolio_refuses_every_order():
    p = portfolio()
    p.set_trading_state(TradingState.HALTED)
    decision = check_order(p, order("AAPL", "1", BUY), D("100"))
    assert (decision.approved, decision.code) == (False, ErrorCode.TRADING_HALTED)
    assert decision.reason == "trading is halted"


def test_reducing_portfolio_admits_only_orders_that_shrink_a_position():
    p = portfolio()
    buy = accepted(p, order("AAPL", "10", BUY), "100")
    p.apply_fill(buy, Fill("e1", D("10"), D("100")))
    p.set_trading_state(TradingState.REDUCING)
    assert check_order(p, order("AAPL", "5", SELL), D("100")).approved
    assert not check_order(p, order("AAPL", "5", BUY), D("100")).approved
    assert not check_order(p, order("AAPL", "11", SELL), D("100")).approved  # would flip


def test_order_notional_limit():
    p = portfolio(limits=RiskLimits(max_order_notional=D("5000"), max_position_size=D("1e6")))
    decision = check_order(p, order("AAPL", "51", BUY, limit="100.00"), D("100"))
    assert decision.code is ErrorCode.RISK_LIMIT_EXCEEDED
    assert "order notional 5100.00 exceeds the limit 5000" in (decision.reason or "")


def test_position_size_limit_counts_the_position_already_held():
    p = portfolio(limits=RiskLimits(max_position_size=D("10000"), max_concentration=D("1")))
    buy = accepted(p, order("AAPL", "80", BUY, limit="100.00"), "100")
    p.apply_fill(buy, Fill("e1", D("80"), D("100")))
    decision = check_order(p, order("AAPL", "30", BUY, limit="100.00"), D("100"))
    assert decision.code is ErrorCode.RISK_LIMIT_EXCEEDED and "AAPL" in (decision.reason or "")


def test_max_positions_limit():
    limits = RiskLimits(max_positions=2, max_concentration=D("1"))
    p = portfolio(limits=limits)
    accepted(p, order("AAPL", "1", BUY), "100")
    accepted(p, order("MSFT", "1", BUY), "100")
    decision = check_order(p, order("NVDA", "1", BUY), D("100"))
    assert decision.code is ErrorCode.RISK_LIMIT_EXCEEDED
    assert check_order(p, order("AAPL", "1", BUY), D("100")).approved


def test_concentration_limit():
    p = portfolio(limits=RiskLimits(max_concentration=D("0.05"), max_position_size=D("1e6")))
    decision = check_order(p, order("AAPL", "51", BUY, limit="100.00"), D("100"))
    assert decision.code is ErrorCode.RISK_LIMIT_EXCEEDED and "5%" in (decision.reason or "")


def test_daily_loss_limit_stops_new_exposure_but_not_reductions():
    limits = RiskLimits(daily_loss_limit=D("500"), max_concentration=D("1"))
    p = portfolio(limits=limits)
    buy = accepted(p, order("AAPL", "100", BUY), "100")
    p.apply_fill(buy, Fill("e1", D("100"), D("100")))
    p.mark({"AAPL": D("94.00")})
    assert p.daily_pnl() == D("-600.00")
    assert not check_order(p, order("MSFT", "1", BUY), D("10")).approved
    assert check_order(p, order("AAPL", "100", SELL), D("94")).approved
    p.start_session()
    assert check_order(p, order("MSFT", "1", BUY), D("10")).approved


def test_market_closed_is_its_own_reason():
    decision = check_order(portfolio(), order("AAPL", "1", BUY), D("10"), market_open=False)
    assert decision.code is ErrorCode.MARKET_CLOSED


def test_total_value_return_and_trade_statistics():
    p = portfolio()
    buy = accepted(p, order("AAPL", "10", BUY), "100")
    p.apply_fill(buy, Fill("e1", D("10"), D("100"), D("1")))
    p.close_position("AAPL", D("110"))
    buy = accepted(p, order("MSFT", "10", BUY), "50")
    p.apply_fill(buy, Fill("e2", D("10"), D("50"), D("1")))
    p.close_position("MSFT", D("45"))
    stats = p.trade_statistics()
    assert (stats.trades, stats.won, stats.lost) == (2, 1, 1)
    assert stats.gross_profit == D("100.00") and stats.gross_loss == D("50.00")
    assert stats.profit_factor == D("2")
    assert stats.net_realized_pnl == D("48.00")
    assert p.get_total_value() == D("100048.00")
    assert p.get_return_percentage() == D("0.048")
    assert p.ledger_imbalance() == 0


def test_risk_check_of_a_buy_beyond_buying_power_denies_with_a_reason():
    p = portfolio(cash="1000")
    probe = Order(symbol="AAPL", quantity=D("100"), side=OrderSide.BUY, portfolio_id=p.id)
    decision = check_order(p, probe, D("150"))
    assert not decision.approved and decision.reason is not None
    assert "buying power" in decision.reason


def test_risk_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="max_concentration"):
        RiskLimits(max_concentration=D("1.5"))
    with pytest.raises(ValueError, match="max_positions"):
        RiskLimits(max_positions=0)


def test_a_buy_that_flips_a_short_consumes_its_reservation_only_for_the_opening_part():
    """Short 10, buy 30 at 100: a fill of 12 covers the 10 and opens 2. The reservation
    (20 opening shares) loses 2 x 100, not 12 x 100, so buying power is not overstated and
    a second buy cannot drive cash below zero at leverage 1."""
    p = portfolio(cash="3000")  # leverage 1
    short = accepted(p, order("AAPL", "10", SELL), "100")
    short.submit("b-short")
    p.apply_fill(short, Fill("x-short", D("10"), D("100")))
    flip = accepted(p, order("AAPL", "30", BUY, limit="100"), "100")
    assert p.reservations[flip.id].amount == D("2000.00")  # 20 opening shares
    flip.submit("b-flip")
    p.apply_fill(flip, Fill("x-flip-1", D("12"), D("100")))
    assert p.reservations[flip.id].amount == D("1800.00")  # 18 opening shares still to come

    assert p.buying_power() == D("1000.00")  # equity 3000 - exposure 200 - reserved 1800
    second = order("AAPL", "15", BUY, limit="100")  # 1500: fits only an overstated figure
    second.portfolio_id = p.id
    assert accept_order(p, second, D("100")).code is ErrorCode.INSUFFICIENT_FUNDS

    p.apply_fill(flip, Fill("x-flip-2", D("18"), D("100")))
    assert p.cash >= 0
    assert p.ledger_imbalance() == 0
