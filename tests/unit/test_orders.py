"""The Order entity: validation, the status state machine and fill accounting."""

from datetime import datetime
from decimal import Decimal as D

import pytest

from domain.errors import IllegalTransitionError, OverfillError, ValidationError
from domain.orders import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)


def market_buy(quantity: str = "100") -> Order:
    return Order(symbol="AAPL", quantity=D(quantity), side=OrderSide.BUY)


def test_order_creation_with_valid_data():
    order = Order(symbol="AAPL", quantity=D("100"), side=OrderSide.BUY, order_type=OrderType.MARKET)
    assert order.symbol == "AAPL"
    assert order.quantity == D("100")
    assert order.status == OrderStatus.PENDING
    assert order.time_in_force is TimeInForce.DAY


def test_order_validation_rejects_invalid_quantity():
    with pytest.raises(ValueError, match="Order quantity must be positive"):
        Order(symbol="AAPL", quantity=D("-100"), side=OrderSide.BUY)


def test_fill_order_updates_status_and_price():
    order = market_buy()
    order.submit("broker123")

    order.fill(D("50"), D("150.25"))
    assert order.status == OrderStatus.PARTIALLY_FILLED
    assert order.filled_quantity == D("50")
    assert order.average_fill_price == D("150.25")

    order.fill(D("50"), D("150.75"))
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == D("100")
    assert order.average_fill_price == D("150.50")


@pytest.mark.parametrize(
    "order_type,price_field",
    [
        (OrderType.LIMIT, "limit_price"),
        (OrderType.STOP, "stop_price"),
        (OrderType.STOP_LIMIT, "stop_price"),
    ],
)
def test_order_validation_enforces_required_prices(order_type, price_field):
    with pytest.raises(ValueError, match=f"{order_type.value.title()} order requires") as exc:
        kwargs = {"limit_price": D("150.00")} if price_field == "stop_price" else {}
        if order_type is OrderType.STOP:
            kwargs = {}
        Order(symbol="AAPL", quantity=D("100"), side=OrderSide.BUY, order_type=order_type, **kwargs)
    assert exc.value.field == price_field


def test_market_order_with_a_limit_price_is_refused():
    with pytest.raises(ValidationError, match="must not have a limit_price"):
        Order(symbol="AAPL", quantity=D("1"), side=OrderSide.BUY, limit_price=D("10"))


@pytest.mark.parametrize(
    "field,value,rule",
    [
        ("symbol", "aapl", "upper-case"),
        ("symbol", "TOOLONGSYMBOL", "1-10"),
        ("side", "hold", "side must be one of buy, sell"),
        ("time_in_force", "forever", "time_in_force must be one of"),
        ("quantity", D("0"), "must be positive"),
        ("quantity", D("1.0000001"), "decimal places"),
        ("quantity", 1.5, "not float"),
    ],
)
def test_order_construction_names_the_field_and_rule_it_broke(field, value, rule):
    kwargs = {"symbol": "AAPL", "quantity": D("1"), "side": OrderSide.BUY, field: value}
    with pytest.raises(ValidationError, match=rule) as exc:
        Order(**kwargs)
    assert exc.value.field == field


@pytest.mark.parametrize("price", [D("-1"), D("0"), D("150.001"), D("2000000")])
def test_limit_price_must_be_positive_sane_and_on_the_tick_grid(price):
    with pytest.raises(ValidationError) as exc:
        Order(
            symbol="AAPL",
            quantity=D("1"),
            side=OrderSide.BUY,
            order_type=OrderType.LIMIT,
            limit_price=price,
        )
    assert exc.value.field == "limit_price"


def test_sub_penny_limit_price_is_accepted_below_one_dollar():
    order = Order(
        symbol="PENNY",
        quantity=D("1000"),
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        limit_price=D("0.5123"),
    )
    assert order.limit_price == D("0.5123")


def test_every_terminal_status_has_no_way_out():
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()
    assert set(TRANSITIONS) == set(OrderStatus)


