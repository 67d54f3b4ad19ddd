"""Portfolio risk analytics: returns, VaR, stop risk, correlation, beta and concentration."""

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.analytics import (
    beta,
    concentration_breaches,
    correlation,
    correlation_matrix,
    correlation_risk,
    historical_var,
    parametric_var,
    portfolio_beta,
    position_risk,
    simple_returns,
)
from domain.errors import ValidationError

D = Decimal


def prices(*values: str) -> list[Decimal]:
    return [D(value) for value in values]


# returns 0.02, -0.02, 0.05, -0.10, 0.05
SWINGY = prices("100", "102", "99.96", "104.958", "94.4622", "99.18531")
# the same returns at half the price
SWINGY_HALF = prices("50", "51", "49.98", "52.479", "47.2311", "49.592655")
# returns 0.01, -0.01, 0 and the mirror image -0.01, 0.01, 0
UP_DOWN = prices("100", "101", "99.99", "99.99")
DOWN_UP = prices("100", "99", "99.99", "99.99")
# returns 0.01, 0.02, 0.03 / 0.01, 0.03, 0.02 / 0.02, 0.04, 0.06
RISING = prices("100", "101", "103.02", "106.1106")
RISING_SHUFFLED = prices("100", "101", "104.03", "106.1106")
RISING_TWICE = prices("100", "102", "106.08", "112.4448")


# --- returns ------------------------------------------------------------------------------


def test_simple_returns_are_period_over_period_changes() -> None:
    assert simple_returns(prices("100", "110", "99")) == [D("0.1"), D("-0.1")]
    assert simple_returns(SWINGY) == prices("0.02", "-0.02", "0.05", "-0.1", "0.05")


@pytest.mark.parametrize(
    "series",
    [prices("100"), [], prices("100", "0"), prices("100", "-1", "3")],
    ids=["one point", "empty", "zero price", "negative price"],
)
def test_simple_returns_refuse_short_or_non_positive_series(series: list[Decimal]) -> None:
    with pytest.raises(ValidationError) as error:
        simple_returns(series)
    assert error.value.field == "prices"


def test_simple_returns_refuse_float_prices() -> None:
    with pytest.raises(ValidationError):
        simple_returns([D(100), 101.5])  # type: ignore[list-item]


# --- historical VaR -----------------------------------------------------------------------


def test_historical_var_with_few_scenarios_is_the_worst_loss() -> None:
    # P&L 200, -200, 500, -1000, 500; k = ceil(5 * 0.05) = 1 -> worst: 1000
    assert historical_var({"A": D(10000)}, {"A": SWINGY}) == D("1000.00")


def test_historical_var_takes_the_kth_worst_scenario_at_lower_confidence() -> None:
    # k = ceil(5 * 0.4) = 2 -> second worst P&L: -200
    assert historical_var({"A": D(10000)}, {"A": SWINGY}, D("0.6")) == D("200.00")


def test_historical_var_is_zero_when_the_quantile_scenario_is_a_gain() -> None:
    # k = ceil(5 * 0.5) = 3 -> sorted P&L -1000, -200, 200, ... -> third is a gain of 200
    assert historical_var({"A": D(10000)}, {"A": SWINGY}, D("0.5")) == D("0.00")


def test_historical_var_of_a_short_comes_from_the_rallies() -> None:
    # P&L -200, 200, -500, 1000, -500 -> worst -500
    assert historical_var({"A": D(-10000)}, {"A": SWINGY}) == D("500.00")


def test_historical_var_nets_a_hedge_scenario_by_scenario() -> None:
    # same returns, 10,000 long and 5,000 short: net 5,000 * (-0.10) = -500
    exposures = {"A": D(10000), "B": D(-5000)}
    assert historical_var(exposures, {"A": SWINGY, "B": SWINGY_HALF}) == D("500.00")


def test_historical_var_of_an_empty_portfolio_is_zero_without_any_prices() -> None:
    assert historical_var({}, {}) == D("0.00")
    assert historical_var({"A": D(0)}, {}) == D("0.00")


def test_historical_var_refuses_series_of_different_lengths() -> None:
    with pytest.raises(ValidationError) as error:
        historical_var({"A": D(1), "B": D(1)}, {"A": SWINGY, "B": UP_DOWN})
    assert error.value.field == "prices"
    assert "A=6" in error.value.rule and "B=4" in error.value.rule


def test_historical_var_refuses_an_exposure_without_price_history() -> None:
    with pytest.raises(ValidationError) as error:
        historical_var({"A": D(1), "B": D(1)}, {"A": SWINGY})
    assert error.value.field == "prices"
    assert "B" in error.value.rule


