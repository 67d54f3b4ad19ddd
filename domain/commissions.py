"""Broker commission models and the calculator that prices a trade's commission and total cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Protocol

from domain.errors import ValidationError
from domain.values import Money, round_cents, round_cents_up, to_decimal

SIDES = ("buy", "sell")

# IBKR Pro "tiered" US stock schedule: (shares already traded this month, USD per share).
IBKR_TIERS: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("0"), Decimal("0.0035")),
    (Decimal("300000"), Decimal("0.0020")),
    (Decimal("3000000"), Decimal("0.0015")),
    (Decimal("20000000"), Decimal("0.0010")),
    (Decimal("100000000"), Decimal("0.0005")),
)


class CommissionModel(Protocol):
    """Anything that prices one trade; every model below is a frozen, validated dataclass."""

    @property
    def currency(self) -> str: ...

    def commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money: ...


def execution_commission(
    model: CommissionModel,
    side: str,
    cumulative_quantity: Decimal,
    cumulative_notional: Decimal,
    charged: Decimal,
) -> Decimal:
    """The commission of one execution, with the model's minimum and caps applied per order.

    Brokers charge a per-order minimum once, not on every partial fill: the order's
    commission on everything filled so far (at its average price), less what its earlier
    executions paid. The executions of an order therefore add up to exactly the commission
    of the whole order, which is what pre-trade risk reserves.
    """
    average = cumulative_notional / cumulative_quantity
    total = model.commission(side, cumulative_quantity, average).amount
    return max(Decimal(0), total - charged)


def _check_trade(
    side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal
) -> tuple[Decimal, Decimal, Decimal]:
    # A StrEnum side (OrderSide.BUY == "buy") passes this check too.
    if side not in SIDES:
        raise ValidationError("side", f"side must be 'buy' or 'sell', got {side!r}")
    qty = to_decimal(quantity, "quantity")
    if qty <= 0:
        raise ValidationError("quantity", f"quantity must be positive, got {qty}")
    px = to_decimal(price, "price")
    if px <= 0:
        raise ValidationError("price", f"price must be positive, got {px}")
    volume = to_decimal(monthly_volume, "monthly_volume")
    if volume < 0:
        raise ValidationError(
            "monthly_volume", f"monthly_volume must not be negative, got {volume}"
        )
    return qty, px, volume


def _non_negative(value: object, field: str) -> Decimal:
    amount = to_decimal(value, field)
    if amount < 0:
        raise ValidationError(field, f"{field} must not be negative, got {amount}")
    return amount


def _optional_non_negative(value: object, field: str) -> Decimal | None:
    return None if value is None else _non_negative(value, field)


def _check_currency(currency: object) -> None:
    if not isinstance(currency, str):
        raise ValidationError("currency", f"currency must be a string, got {currency!r}")
    Money(Decimal(0), currency)  # Money owns the ISO 4217 rule


def _floor_then_cap(
    raw: Decimal,
    minimum: Decimal,
    notional: Decimal,
    maximum_rate_of_notional: Decimal | None,
    maximum: Decimal | None,
) -> Decimal:
    """Raise to the minimum, then cut to the caps: a cap beats the minimum, as at IBKR.

    IBKR charges 100 shares at $0.25 (notional $25) 1% = $0.25, not its $1.00 minimum;
    a minimum that could exceed the trade's cap would make tiny orders uneconomic by design.
    """
    amount = max(raw, minimum)
    if maximum_rate_of_notional is not None:
        amount = min(amount, notional * maximum_rate_of_notional)
    if maximum is not None:
        amount = min(amount, maximum)
    return amount


@dataclass(frozen=True)
class FixedPerTrade:
    """The same flat fee for every trade, whatever its size."""

    amount: Decimal = Decimal("4.95")
    currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", _non_negative(self.amount, "amount"))
        _check_currency(self.currency)

    def commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        _check_trade(side, quantity, price, monthly_volume)
        return Money(round_cents(self.amount), self.currency)


@dataclass(frozen=True)
class PerShare:
    """IBKR "fixed" pricing: `rate` per share, at least `minimum`, at most the caps.

    Caps win over the minimum (see `_floor_then_cap`). The amount is computed at full
    precision and rounded to the cent once, so a commission sitting on the 1% cap may
    differ from the exact cap by the half cent that rounding moves it.
    """

    rate: Decimal = Decimal("0.005")
    minimum: Decimal = Decimal("1.00")
    maximum_rate_of_notional: Decimal | None = Decimal("0.01")
    maximum: Decimal | None = None
    currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _non_negative(self.rate, "rate"))
        object.__setattr__(self, "minimum", _non_negative(self.minimum, "minimum"))
        object.__setattr__(
            self,
            "maximum_rate_of_notional",
            _optional_non_negative(self.maximum_rate_of_notional, "maximum_rate_of_notional"),
        )
        maximum = _optional_non_negative(self.maximum, "maximum")
        if maximum is not None and maximum < self.minimum:
            raise ValidationError(
                "maximum", f"maximum {maximum} must not be below the minimum {self.minimum}"
            )
        object.__setattr__(self, "maximum", maximum)
        _check_currency(self.currency)

    def commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        qty, px, _ = _check_trade(side, quantity, price, monthly_volume)
        amount = _floor_then_cap(
            self.rate * qty, self.minimum, qty * px, self.maximum_rate_of_notional, self.maximum
        )
        return Money(round_cents(amount), self.currency)


@dataclass(frozen=True)
class PercentageOfNotional:
    """A fraction of the trade's value (`rate` 0.001 = 10 basis points), at least `minimum`."""

    rate: Decimal = Decimal("0.001")
    minimum: Decimal = Decimal("0")
    currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _non_negative(self.rate, "rate"))
        object.__setattr__(self, "minimum", _non_negative(self.minimum, "minimum"))
        _check_currency(self.currency)

    def commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        qty, px, _ = _check_trade(side, quantity, price, monthly_volume)
        return Money(round_cents(max(qty * px * self.rate, self.minimum)), self.currency)


