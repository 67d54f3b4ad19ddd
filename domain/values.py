"""Value objects for money, prices and share quantities, and the rounding rules they share."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation

from domain.errors import CurrencyMismatchError, ValidationError

CENT = Decimal("0.01")
SUB_PENNY_TICK = Decimal("0.0001")
# Fractional share orders are accepted down to a millionth of a share; anything finer is a
# client bug (or an attempt to smuggle a float in), not an order.
QUANTITY_DP = 6
QUANTITY_STEP = Decimal(1).scaleb(-QUANTITY_DP)
MAX_PRICE = Decimal("1000000")

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "C$", "CHF": "CHF "}


def to_decimal(value: object, field: str) -> Decimal:
    """Coerce an int, str or Decimal to a finite Decimal; floats are refused outright."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValidationError(field, f"{field} must be a Decimal, int or numeric string, not float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise ValidationError(field, f"{field} is not a number: {value!r}") from None
    else:
        raise ValidationError(field, f"{field} must be a number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValidationError(field, f"{field} must be finite, got {result}")
    return result


def round_cents(amount: Decimal) -> Decimal:
    """Settle an amount to the cent with banker's rounding (no systematic drift either way)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def round_cents_up(amount: Decimal) -> Decimal:
    """Round a fee up to the next cent, as regulators and brokers bill them."""
    return amount.quantize(CENT, rounding=ROUND_UP)


def decimal_text(value: Decimal, *, keep_scale: bool = False) -> str:
    """A decimal as fixed-point text, never with an exponent, and never "-0".

    By default trailing zeros go (100, 0.5, 187.23: how brokers and JSON reports want a
    quantity); `keep_scale` keeps the amount's own scale (150.50: how the API shows money).
    """
    if value == 0:
        value = abs(value)
    return format(value if keep_scale else value.normalize(), "f")


def tick_size_for(price: Decimal) -> Decimal:
    """Minimum price increment of US equities (SEC Rule 612): 0.01 at or above $1, else 0.0001."""
    return CENT if price >= 1 else SUB_PENNY_TICK


def round_to_tick(price: Decimal) -> Decimal:
    """Round a derived price (an average) to the tick of its own magnitude."""
    return price.quantize(tick_size_for(price), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Money:
    """An amount in one currency; arithmetic across currencies is refused."""

    amount: Decimal
    currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", to_decimal(self.amount, "amount"))
        if not (len(self.currency) == 3 and self.currency.isalpha() and self.currency.isupper()):
            raise ValidationError(
                "currency", f"currency must be an ISO 4217 code, got {self.currency!r}"
            )

    @classmethod
    def zero(cls, currency: str = "USD") -> Money:
        return cls(Decimal(0), currency)

    def _check(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise ValidationError("amount", f"expected Money, got {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(self.currency, other.currency)

    def add(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def subtract(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def multiply(self, factor: Decimal | int) -> Money:
        return Money(self.amount * to_decimal(factor, "factor"), self.currency)

    __add__ = add
    __sub__ = subtract

    def __mul__(self, factor: Decimal | int) -> Money:
        return self.multiply(factor)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._check(other)
        return self.amount >= other.amount

    def is_negative(self) -> bool:
        return self.amount < 0

    def rounded(self) -> Money:
        """This amount settled to the cent."""
        return Money(round_cents(self.amount), self.currency)

    def format(self) -> str:
        """Human display with thousands separators: "$1,234.56", "-$0.50", "1,000.00 SEK"."""
        sign = "-" if self.amount < 0 else ""
        digits = f"{abs(round_cents(self.amount)):,.2f}"
        symbol = CURRENCY_SYMBOLS.get(self.currency)
        if symbol is None:
            return f"{sign}{digits} {self.currency}"
        return f"{sign}{symbol}{digits}"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Price:
    """A positive market price per share, displayed with `precision` decimal places."""

    value: Decimal
    precision: int = 2

    def __post_init__(self) -> None:
        value = to_decimal(self.value, "price")
        if value <= 0:
            raise ValidationError("price", f"price must be positive, got {value}")
        if not 0 <= self.precision <= 8:
            raise ValidationError("precision", f"precision must be 0..8, got {self.precision}")
        object.__setattr__(self, "value", value)

    def is_valid_market_price(self) -> bool:
        """Positive, below the sanity ceiling and on the tick grid of its magnitude."""
        return self.value <= MAX_PRICE and self.value % tick_size_for(self.value) == 0

    def round_to_tick_size(self, tick_size: Decimal) -> Price:
        tick = to_decimal(tick_size, "tick_size")
        if tick <= 0:
            raise ValidationError("tick_size", f"tick_size must be positive, got {tick}")
        rounded = (self.value / tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick
        if rounded <= 0:
            rounded = tick
        return Price(rounded, self.precision)

    def format(self) -> str:
        return f"${self.value:,.{self.precision}f}"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Quantity:
    """A positive number of shares; fractional shares down to 10^-6 are allowed."""

    value: Decimal

    def __post_init__(self) -> None:
        value = to_decimal(self.value, "quantity")
        if value <= 0:
            raise ValidationError("quantity", f"quantity must be positive, got {value}")
        if value != value.quantize(QUANTITY_STEP, rounding=ROUND_DOWN):
            raise ValidationError(
                "quantity", f"quantity has more than {QUANTITY_DP} decimal places: {value}"
            )
        object.__setattr__(self, "value", value)

    def is_whole_shares(self) -> bool:
        return self.value == self.value.to_integral_value()

    def round_down_to_shares(self) -> Quantity:
        """Whole shares only; refuses to round a fraction below one share down to nothing."""
        whole = self.value.to_integral_value(rounding=ROUND_DOWN)
        if whole <= 0:
            raise ValidationError("quantity", f"{self.value} is less than one whole share")
        return Quantity(whole)

    def multiply_by_price(self, price: Price, currency: str = "USD") -> Money:
        return Money(self.value * price.value, currency)

    def __str__(self) -> str:
        return f"{self.value.normalize():f}"