def test_historical_var_names_the_symbol_with_a_bad_price() -> None:
    with pytest.raises(ValidationError) as error:
        historical_var({"ZZ": D(1)}, {"ZZ": prices("10", "0")})
    assert error.value.field == "prices"
    assert "ZZ" in error.value.rule


@pytest.mark.parametrize("confidence", ["0", "1", "1.5", "-0.95"])
def test_var_refuses_a_confidence_outside_zero_to_one(confidence: str) -> None:
    for var in (historical_var, parametric_var):
        with pytest.raises(ValidationError) as error:
            var({"A": D(1)}, {"A": SWINGY}, D(confidence))
        assert error.value.field == "confidence"


def test_historical_var_refuses_a_float_exposure() -> None:
    with pytest.raises(ValidationError) as error:
        historical_var({"A": 100.0}, {"A": SWINGY})  # type: ignore[dict-item]
    assert error.value.field == "exposures"


# --- parametric VaR -----------------------------------------------------------------------


def test_parametric_var_is_z_times_the_sample_deviation_of_pnl() -> None:
    # P&L 100, -100, 0: mean 0, sample variance 20,000 / 2 = 10,000, sigma 100
    # z(0.95) = 1.6448536269514715 -> 164.485... -> 164.49
    assert parametric_var({"A": D(10000)}, {"A": UP_DOWN}) == D("164.49")


def test_parametric_var_at_ninety_nine_percent() -> None:
    # z(0.99) = 2.3263478740408408 * 100 -> 232.63
    assert parametric_var({"A": D(10000)}, {"A": UP_DOWN}, D("0.99")) == D("232.63")


def test_parametric_var_scales_with_the_square_root_of_the_horizon() -> None:
    # 164.48536... * sqrt(4) = 328.97072... -> 328.97
    assert parametric_var({"A": D(10000)}, {"A": UP_DOWN}, horizon_days=4) == D("328.97")


def test_parametric_var_of_a_perfect_hedge_is_zero() -> None:
    # returns mirror each other: portfolio P&L 0, 0, 0
    exposures = {"A": D(10000), "B": D(10000)}
    assert parametric_var(exposures, {"A": UP_DOWN, "B": DOWN_UP}) == D("0.00")


def test_parametric_var_uses_the_covariance_between_positions() -> None:
    # perfectly correlated, 10,000 each: sigma = 2 * 100 -> 2 * 164.485... = 328.97
    exposures = {"A": D(10000), "B": D(10000)}
    assert parametric_var(exposures, {"A": UP_DOWN, "B": UP_DOWN}) == D("328.97")


@pytest.mark.parametrize("horizon", [0, -1, True])
def test_parametric_var_refuses_a_horizon_that_is_not_a_positive_whole_number(
    horizon: int,
) -> None:
    with pytest.raises(ValidationError) as error:
        parametric_var({"A": D(1)}, {"A": SWINGY}, horizon_days=horizon)
    assert error.value.field == "horizon_days"


def test_parametric_var_needs_two_returns_for_a_variance() -> None:
    with pytest.raises(ValidationError) as error:
        parametric_var({"A": D(1)}, {"A": prices("100", "101")})
    assert error.value.field == "prices"


# --- position risk ------------------------------------------------------------------------


def test_position_risk_of_a_long_is_the_drop_to_the_stop() -> None:
    # (50 - 45) * 100
    assert position_risk(D(100), D(50), D(45)) == D("500.00")


def test_position_risk_of_a_short_is_the_rise_to_the_stop() -> None:
    # (55 - 50) * 100
    assert position_risk(D(-100), D(50), D(55)) == D("500.00")


def test_position_risk_without_a_stop_is_the_whole_market_value() -> None:
    assert position_risk(D(100), D(50), None) == D("5000.00")
    assert position_risk(D(-100), D(50), None) == D("5000.00")


def test_position_risk_is_zero_when_the_price_is_already_through_the_stop() -> None:
    assert position_risk(D(100), D(50), D(55)) == D("0.00")
    assert position_risk(D(-100), D(50), D(45)) == D("0.00")


def test_position_risk_of_a_fractional_position_rounds_to_the_cent() -> None:
    # (100.333 - 100) * 0.5 = 0.1665 -> 0.17
    assert position_risk(D("0.5"), D("100.333"), D(100)) == D("0.17")


def test_position_risk_of_a_flat_position_is_zero() -> None:
    assert position_risk(D(0), D(50), D(45)) == D("0.00")


