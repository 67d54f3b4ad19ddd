"""Commission models, their configuration and the commission calculator."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.commissions import (
    CommissionCalculator,
    CommissionModel,
    FixedPerTrade,
    PercentageOfNotional,
    PerShare,
    Tiered,
    ZeroCommission,
    model_from_config,
)
from domain.errors import ValidationError
from domain.values import CENT, Money, round_cents

D = Decimal


def usd(amount: str) -> Money:
    return Money(D(amount), "USD")


# --- fixed per trade ---------------------------------------------------------------------


def test_fixed_per_trade_charges_the_same_fee_whatever_the_size() -> None:
    model = FixedPerTrade()
    assert model.commission("buy", D(1), D("5")) == usd("4.95")
    assert model.commission("sell", D(100000), D("500")) == usd("4.95")


def test_fixed_per_trade_fee_and_currency_are_configurable() -> None:
    assert FixedPerTrade(D("9.99"), "EUR").commission("buy", D(10), D(10)) == Money(
        D("9.99"), "EUR"
    )


# --- per share ---------------------------------------------------------------------------


def test_per_share_commission_is_rate_times_shares() -> None:
    # 1000 * 0.005 = 5.00; above the 1.00 minimum, below 1% of 50,000
    assert PerShare().commission("buy", D(1000), D(50)) == usd("5.00")


def test_per_share_commission_is_raised_to_the_minimum() -> None:
    # 100 * 0.005 = 0.50 -> minimum 1.00 (1% of 5,000 = 50 does not bind)
    assert PerShare().commission("buy", D(100), D(50)) == usd("1.00")


def test_per_share_commission_is_capped_at_one_percent_of_notional() -> None:
    # 1000 * 0.005 = 5.00, but 1% of 1000 * 0.25 = 250 is 2.50
    assert PerShare().commission("buy", D(1000), D("0.25")) == usd("2.50")


def test_per_share_notional_cap_wins_over_the_minimum() -> None:
    # 100 * 0.005 = 0.50 -> minimum 1.00 -> cap 1% of 25.00 = 0.25
    assert PerShare().commission("sell", D(100), D("0.25")) == usd("0.25")


def test_per_share_commission_is_capped_at_an_absolute_maximum() -> None:
    # 1000 * 0.005 = 5.00 -> maximum 3.00
    model = PerShare(maximum=D("3.00"))
    assert model.commission("buy", D(1000), D(50)) == usd("3.00")


def test_per_share_without_a_notional_cap_charges_the_minimum_on_penny_stocks() -> None:
    model = PerShare(maximum_rate_of_notional=None)
    assert model.commission("buy", D(100), D("0.25")) == usd("1.00")


def test_per_share_commission_rounds_half_cents_to_even() -> None:
    # 333 * 0.005 = 1.665 -> 1.66 (banker's rounding); 1% of 3,330 = 33.30 does not bind
    assert PerShare().commission("buy", D(333), D(10)) == usd("1.66")


def test_per_share_refuses_a_maximum_below_the_minimum() -> None:
    with pytest.raises(ValidationError) as error:
        PerShare(minimum=D("1.00"), maximum=D("0.50"))
    assert error.value.field == "maximum"


def test_per_share_refuses_a_negative_rate() -> None:
    with pytest.raises(ValidationError) as error:
        PerShare(rate=D("-0.005"))
    assert error.value.field == "rate"


# --- percentage of notional ----------------------------------------------------------------


def test_percentage_of_notional_charges_a_fraction_of_the_trade_value() -> None:
    # 100 * 123.45 = 12,345.00 * 0.001 = 12.345 -> 12.34 (half to even)
    assert PercentageOfNotional().commission("buy", D(100), D("123.45")) == usd("12.34")


def test_percentage_of_notional_is_raised_to_its_minimum() -> None:
    # 1 * 10 * 0.001 = 0.01 -> minimum 1.00
    model = PercentageOfNotional(minimum=D("1.00"))
    assert model.commission("sell", D(1), D(10)) == usd("1.00")


# --- tiered ------------------------------------------------------------------------------


def test_tiered_charges_the_first_tier_rate_at_the_start_of_the_month() -> None:
    # 1000 * 0.0035 = 3.50
    assert Tiered().commission("buy", D(1000), D(50), monthly_volume=D(0)) == usd("3.50")


def test_tiered_rate_falls_once_the_monthly_volume_reaches_the_next_threshold() -> None:
    model = Tiered()
    # 299,999 shares traded: still 0.0035; 300,000 reached: 1000 * 0.002 = 2.00
    assert model.commission("buy", D(1000), D(50), D(299999)) == usd("3.50")
    assert model.commission("buy", D(1000), D(50), D(300000)) == usd("2.00")
    # beyond the last threshold: 1000 * 0.0005 = 0.50 -> minimum 0.35 does not bind
    assert model.commission("buy", D(1000), D(50), D(200000000)) == usd("0.50")


def test_tiered_commission_is_raised_to_the_minimum() -> None:
    # 10 * 0.0035 = 0.035 -> minimum 0.35
    assert Tiered().commission("buy", D(10), D(50)) == usd("0.35")


def test_tiered_commission_is_capped_at_one_percent_of_notional() -> None:
    # 1000 * 0.0035 = 3.50, but 1% of 1000 * 0.10 = 100 is 1.00
    assert Tiered().commission("buy", D(1000), D("0.10")) == usd("1.00")


def test_tiered_accepts_a_custom_schedule() -> None:
    model = Tiered(tiers=((D(0), D("0.01")), (D(1000), D("0.005"))), minimum=D(0))
    assert model.rate_for(D(999)) == D("0.01")
    assert model.rate_for(D(1000)) == D("0.005")
    # 100 * 0.005 = 0.50
    assert model.commission("buy", D(100), D(20), D(5000)) == usd("0.50")


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        ((D(100), D("0.0035")),),
        ((D(0), D("0.0035")), (D(0), D("0.002"))),
        ((D(0), D("0.0035")), (D(500), D("0.002")), (D(400), D("0.001"))),
        ((D(0), D("0.002")), (D(300000), D("0.0035"))),
        ((D(0),),),
        ((D(0), D("-0.001")),),
    ],
    ids=[
        "empty",
        "not starting at zero",
        "repeated threshold",
        "unsorted",
        "rising rate",
        "not a pair",
        "negative rate",
    ],
)
def test_tiered_refuses_a_malformed_schedule(tiers: tuple[tuple[Decimal, ...], ...]) -> None:
    with pytest.raises(ValidationError) as error:
        Tiered(tiers=tiers)  # type: ignore[arg-type]
    assert error.value.field == "tiers"


# --- zero commission with regulatory fees ----------------------------------------------------


def test_zero_commission_buys_are_free() -> None:
    assert ZeroCommission().commission("buy", D(100000), D(500)) == usd("0.00")


def test_zero_commission_sells_pay_sec_fee_and_taf_each_rounded_up() -> None:
    # SEC: 5,000 * 0.0000278 = 0.139 -> 0.14; TAF: 100 * 0.000166 = 0.0166 -> 0.02
    model = ZeroCommission()
    assert model.sec_fee(D(100), D(50)) == D("0.14")
    assert model.trading_activity_fee(D(100)) == D("0.02")
    assert model.commission("sell", D(100), D(50)) == usd("0.16")


def test_zero_commission_caps_the_trading_activity_fee_per_trade() -> None:
    # SEC: 1,000,000 * 0.0000278 = 27.80; TAF: 100,000 * 0.000166 = 16.60 -> cap 8.30
    assert ZeroCommission().commission("sell", D(100000), D(10)) == usd("36.10")


def test_zero_commission_sell_of_one_cheap_share_still_pays_a_cent_of_each_fee() -> None:
    # SEC: 1 * 0.0000278 -> 0.01; TAF: 0.000166 -> 0.01
    assert ZeroCommission().commission("sell", D(1), D(1)) == usd("0.02")


# --- bad trades ---------------------------------------------------------------------------

MODELS: list[CommissionModel] = [
    FixedPerTrade(),
    PerShare(),
    PercentageOfNotional(),
    Tiered(),
    ZeroCommission(),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize(
    ("side", "quantity", "price", "volume", "field"),
    [
        ("short", D(1), D(1), D(0), "side"),
        ("BUY", D(1), D(1), D(0), "side"),
        ("buy", D(0), D(1), D(0), "quantity"),
        ("buy", D(-5), D(1), D(0), "quantity"),
        ("sell", 1.5, D(1), D(0), "quantity"),
        ("buy", D(1), D(0), D(0), "price"),
        ("sell", D(1), D("-1"), D(0), "price"),
        ("buy", D(1), D(1), D(-1), "monthly_volume"),
    ],
)
def test_every_model_refuses_a_bad_trade_naming_the_field(
    model: CommissionModel,
    side: str,
    quantity: Decimal,
    price: Decimal,
    volume: Decimal,
    field: str,
) -> None:
    with pytest.raises(ValidationError) as error:
        model.commission(side, quantity, price, volume)
    assert error.value.field == field


# --- configuration ------------------------------------------------------------------------


def test_model_from_config_builds_a_per_share_model_from_string_decimals() -> None:
    model = model_from_config(
        {"model": "per_share", "rate": "0.0035", "minimum": "0.35", "maximum": "10"}
    )
    assert model == PerShare(rate=D("0.0035"), minimum=D("0.35"), maximum=D("10"))


def test_model_from_config_keeps_defaults_for_fields_left_out() -> None:
    assert model_from_config({"model": "fixed_per_trade"}) == FixedPerTrade()
    assert model_from_config({"model": "zero_commission"}) == ZeroCommission()


def test_model_from_config_turns_an_optional_cap_off_with_none() -> None:
    model = model_from_config({"model": "per_share", "maximum_rate_of_notional": None})
    assert model == PerShare(maximum_rate_of_notional=None)


def test_model_from_config_builds_tiers_from_lists_of_pairs() -> None:
    model = model_from_config(
        {
            "model": "tiered",
            "tiers": [["0", "0.0035"], ["300000", "0.002"]],
            "minimum": "0.35",
            "currency": "USD",
        }
    )
    assert model == Tiered(tiers=((D(0), D("0.0035")), (D(300000), D("0.002"))))


def test_model_from_config_builds_a_percentage_model() -> None:
    model = model_from_config({"model": "percentage_of_notional", "rate": "0.0025"})
    assert model.commission("buy", D(10), D(100)) == usd("2.50")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model": "per_trade_ish"}, "model"),
        ({}, "model"),
        ({"model": 3}, "model"),
        ({"model": "per_share", "rates": "0.005"}, "rates"),
        ({"model": "fixed_per_trade", "rate": "0.005"}, "rate"),
        ({"model": "per_share", "rate": 0.005}, "rate"),
        ({"model": "per_share", "rate": "cheap"}, "rate"),
        ({"model": "per_share", "minimum": "-1"}, "minimum"),
        ({"model": "fixed_per_trade", "currency": "dollars"}, "currency"),
        ({"model": "tiered", "tiers": "0:0.0035"}, "tiers"),
    ],
)
def test_model_from_config_refuses_bad_settings_naming_the_field(
    config: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        model_from_config(config)
    assert error.value.field == field


# --- calculator ---------------------------------------------------------------------------


def test_calculator_delegates_the_commission_to_its_model() -> None:
    calculator = CommissionCalculator(Tiered())
    assert calculator.calculate_commission("buy", D(1000), D(50), D(300000)) == usd("2.00")


def test_total_cost_of_a_buy_is_notional_plus_commission() -> None:
    # notional 3 * 10.125 = 30.375 -> 30.38; commission 0.015 -> min 1.00 -> cap 0.30375 -> 0.30
    calculator = CommissionCalculator(PerShare())
    assert calculator.calculate_total_cost("buy", D(3), D("10.125")) == usd("30.68")


def test_total_cost_of_a_sell_is_the_net_proceeds() -> None:
    # 30.38 - 0.30
    calculator = CommissionCalculator(PerShare())
    assert calculator.calculate_total_cost("sell", D(3), D("10.125")) == usd("30.08")


def test_net_proceeds_of_a_zero_commission_sell_are_reduced_by_regulatory_fees() -> None:
    # 5,000.00 - 0.16
    calculator = CommissionCalculator(ZeroCommission())
    assert calculator.calculate_total_cost("sell", D(100), D(50)) == usd("4999.84")
    assert calculator.calculate_total_cost("buy", D(100), D(50)) == usd("5000.00")


def test_net_proceeds_can_be_negative_when_a_flat_fee_exceeds_the_sale() -> None:
    # 1 * 0.50 - 4.95
    calculator = CommissionCalculator(FixedPerTrade())
    assert calculator.calculate_total_cost("sell", D(1), D("0.50")) == usd("-4.45")


def test_total_cost_refuses_an_unknown_side() -> None:
    with pytest.raises(ValidationError) as error:
        CommissionCalculator(FixedPerTrade()).calculate_total_cost("hold", D(1), D(1))
    assert error.value.field == "side"


# --- properties ---------------------------------------------------------------------------

sides = st.sampled_from(["buy", "sell"])
quantities = st.decimals(min_value=D("0.000001"), max_value=D(1000000), places=6)
prices = st.decimals(min_value=D("0.0001"), max_value=D(100000), places=4)
volumes = st.decimals(min_value=D(0), max_value=D(500000000), places=0)


@given(st.sampled_from(MODELS), sides, quantities, prices, volumes)
def test_commission_is_never_negative_and_always_a_whole_number_of_cents(
    model: CommissionModel, side: str, quantity: Decimal, price: Decimal, volume: Decimal
) -> None:
    commission = model.commission(side, quantity, price, volume).amount
    assert commission >= 0
    assert commission == commission.quantize(CENT)
    assert commission.as_tuple().exponent == -2


@given(sides, quantities, prices)
def test_per_share_commission_never_exceeds_one_percent_of_notional(
    side: str, quantity: Decimal, price: Decimal
) -> None:
    commission = PerShare().commission(side, quantity, price).amount
    assert commission <= round_cents(quantity * price * D("0.01"))


@given(sides, quantities, prices, volumes, volumes)
def test_tiered_commission_never_rises_with_monthly_volume(
    side: str, quantity: Decimal, price: Decimal, first: Decimal, second: Decimal
) -> None:
    low, high = sorted([first, second])
    model = Tiered()
    assert model.commission(side, quantity, price, high) <= model.commission(
        side, quantity, price, low
    )


@given(st.sampled_from(MODELS), quantities, prices)
def test_a_buy_costs_exactly_twice_the_commission_more_than_a_sell_brings_in(
    model: CommissionModel, quantity: Decimal, price: Decimal
) -> None:
    calculator = CommissionCalculator(model)
    buy = calculator.calculate_total_cost("buy", quantity, price)
    sell = calculator.calculate_total_cost("sell", quantity, price)
    commissions = calculator.calculate_commission("buy", quantity, price) + (
        calculator.calculate_commission("sell", quantity, price)
    )
    assert buy - sell == commissions
