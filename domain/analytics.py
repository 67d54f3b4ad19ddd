"""Portfolio risk analytics from price histories: VaR, stop risk, correlation, beta, concentration.

Inputs are plain mappings, symbol -> signed exposure (market value: positive long, negative
short) and symbol -> closing prices, so this module does not depend on the Position and
Portfolio classes. Every price series passed together must be aligned: the same sessions,
oldest first, one close each. Aligning them (holidays, halts, listings) is the caller's job,
because only the caller knows the calendar; series of different lengths are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from statistics import NormalDist

from domain.errors import ValidationError
from domain.values import Money, round_cents, to_decimal

ZERO = Decimal(0)
ONE = Decimal(1)
# Correlations and betas are reported to 10 places: far finer than any price history can
# estimate them, and coarse enough that rounding noise in Decimal square roots never turns
# a series' correlation with itself into 0.9999999999999999999999999999.
RATIO_STEP = Decimal("1E-10")
PERCENT_STEP = Decimal("0.01")


def _ratio(value: Decimal) -> Decimal:
    return value.quantize(RATIO_STEP, rounding=ROUND_HALF_EVEN)


def _price_series(
    prices: Sequence[Decimal], field: str, minimum: int, name: str | None = None
) -> list[Decimal]:
    """Validated prices; `name` (a symbol) says which series of a mapping is at fault."""
    label = name or field
    if isinstance(prices, str | bytes) or not isinstance(prices, Sequence):
        raise ValidationError(field, f"{label} must be a sequence of prices")
    if len(prices) < minimum:
        raise ValidationError(field, f"{label} needs at least {minimum} prices, got {len(prices)}")
    checked = [to_decimal(price, field) for price in prices]
    for price in checked:
        if price <= 0:
            raise ValidationError(field, f"{label} must contain only positive prices, got {price}")
    return checked


def _returns(
    prices: Sequence[Decimal], field: str, minimum: int, name: str | None = None
) -> list[Decimal]:
    checked = _price_series(prices, field, minimum, name)
    return [today / yesterday - 1 for yesterday, today in zip(checked, checked[1:], strict=False)]


def simple_returns(prices: Sequence[Decimal]) -> list[Decimal]:
    """Period-over-period returns p[t] / p[t-1] - 1, one fewer than there are prices."""
    return _returns(prices, "prices", 2)


def _check_confidence(confidence: Decimal) -> Decimal:
    level = to_decimal(confidence, "confidence")
    if not 0 < level < 1:
        raise ValidationError("confidence", f"confidence must be between 0 and 1, got {level}")
    return level


def _exposed(exposures: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Non-zero exposures by symbol, in symbol order so every sum adds in the same order."""
    checked = {symbol: to_decimal(value, "exposures") for symbol, value in exposures.items()}
    return {symbol: checked[symbol] for symbol in sorted(checked) if checked[symbol] != 0}


