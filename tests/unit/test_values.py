"""Money, Price and Quantity value objects."""

from decimal import Decimal as D

import pytest

from domain.errors import CurrencyMismatchError, ValidationError
from domain.values import Money, Price, Quantity, round_to_tick, tick_size_for


def test_money_adds_and_subtracts_exactly():
    total = Money(D("0.10")) + Money(D("0.20"))
    assert total == Money(D("0.30"))
    assert (total - Money(D("0.30"))).amount == 0


def test_money_refuses_to_mix_currencies():
    with pytest.raises(CurrencyMismatchError, match="USD with EUR"):
        Money(D("1"), "USD").add(Money(D("1"), "EUR"))


def test_money_formats_with_thousands_separator_and_sign():
    assert Money(D("1234.56")).format() == "$1,234.56"
    assert Money(D("-0.5")).format() == "-$0.50"
    assert Money(D("1000"), "SEK").format() == "1,000.00 SEK"


def test_money_multiply_keeps_full_precision_until_rounded():
    amount = Money(D("10.005")).multiply(D("3"))
    assert amount.amount == D("30.015")
    assert amount.rounded().amount == D("30.02")


@pytest.mark.parametrize("bad", [1.5, "abc", D("NaN"), D("Infinity")])
def test_money_refuses_floats_and_non_finite_amounts(bad):
    with pytest.raises(ValidationError) as excinfo:
        Money(bad)
    assert excinfo.value.field == "amount"


def test_money_refuses_a_malformed_currency_code():
    with pytest.raises(ValidationError, match="ISO 4217"):
        Money(D("1"), "usd")


@pytest.mark.parametrize("bad", [D("0"), D("-1.00")])
def test_price_must_be_positive(bad):
    with pytest.raises(ValidationError, match="price must be positive"):
        Price(bad)


def test_price_rounds_to_a_tick_size():
    assert Price(D("150.123")).round_to_tick_size(D("0.05")).value == D("150.10")
    assert Price(D("0.01")).round_to_tick_size(D("0.05")).value == D("0.05")


def test_sub_penny_prices_are_valid_only_below_one_dollar():
    assert Price(D("0.5012"), precision=4).is_valid_market_price()
    assert not Price(D("10.001")).is_valid_market_price()
    assert tick_size_for(D("1")) == D("0.01")
    assert round_to_tick(D("153.3333")) == D("153.33")


def test_quantity_supports_fractional_shares_and_rounds_down_to_whole_shares():
    quantity = Quantity(D("10.75"))
    assert not quantity.is_whole_shares()
    assert quantity.round_down_to_shares() == Quantity(D("10"))
    assert quantity.multiply_by_price(Price(D("2.00"))) == Money(D("21.5000"))


@pytest.mark.parametrize("bad", [D("0"), D("-5"), D("0.0000001")])
def test_quantity_refuses_non_positive_and_absurdly_precise_values(bad):
    with pytest.raises(ValidationError) as excinfo:
        Quantity(bad)
    assert excinfo.value.field == "quantity"


def test_quantity_below_one_share_cannot_round_down_to_nothing():
    with pytest.raises(ValidationError, match="less than one whole share"):
        Quantity(D("0.5")).round_down_to_shares()