@pytest.mark.parametrize(
    ("price", "stop", "field"),
    [
        (D(0), None, "current_price"),
        (D(-1), D(1), "current_price"),
        (D(50), D(0), "stop_loss_price"),
    ],
)
def test_position_risk_refuses_non_positive_prices(
    price: Decimal, stop: Decimal | None, field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        position_risk(D(10), price, stop)
    assert error.value.field == field


# --- correlation --------------------------------------------------------------------------


def test_series_that_move_together_are_perfectly_correlated() -> None:
    # returns 0.01, 0.02, 0.03 and 0.02, 0.04, 0.06
    assert correlation(RISING, RISING_TWICE) == D(1)


def test_mirror_image_series_are_perfectly_anti_correlated() -> None:
    assert correlation(UP_DOWN, DOWN_UP) == D(-1)


def test_correlation_is_pearson_on_returns() -> None:
    # x = 1, 2, 3 and y = 1, 3, 2 (in percent): deviations -1, 0, 1 and -1, 1, 0
    # r = 1 / sqrt(2 * 2) = 0.5
    assert correlation(RISING, RISING_SHUFFLED) == D("0.5")


def test_correlation_refuses_series_of_different_lengths() -> None:
    with pytest.raises(ValidationError) as error:
        correlation(RISING, SWINGY)
    assert error.value.field == "b"


def test_correlation_refuses_a_series_with_constant_returns() -> None:
    with pytest.raises(ValidationError) as error:
        correlation(prices("100", "100", "100"), RISING[:3])
    assert error.value.field == "a"


def test_correlation_refuses_a_series_with_fewer_than_two_returns() -> None:
    with pytest.raises(ValidationError) as error:
        correlation(prices("100", "101"), prices("100", "99"))
    assert error.value.field == "a"


def test_correlation_matrix_is_symmetric_with_ones_on_the_diagonal() -> None:
    matrix = correlation_matrix({"Y": RISING_SHUFFLED, "X": RISING})
    assert matrix == {
        "X": {"X": D(1), "Y": D("0.5")},
        "Y": {"X": D("0.5"), "Y": D(1)},
    }


def test_correlation_matrix_names_the_symbols_of_a_bad_pair() -> None:
    with pytest.raises(ValidationError) as error:
        correlation_matrix({"X": RISING, "FLAT": prices("1", "1", "1", "1")})
    assert error.value.field == "prices"
    assert "FLAT" in error.value.rule


def test_correlation_risk_of_two_correlated_longs_is_one() -> None:
    assert correlation_risk({"A": D(1000), "B": D(3000)}, {"A": RISING, "B": RISING_TWICE}) == D(1)


def test_correlation_risk_of_a_long_hedged_by_a_correlated_short_is_minus_one() -> None:
    exposures = {"A": D(1000), "B": D(-3000)}
    assert correlation_risk(exposures, {"A": RISING, "B": RISING_TWICE}) == D(-1)


def test_correlation_risk_weights_each_pair_by_its_exposures() -> None:
    # A~C rho 1, B against both rho -1; exposures 10k, 10k, 20k
    # (1e8 * -1 + 2e8 * 1 + 2e8 * -1) / (1e8 + 2e8 + 2e8) = -0.2
    exposures = {"A": D(10000), "B": D(10000), "C": D(20000)}
    series = {"A": UP_DOWN, "B": DOWN_UP, "C": UP_DOWN}
    assert correlation_risk(exposures, series) == D("-0.2")


def test_correlation_risk_of_a_single_position_is_zero() -> None:
    assert correlation_risk({"A": D(1000), "B": D(0)}, {"A": RISING}) == D(0)


def test_correlation_risk_refuses_an_exposure_without_price_history() -> None:
    with pytest.raises(ValidationError) as error:
        correlation_risk({"A": D(1), "B": D(1)}, {"A": RISING})
    assert error.value.field == "prices"


# --- beta ---------------------------------------------------------------------------------


def test_beta_of_an_asset_moving_twice_as_much_as_the_market_is_two() -> None:
    assert beta(RISING_TWICE, RISING) == D(2)


def test_beta_is_covariance_over_market_variance() -> None:
    # deviations -1, 1, 0 against -1, 0, 1: cov 1 / var 2
    assert beta(RISING_SHUFFLED, RISING) == D("0.5")


def test_beta_refuses_a_market_with_constant_returns() -> None:
    with pytest.raises(ValidationError) as error:
        beta(RISING, prices("100", "100", "100", "100"))
    assert error.value.field == "market_prices"


def test_beta_refuses_series_of_different_lengths() -> None:
    with pytest.raises(ValidationError) as error:
        beta(SWINGY, RISING)
    assert error.value.field == "market_prices"


def test_portfolio_beta_weights_betas_by_exposure() -> None:
    # (30,000 * 1 + 10,000 * 2) / 40,000 = 1.25
    exposures = {"X": D(30000), "Y": D(10000)}
    series = {"X": RISING, "Y": RISING_TWICE}
    assert portfolio_beta(exposures, series, RISING) == D("1.25")


def test_portfolio_beta_of_a_long_short_book_divides_by_gross_exposure() -> None:
    # (30,000 * 1 - 10,000 * 2) / 40,000 = 0.25
    exposures = {"X": D(30000), "Y": D(-10000)}
    series = {"X": RISING, "Y": RISING_TWICE}
    assert portfolio_beta(exposures, series, RISING) == D("0.25")


def test_portfolio_beta_of_an_empty_book_is_zero() -> None:
    assert portfolio_beta({}, {}, RISING) == D(0)


# --- concentration ------------------------------------------------------------------------


def test_concentration_breaches_name_each_oversized_position_in_symbol_order() -> None:
    exposures = {"MSFT": D(-25000), "GOOG": D(10000), "AAPL": D(30000), "IBM": D(20000)}
    assert concentration_breaches(exposures, D(100000), D("0.20")) == [
        "AAPL: exposure $30,000.00 is 30.00% of equity $100,000.00, above the 20.00% limit",
        "MSFT: exposure -$25,000.00 is 25.00% of equity $100,000.00, above the 20.00% limit",
    ]


def test_a_diversified_portfolio_has_no_concentration_breaches() -> None:
    assert concentration_breaches({"A": D(100), "B": D(100)}, D(1000), D("0.25")) == []


@pytest.mark.parametrize(
    ("equity", "limit", "field"),
    [(D(0), D("0.2"), "equity"), (D(-5), D("0.2"), "equity"), (D(100), D(0), "max_concentration")],
)
def test_concentration_breaches_refuse_non_positive_equity_or_limit(
    equity: Decimal, limit: Decimal, field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        concentration_breaches({"A": D(1)}, equity, limit)
    assert error.value.field == field


# --- properties ---------------------------------------------------------------------------

price_values = st.decimals(min_value=D("0.01"), max_value=D(10000), places=2)
series = st.lists(price_values, min_size=3, max_size=40)
symbols = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=5)
confidences = st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2)


