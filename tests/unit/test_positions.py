"""Positions: fills increase, reduce, close and flip them; P&L; the position manager."""

from decimal import Decimal as D

import pytest

from domain.errors import ValidationError
from domain.orders import Fill, Order, OrderSide, OrderStatus, OrderType
from domain.positions import (
    Position,
    calculate_pnl,
    calculate_position_size,
    merge_positions,
    open_position,
)
from domain.values import Money, Price

BUY, SELL = OrderSide.BUY, OrderSide.SELL


def fill(qty: str, price: str, commission: str = "0", eid: str = "e") -> Fill:
    return Fill(eid, D(qty), D(price), D(commission))


@pytest.fixture
def filled_buy_order() -> Order:
    order = Order(symbol="AAPL", quantity=D("100"), side=BUY, order_type=OrderType.MARKET)
    order.status = OrderStatus.FILLED
    order.filled_quantity = D("100")
    order.filled_notional = D("15000.00")
    return order


def test_open_position_creates_long_position_from_buy_order(filled_buy_order):
    position = open_position(filled_buy_order)
    assert position.symbol == "AAPL"
    assert position.quantity == D("100")
    assert position.average_entry_price == D("150.00")
    assert not position.is_closed()


def test_calculate_position_size_with_risk_management():
    size = calculate_position_size(
        Money(D("10000"), "USD"), D("0.02"), Price(D("100.00")), Price(D("95.00"))
    )
    # $10,000 x 2% = $200 at risk; $5 risk per share; 40 shares.
    assert size.value == D("40")


def test_position_size_rounds_down_to_whole_shares_unless_fractional_is_allowed():
    args = (Money(D("10000")), D("0.01"), Price(D("100.00")), Price(D("97.00")))
    assert calculate_position_size(*args).value == D("33")
    assert calculate_position_size(*args, allow_fractional=True).value == D("33.333333")


def test_position_size_refuses_a_stop_at_the_entry_price():
    with pytest.raises(ValidationError, match="stop loss must differ"):
        calculate_position_size(Money(D("1000")), D("0.01"), Price(D("10")), Price(D("10")))


def test_merge_positions_calculates_weighted_average_cost():
    pos1 = Position(symbol="AAPL", quantity=D("100"), average_entry_price=D("150.00"))
    pos2 = Position(symbol="AAPL", quantity=D("50"), average_entry_price=D("160.00"))
    merged = merge_positions([pos1, pos2])
    # (100 x 150 + 50 x 160) / 150 = 153.33
    assert merged is not None
    assert merged.symbol == "AAPL"
    assert merged.quantity == D("150")
    assert merged.average_entry_price == D("153.33")
    assert merged.cost_basis == D("23000.00")


def test_merge_refuses_different_symbols():
    with pytest.raises(ValidationError, match="different symbols"):
        merge_positions(
            [
                Position(symbol="AAPL", quantity=D("1"), average_entry_price=D("1")),
                Position(symbol="MSFT", quantity=D("1"), average_entry_price=D("1")),
            ]
        )


def test_buys_increase_a_long_at_the_weighted_average_cost():
    position = Position(symbol="AAPL")
    position.apply(BUY, fill("10", "100.00", "1.00", "e1"))
    effect = position.apply(BUY, fill("10", "110.00", "1.00", "e2"))
    assert position.quantity == D("20")
    assert position.cost_basis == D("2100.00")
    assert position.average_entry_price == D("105.00")
    assert position.commission_paid == D("2.00")
    assert effect.cash_delta == D("-1101.00")


def test_selling_part_of_a_long_realizes_pnl_on_the_sold_shares():
    position = Position(symbol="AAPL", quantity=D("20"), average_entry_price=D("105.00"))
    effect = position.apply(SELL, fill("5", "120.00"))
    assert effect.realized_pnl == D("75.00")  # 5 x (120 - 105)
    assert position.quantity == D("15")
    assert position.cost_basis == D("1575.00")
    assert position.realized_pnl == D("75.00")


def test_selling_everything_closes_the_position_with_no_cost_left():
    position = Position(symbol="AAPL", quantity=D("3"), average_entry_price=D("10.01"))
    position.apply(SELL, fill("1", "11"))
    position.apply(SELL, fill("2", "9"))
    assert position.is_closed()
    assert position.cost_basis == 0
    assert position.realized_pnl == D("11") + D("18") - D("30.03")


def test_a_sell_larger_than_the_long_flips_it_short():
    position = Position(symbol="AAPL", quantity=D("10"), average_entry_price=D("100"))
    effect = position.apply(SELL, fill("15", "110"))
    assert effect.closed_quantity == D("10") and effect.opened_quantity == D("5")
    assert effect.realized_pnl == D("100.00")
    assert position.quantity == D("-5")
    assert position.cost_basis == D("-550.00")
    assert position.average_entry_price == D("110.00")
    assert effect.cash_delta == D("1650.00")


def test_a_short_gains_when_the_price_falls():
    position = Position(symbol="TSLA")
    position.apply(SELL, fill("10", "200"))
    position.mark(D("180"))
    assert position.get_unrealized_pnl() == D("200.00")
    assert position.get_position_value() == D("-1800")
    effect = position.apply(BUY, fill("10", "180"))
    assert effect.realized_pnl == D("200.00")
    assert position.is_closed()


def test_stop_loss_and_take_profit_for_long_and_short():
    long = Position(
        symbol="AAPL",
        quantity=D("10"),
        average_entry_price=D("100"),
        stop_loss_price=D("95"),
        take_profit_price=D("120"),
    )
    long.mark(D("94.99"))
    assert long.should_stop_loss() and not long.should_take_profit()
    long.mark(D("120"))
    assert long.should_take_profit() and not long.should_stop_loss()
    short = Position(
        symbol="AAPL",
        quantity=D("-10"),
        average_entry_price=D("100"),
        stop_loss_price=D("105"),
        take_profit_price=D("90"),
    )
    short.mark(D("105"))
    assert short.should_stop_loss()
    short.mark(D("89"))
    assert short.should_take_profit()


def test_calculate_pnl_marks_the_shares_held():
    position = Position(symbol="AAPL", quantity=D("100"), average_entry_price=D("150"))
    assert calculate_pnl(position, Price(D("151.25"))) == Money(D("125.00"))


def test_a_closed_position_cannot_carry_a_cost_basis():
    with pytest.raises(ValidationError, match="closed position has no cost basis"):
        Position(symbol="AAPL", quantity=D("0"), cost_basis=D("5"))