@dataclass(frozen=True)
class Tiered:
    """IBKR "tiered" pricing: the per-share rate falls as the month's share volume grows.

    `tiers` are (threshold, rate) pairs: a tier applies once the shares already traded this
    month (`monthly_volume`, before this trade) reach its threshold. The whole trade is
    priced at one rate, as IBKR does; it is not split across a tier boundary.
    """

    tiers: tuple[tuple[Decimal, Decimal], ...] = IBKR_TIERS
    minimum: Decimal = Decimal("0.35")
    maximum_rate_of_notional: Decimal | None = Decimal("0.01")
    currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", _check_tiers(self.tiers))
        object.__setattr__(self, "minimum", _non_negative(self.minimum, "minimum"))
        object.__setattr__(
            self,
            "maximum_rate_of_notional",
            _optional_non_negative(self.maximum_rate_of_notional, "maximum_rate_of_notional"),
        )
        _check_currency(self.currency)

    def rate_for(self, monthly_volume: Decimal) -> Decimal:
        """The per-share rate of the highest tier whose threshold the volume has reached."""
        rate = self.tiers[0][1]
        for threshold, tier_rate in self.tiers:
            if monthly_volume < threshold:
                break
            rate = tier_rate
        return rate

    def commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        qty, px, volume = _check_trade(side, quantity, price, monthly_volume)
        amount = _floor_then_cap(
            self.rate_for(volume) * qty,
            self.minimum,
            qty * px,
            self.maximum_rate_of_notional,
            None,
        )
        return Money(round_cents(amount), self.currency)


def _check_tiers(tiers: object) -> tuple[tuple[Decimal, Decimal], ...]:
    if isinstance(tiers, str | bytes) or not isinstance(tiers, Sequence) or not tiers:
        raise ValidationError("tiers", "tiers must be a non-empty sequence of (threshold, rate)")
    checked: list[tuple[Decimal, Decimal]] = []
    for tier in tiers:
        if isinstance(tier, str | bytes) or not isinstance(tier, Sequence) or len(tier) != 2:
            raise ValidationError(
                "tiers", f"each tier must be a (threshold, rate) pair, got {tier!r}"
            )
        threshold = _non_negative(tier[0], "tiers")
        rate = _non_negative(tier[1], "tiers")
        if not checked:
            if threshold != 0:
                raise ValidationError("tiers", f"the first tier must start at 0, got {threshold}")
        else:
            previous_threshold, previous_rate = checked[-1]
            if threshold <= previous_threshold:
                raise ValidationError(
                    "tiers",
                    f"tier thresholds must increase: {threshold} after {previous_threshold}",
                )
            if rate > previous_rate:
                raise ValidationError(
                    "tiers",
                    f"tier rates must not increase with volume: {rate} after {previous_rate}",
                )
        checked.append((threshold, rate))
    return tuple(checked)