def test_illegal_transition_raises_and_leaves_the_order_unchanged():
    order = market_buy()
    order.submit("b-1")
    order.fill(D("100"), D("10"))
    with pytest.raises(IllegalTransitionError, match="filled -> canceled"):
        order.cancel()
    assert order.status is OrderStatus.FILLED


def test_overfill_is_refused_and_changes_nothing():
    order = market_buy("10")
    order.submit("b-1")
    order.fill(D("6"), D("10"), execution_id="e1")
    with pytest.raises(OverfillError, match="exceed the order quantity"):
        order.fill(D("5"), D("10"), execution_id="e2")
    assert order.filled_quantity == D("6")
    assert order.filled_notional == D("60")
    assert order.execution_ids == {"e1"}
    assert order.status is OrderStatus.PARTIALLY_FILLED


def test_a_fill_with_an_execution_id_already_applied_is_ignored():
    order = market_buy("10")
    order.submit("b-1")
    assert order.fill(D("4"), D("10"), execution_id="e1") is True
    assert order.fill(D("4"), D("10"), execution_id="e1") is False
    assert order.filled_quantity == D("4")


def test_a_fill_can_overtake_the_broker_acknowledgement():
    order = market_buy("10")
    order.accept()
    order.fill(D("10"), D("10"), execution_id="e1")
    order.submit("b-1")
    assert order.status is OrderStatus.FILLED
    assert order.broker_order_id == "b-1"


def test_cancel_before_the_broker_saw_the_order_is_immediate():
    order = market_buy()
    order.accept()
    order.request_cancel()
    assert order.status is OrderStatus.CANCELED
    assert order.closed_at is not None


def test_a_fill_racing_a_cancel_is_applied_and_the_cancel_keeps_what_filled():
    order = market_buy("10")
    order.submit("b-1")
    order.request_cancel()
    order.fill(D("3"), D("10"), execution_id="e1")
    assert order.status is OrderStatus.PENDING_CANCEL
    order.cancel()
    assert order.status is OrderStatus.CANCELED
    assert order.filled_quantity == D("3")


def test_a_fill_racing_a_cancel_can_complete_the_order():
    order = market_buy("10")
    order.submit("b-1")
    order.request_cancel()
    order.fill(D("10"), D("10"), execution_id="e1")
    assert order.status is OrderStatus.FILLED


def test_a_refused_cancel_puts_the_order_back_to_work():
    order = market_buy("10")
    order.submit("b-1")
    order.fill(D("2"), D("10"), execution_id="e1")
    order.request_cancel()
    order.cancel_refused()
    assert order.status is OrderStatus.PARTIALLY_FILLED


def test_rejection_records_reason_and_code():
    order = market_buy()
    order.reject("not enough cash", "INSUFFICIENT_FUNDS")
    assert order.status is OrderStatus.REJECTED
    assert (order.reject_code, order.reject_reason) == ("INSUFFICIENT_FUNDS", "not enough cash")


def test_average_fill_price_is_weighted_and_rounded_to_the_tick():
    order = market_buy("3")
    order.submit("b-1")
    order.fill(D("1"), D("10.00"), execution_id="e1")
    order.fill(D("2"), D("10.01"), execution_id="e2")
    assert order.filled_notional == D("30.02")
    assert order.average_fill_price == D("10.01")  # 10.00666... rounded to the cent


def test_naive_timestamps_are_refused():
    with pytest.raises(ValidationError, match="timezone-aware"):
        Order(symbol="AAPL", quantity=D("1"), side=OrderSide.BUY, created_at=datetime(2026, 1, 1))


def test_stop_order_reference_price_is_the_worse_of_stop_and_market():
    order = Order(
        symbol="AAPL",
        quantity=D("1"),
        side=OrderSide.BUY,
        order_type=OrderType.STOP,
        stop_price=D("105"),
    )
    assert order.reference_price(D("100")) == D("105")
    assert order.reference_price(D("110")) == D("110")