def varies(values: list[Decimal]) -> bool:
    return len(set(simple_returns(values))) > 1


@given(st.dictionaries(symbols, st.just(D(0)), max_size=5), series, confidences)
def test_var_of_a_portfolio_with_zero_exposure_is_zero(
    exposures: dict[str, Decimal], values: list[Decimal], confidence: Decimal
) -> None:
    history = dict.fromkeys(exposures, values)
    assert historical_var(exposures, history, confidence) == D("0.00")
    assert parametric_var(exposures, history, confidence) == D("0.00")


@given(series)
def test_correlation_of_a_series_with_itself_is_one(values: list[Decimal]) -> None:
    assume(varies(values))
    assert correlation(values, values) == D(1)


@given(series)
def test_beta_of_the_market_with_itself_is_one(values: list[Decimal]) -> None:
    assume(varies(values))
    assert beta(values, values) == D(1)


@given(st.lists(st.tuples(price_values, price_values), min_size=3, max_size=40))
def test_correlation_is_symmetric_and_between_minus_one_and_one(
    pairs: list[tuple[Decimal, Decimal]],
) -> None:
    a = [first for first, _ in pairs]
    b = [second for _, second in pairs]
    assume(varies(a) and varies(b))
    r = correlation(a, b)
    assert D(-1) <= r <= D(1)
    assert correlation(b, a) == r


@given(
    series,
    st.decimals(min_value=D(-1000000), max_value=D(1000000), places=2),
    confidences,
    confidences,
)
def test_historical_var_never_falls_as_confidence_rises(
    values: list[Decimal], exposure: Decimal, first: Decimal, second: Decimal
) -> None:
    low, high = sorted([first, second])
    history = {"A": values}
    low_var = historical_var({"A": exposure}, history, low)
    high_var = historical_var({"A": exposure}, history, high)
    assert D(0) <= low_var <= high_var


@given(
    st.decimals(min_value=D(-10000), max_value=D(10000), places=6),
    price_values,
    st.none() | price_values,
)
def test_position_risk_is_never_negative_and_a_long_never_risks_more_than_its_value(
    quantity: Decimal, price: Decimal, stop: Decimal | None
) -> None:
    risk = position_risk(quantity, price, stop)
    assert risk >= 0
    if quantity > 0:
        assert risk <= abs(quantity) * price + D("0.005")