@dataclass(frozen=True)
class ZeroCommission:
    """Commission-free brokers (Alpaca, Robinhood): buys are free, sells pass on regulatory fees.

    The SEC Section 31 fee is charged per dollar of sale proceeds and FINRA's Trading
    Activity Fee per share sold (capped per trade); each is billed rounded up to the cent.
    """

    sec_fee_rate: Decimal = Decimal("0.0000278")
    taf_per_share: Decimal = Decimal("0.000166")
    taf_max: Decimal = Decimal("8.30")
    currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sec_fee_rate", _non_negative(self.sec_fee_rate, "sec_fee_rate"))
        object.__setattr__(
            self, "taf_per_share", _non_negative(self.taf_per_share, "taf_per_share")
        )
        object.__setattr__(self, "taf_max", _non_negative(self.taf_max, "taf_max"))
        _check_currency(self.currency)

    def sec_fee(self, quantity: Decimal, price: Decimal) -> Decimal:
        return round_cents_up(quantity * price * self.sec_fee_rate)

    def trading_activity_fee(self, quantity: Decimal) -> Decimal:
        return round_cents_up(min(quantity * self.taf_per_share, self.taf_max))

    def commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        qty, px, _ = _check_trade(side, quantity, price, monthly_volume)
        if side == "buy":
            return Money(round_cents(Decimal(0)), self.currency)
        return Money(self.sec_fee(qty, px) + self.trading_activity_fee(qty), self.currency)


_ModelClass = (
    type[FixedPerTrade]
    | type[PerShare]
    | type[PercentageOfNotional]
    | type[Tiered]
    | type[ZeroCommission]
)

MODELS: Mapping[str, _ModelClass] = {
    "fixed_per_trade": FixedPerTrade,
    "per_share": PerShare,
    "percentage_of_notional": PercentageOfNotional,
    "tiered": Tiered,
    "zero_commission": ZeroCommission,
}


def model_from_config(config: Mapping[str, object]) -> CommissionModel:
    """Build a model from settings such as {"model": "per_share", "rate": "0.005"}.

    Amounts are decimal strings (or ints); floats are refused so that a rate never picks up
    binary rounding on its way in. `null`/None turns an optional cap off. Tiers are a list of
    [threshold, rate] pairs. Fields left out keep the model's defaults.
    """
    name = config.get("model")
    if not isinstance(name, str) or name not in MODELS:
        raise ValidationError(
            "model", f"unknown commission model {name!r}; expected one of {', '.join(MODELS)}"
        )
    cls = MODELS[name]
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key == "model":
            continue
        if key not in known:
            raise ValidationError(
                key,
                f"unknown field {key!r} for model {name!r}; expected {', '.join(sorted(known))}",
            )
        if key == "currency":
            kwargs[key] = value
        elif key == "tiers":
            kwargs[key] = _check_tiers(value)
        elif value is None:
            kwargs[key] = None
        else:
            kwargs[key] = to_decimal(value, key)
    return cls(**kwargs)


@dataclass(frozen=True)
class CommissionCalculator:
    """Prices trades with one commission model; the broker's configuration picks the model."""

    model: CommissionModel

    def calculate_commission(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        return self.model.commission(side, quantity, price, monthly_volume)

    def calculate_total_cost(
        self, side: str, quantity: Decimal, price: Decimal, monthly_volume: Decimal = Decimal(0)
    ) -> Money:
        """Cash that leaves the account on a buy, or net proceeds that arrive on a sell.

        Buy: notional + commission. Sell: notional - commission, which can be negative when
        a flat fee exceeds the sale of a few cheap shares: that is what the account receives.
        """
        qty, px, volume = _check_trade(side, quantity, price, monthly_volume)
        commission = self.calculate_commission(side, qty, px, volume)
        notional = Money(round_cents(qty * px), commission.currency)
        if side == "buy":
            return notional + commission
        return notional - commission