def _pnl_scenarios(
    exposed: Mapping[str, Decimal], prices: Mapping[str, Sequence[Decimal]], minimum: int
) -> list[Decimal]:
    """Today's exposures revalued with each past period's returns: one P&L per period."""
    returns: dict[str, list[Decimal]] = {}
    for symbol in exposed:
        if symbol not in prices:
            raise ValidationError("prices", f"no price history for {symbol}")
        returns[symbol] = _returns(prices[symbol], "prices", minimum, symbol)
    lengths = {symbol: len(series) + 1 for symbol, series in returns.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{symbol}={count}" for symbol, count in lengths.items())
        raise ValidationError("prices", f"price series must have the same length: {described}")
    periods = next(iter(lengths.values())) - 1
    return [
        sum((exposed[symbol] * returns[symbol][t] for symbol in exposed), ZERO)
        for t in range(periods)
    ]


def historical_var(
    exposures: Mapping[str, Decimal],
    prices: Mapping[str, Sequence[Decimal]],
    confidence: Decimal = Decimal("0.95"),
) -> Decimal:
    """One-period historical-simulation Value at Risk, as a positive loss rounded to the cent.

    Quantile method: the k-th worst of the n P&L scenarios with k = ceil(n * (1 - confidence)),
    i.e. the inverse of the empirical distribution function without interpolation (Hyndman
    and Fan type 1). With 100 scenarios at 95% that is the 5th worst; with 20 or fewer it is
    the worst. It never reports a loss that did not happen. When even that scenario is a
    gain, nothing is at risk at this confidence and the result is 0.00.
    """
    level = _check_confidence(confidence)
    exposed = _exposed(exposures)
    if not exposed:
        return round_cents(ZERO)
    scenarios = sorted(_pnl_scenarios(exposed, prices, 2))
    rank = int((len(scenarios) * (1 - level)).to_integral_value(rounding=ROUND_CEILING))
    return round_cents(max(-scenarios[rank - 1], ZERO))


def parametric_var(
    exposures: Mapping[str, Decimal],
    prices: Mapping[str, Sequence[Decimal]],
    confidence: Decimal = Decimal("0.95"),
    horizon_days: int = 1,
) -> Decimal:
    """Variance-covariance (delta-normal) Value at Risk, as a positive loss rounded to the cent.

    VaR = z(confidence) * sigma * sqrt(horizon_days), with sigma^2 = w' S w, S the sample
    covariance matrix (n - 1 denominator) of the returns and w the exposures. w' S w equals
    the sample variance of the portfolio's P&L scenarios exactly, so that is how it is
    computed. The expected return is taken as zero: over days it is far smaller than its
    own estimation error. Needs at least 3 prices per series (2 returns for a variance).
    """
    level = _check_confidence(confidence)
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int) or horizon_days < 1:
        raise ValidationError(
            "horizon_days", f"horizon_days must be a positive whole number, got {horizon_days!r}"
        )
    exposed = _exposed(exposures)
    if not exposed:
        return round_cents(ZERO)
    scenarios = _pnl_scenarios(exposed, prices, 3)
    mean = sum(scenarios, ZERO) / len(scenarios)
    variance = sum(((pnl - mean) ** 2 for pnl in scenarios), ZERO) / (len(scenarios) - 1)
    # NormalDist works in floats; the quantile is a dimensionless multiplier, not money, and
    # going through str keeps exactly the digits float printed.
    z = Decimal(str(NormalDist().inv_cdf(float(level))))
    value_at_risk = z * variance.sqrt() * Decimal(horizon_days).sqrt()
    return round_cents(max(value_at_risk, ZERO))


def position_risk(
    quantity: Decimal, current_price: Decimal, stop_loss_price: Decimal | None
) -> Decimal:
    """Money lost if the price moves from here to the stop, rounded to the cent.

    Long (positive quantity): (current - stop) * quantity. Short: (stop - current) * |quantity|.
    Without a stop the whole market value is at risk; a short's loss is in truth unbounded,
    and its market value is the conventional stand-in. A stop at or through the current price
    is already triggered: the position is leaving now, so there is nothing more to lose to it.
    Gaps through the stop are not modelled.
    """
    qty = to_decimal(quantity, "quantity")
    price = to_decimal(current_price, "current_price")
    if price <= 0:
        raise ValidationError("current_price", f"current_price must be positive, got {price}")
    if stop_loss_price is None:
        return round_cents(abs(qty) * price)
    stop = to_decimal(stop_loss_price, "stop_loss_price")
    if stop <= 0:
        raise ValidationError("stop_loss_price", f"stop_loss_price must be positive, got {stop}")
    # Signed quantity makes one formula serve both sides: a short loses as the price rises.
    return round_cents(max((price - stop) * qty, ZERO))


def _paired_returns(
    a: Sequence[Decimal], b: Sequence[Decimal], a_field: str, b_field: str
) -> tuple[list[Decimal], list[Decimal]]:
    ra = _returns(a, a_field, 3)
    rb = _returns(b, b_field, 3)
    if len(ra) != len(rb):
        raise ValidationError(
            b_field,
            f"{a_field} and {b_field} must have the same length, got {len(a)} and {len(b)}",
        )
    return ra, rb


def _co_moment(x: Sequence[Decimal], y: Sequence[Decimal]) -> Decimal:
    """Sum of (x - mean x)(y - mean y): the covariance before dividing by n - 1."""
    mean_x = sum(x, ZERO) / len(x)
    mean_y = sum(y, ZERO) / len(y)
    return sum(((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, y, strict=True)), ZERO)


def correlation(a: Sequence[Decimal], b: Sequence[Decimal]) -> Decimal:
    """Pearson correlation of the two series' simple returns, in [-1, 1].

    A series whose returns never vary has no correlation with anything (0/0): refused.
    """
    ra, rb = _paired_returns(a, b, "a", "b")
    sxx = _co_moment(ra, ra)
    syy = _co_moment(rb, rb)
    for field, moment in (("a", sxx), ("b", syy)):
        if moment == 0:
            raise ValidationError(field, f"{field} has constant returns: correlation is undefined")
    r = _co_moment(ra, rb) / (sxx.sqrt() * syy.sqrt())
    return _ratio(min(max(r, -ONE), ONE))


def _symbol_correlation(
    prices: Mapping[str, Sequence[Decimal]], first: str, second: str
) -> Decimal:
    """correlation() of two symbols' series, its errors naming the symbols instead of a/b."""
    try:
        return correlation(prices[first], prices[second])
    except ValidationError as error:
        raise ValidationError("prices", f"{first}/{second}: {error.rule}") from error


def correlation_matrix(prices: Mapping[str, Sequence[Decimal]]) -> dict[str, dict[str, Decimal]]:
    """Pairwise return correlations: matrix[a][b], symmetric, 1 on the diagonal."""
    symbols = sorted(prices)
    matrix: dict[str, dict[str, Decimal]] = {symbol: {} for symbol in symbols}
    for i, first in enumerate(symbols):
        for second in symbols[i:]:
            value = _symbol_correlation(prices, first, second)
            matrix[first][second] = value
            matrix[second][first] = value
    return matrix


def correlation_risk(
    exposures: Mapping[str, Decimal], prices: Mapping[str, Sequence[Decimal]]
) -> Decimal:
    """Exposure-weighted average pairwise correlation, in [-1, 1]; 0 with fewer than 2 names.

    sum(e_i * e_j * rho_ij) / sum(|e_i * e_j|) over pairs i < j. The signs of the exposures
    count: long one stock and short a correlated one is a hedge and scores negative, whereas
    two correlated longs score near 1 (no diversification).
    """
    exposed = _exposed(exposures)
    symbols = list(exposed)
    for symbol in symbols:
        if symbol not in prices:
            raise ValidationError("prices", f"no price history for {symbol}")
    weighted = ZERO
    total_weight = ZERO
    for i, first in enumerate(symbols):
        for second in symbols[i + 1 :]:
            weight = exposed[first] * exposed[second]
            weighted += weight * _symbol_correlation(prices, first, second)
            total_weight += abs(weight)
    if total_weight == 0:
        return _ratio(ZERO)
    return _ratio(min(max(weighted / total_weight, -ONE), ONE))


def beta(asset_prices: Sequence[Decimal], market_prices: Sequence[Decimal]) -> Decimal:
    """Sensitivity of the asset's returns to the market's: cov(asset, market) / var(market)."""
    ra, rm = _paired_returns(asset_prices, market_prices, "asset_prices", "market_prices")
    market_moment = _co_moment(rm, rm)
    if market_moment == 0:
        raise ValidationError(
            "market_prices", "market_prices has constant returns: beta is undefined"
        )
    return _ratio(_co_moment(ra, rm) / market_moment)


def portfolio_beta(
    exposures: Mapping[str, Decimal],
    prices: Mapping[str, Sequence[Decimal]],
    market_prices: Sequence[Decimal],
) -> Decimal:
    """Exposure-weighted beta: sum(e_i * beta_i) / sum(|e_i|); 0 for an empty book.

    Weighting by gross exposure keeps a market-neutral book finite (its net value may be
    near zero) and gives the usual value-weighted beta for a long-only portfolio.
    """
    exposed = _exposed(exposures)
    if not exposed:
        return _ratio(ZERO)
    weighted = ZERO
    for symbol, exposure in exposed.items():
        if symbol not in prices:
            raise ValidationError("prices", f"no price history for {symbol}")
        weighted += exposure * beta(prices[symbol], market_prices)
    gross = sum((abs(exposure) for exposure in exposed.values()), ZERO)
    return _ratio(weighted / gross)


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(PERCENT_STEP, rounding=ROUND_HALF_EVEN)}%"


def concentration_breaches(
    exposures: Mapping[str, Decimal],
    equity: Decimal,
    max_concentration: Decimal,
    currency: str = "USD",
) -> list[str]:
    """One reason per symbol whose |exposure| / equity exceeds the limit, sorted by symbol.

    `max_concentration` is a fraction of equity (0.20 = 20%); a position exactly at the limit
    is allowed. Shorts count by their absolute size.
    """
    total = to_decimal(equity, "equity")
    if total <= 0:
        raise ValidationError(
            "equity", f"equity must be positive to measure concentration, got {total}"
        )
    limit = to_decimal(max_concentration, "max_concentration")
    if limit <= 0:
        raise ValidationError(
            "max_concentration", f"max_concentration must be positive, got {limit}"
        )
    breaches = []
    for symbol, exposure in _exposed(exposures).items():
        share = abs(exposure) / total
        if share > limit:
            breaches.append(
                f"{symbol}: exposure {Money(exposure, currency)} is {_percent(share)} of equity "
                f"{Money(total, currency)}, above the {_percent(limit)} limit"
            )
    return breaches
