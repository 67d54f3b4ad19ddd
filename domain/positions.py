"""Positions: signed holdings that fills increase, reduce, close and flip, with their P&L."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from domain.errors import ValidationError
from domain.orders import Fill, Order, OrderSide, OrderStatus, validate_symbol
from domain.values import Money, Price, Quantity, round_cents, round_to_tick, to_decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class FillEffect:
    """What one fill did to a position and to cash, all amounts settled to the cent."""

    cash_delta: Decimal  # negative when cash leaves the account (notional and commission)
    realized_pnl: Decimal  # gross of commission
    commission: Decimal
    closed_quantity: Decimal  # the part of the fill that reduced an existing position
    opened_quantity: Decimal  # the part that opened or increased the position


@dataclass
class Position:
    """Represents a holding in one symbol: positive quantity is long, negative is short.

    `cost_basis` is the ledger truth: the cash paid (long, positive) or received (short,
    negative) for the shares still held, settled to the cent. `average_entry_price` is the
    cost basis per share rounded to the tick, for display and risk.
    """

    symbol: str
    quantity: Decimal = ZERO
    average_entry_price: Decimal = ZERO
    cost_basis: Decimal | None = None
    realized_pnl: Decimal = ZERO
    commission_paid: Decimal = ZERO
    stop_loss_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    current_market_price: Decimal | None = None
    opened_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        self.symbol = validate_symbol(self.symbol)
        self.quantity = to_decimal(self.quantity, "quantity")
        self.average_entry_price = to_decimal(self.average_entry_price, "average_entry_price")
        if self.average_entry_price < 0:
            raise ValidationError("average_entry_price", "average_entry_price must not be negative")
        if self.quantity != 0 and self.average_entry_price == 0 and self.cost_basis is None:
            raise ValidationError("average_entry_price", "an open position needs an entry price")
        if self.cost_basis is None:
            self.cost_basis = round_cents(self.quantity * self.average_entry_price)
        else:
            self.cost_basis = to_decimal(self.cost_basis, "cost_basis")
            if self.quantity == 0 and self.cost_basis != 0:
                raise ValidationError("cost_basis", "a closed position has no cost basis")
            if self.quantity * self.cost_basis < 0:
                raise ValidationError("cost_basis", "cost_basis must have the quantity's sign")
            self._refresh_average()
        self.commission_paid = to_decimal(self.commission_paid, "commission_paid")
        if self.commission_paid < 0:
            raise ValidationError("commission_paid", "commission_paid must not be negative")
        for name in ("stop_loss_price", "take_profit_price", "current_market_price"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Price(value).value)

    @property
    def basis(self) -> Decimal:
        assert self.cost_basis is not None  # set in __post_init__
        return self.cost_basis

    @property
    def is_long(self) -> bool:
        return self.quantity > 0

    @property
    def is_short(self) -> bool:
        return self.quantity < 0

    def is_closed(self) -> bool:
        return self.quantity == 0

    def _refresh_average(self) -> None:
        self.average_entry_price = (
            ZERO if self.quantity == 0 else round_to_tick(abs(self.basis / self.quantity))
        )

    # -- fills --------------------------------------------------------------------------

    def apply(self, side: OrderSide, fill: Fill) -> FillEffect:
        """Apply one execution: increase, reduce, close, or flip through zero.

        The fill's notional is settled to the cent once; a flip splits it into the closing
        part (its own rounded notional) and the opening part (the rest), so the cash that
        moves is exactly the settled notional.
        """
        if fill.price <= 0:
            raise ValidationError("price", "fill price must be positive")
        signed = fill.quantity * side.sign
        notional = round_cents(fill.notional)
        closing = ZERO
        if self.quantity != 0 and (self.quantity > 0) != (signed > 0):
            closing = min(abs(signed), abs(self.quantity))
        opening = fill.quantity - closing
        realized = ZERO
        if closing:
            close_notional = notional if not opening else round_cents(closing * fill.price)
            if closing == abs(self.quantity):
                removed = self.basis
            else:
                removed = round_cents(self.basis * closing / abs(self.quantity))
            # Long: proceeds minus cost. Short: (negative) basis removed is what we received,
            # the close notional is what we pay.
            realized = close_notional - removed if self.is_long else -removed - close_notional
            self.cost_basis = self.basis - removed
            self.quantity += closing * side.sign
            opening_notional = notional - close_notional
            self.realized_pnl += realized
        else:
            opening_notional = notional
        if opening:
            if self.quantity == 0:
                self.opened_at = fill.executed_at
            self.cost_basis = self.basis + opening_notional * side.sign
            self.quantity += opening * side.sign
        self.commission_paid += fill.commission
        self._refresh_average()
        self.updated_at = fill.executed_at
        return FillEffect(
            cash_delta=-notional * side.sign - fill.commission,
            realized_pnl=realized,
            commission=fill.commission,
            closed_quantity=closing,
            opened_quantity=opening,
        )

    # -- valuation ----------------------------------------------------------------------

    def mark(self, price: Decimal) -> None:
        self.current_market_price = Price(price).value

    def get_position_value(self) -> Decimal | None:
        """Signed market value at the current mark (negative for a short)."""
        if self.current_market_price is None:
            return None
        return self.quantity * self.current_market_price

    def get_unrealized_pnl(self) -> Decimal | None:
        value = self.get_position_value()
        if value is None:
            return None
        return value - self.basis

    def market_value_or_cost(self) -> Decimal:
        """Market value when marked, otherwise the cost basis (a conservative stand-in)."""
        value = self.get_position_value()
        return self.basis if value is None else value

    def should_stop_loss(self) -> bool:
        price, stop = self.current_market_price, self.stop_loss_price
        if price is None or stop is None or self.is_closed():
            return False
        return price <= stop if self.is_long else price >= stop

    def should_take_profit(self) -> bool:
        price, target = self.current_market_price, self.take_profit_price
        if price is None or target is None or self.is_closed():
            return False
        return price >= target if self.is_long else price <= target


# -- position manager: plain functions over positions and orders ----------------------------


def open_position(order: Order, fill_price: Price | None = None) -> Position:
    """A new position from a (partially) filled order, at its average or a given price."""
    if order.filled_quantity == 0 and fill_price is None:
        raise ValidationError("order", f"order {order.id} has no fills to open a position from")
    quantity = order.filled_quantity or order.quantity
    price = fill_price.value if fill_price is not None else order.average_fill_price
    assert price is not None
    if order.status is OrderStatus.REJECTED:
        raise ValidationError("order", f"order {order.id} was rejected")
    return Position(
        symbol=order.symbol,
        quantity=quantity * order.side.sign,
        average_entry_price=price,
        commission_paid=order.commission,
        opened_at=order.filled_at or order.updated_at or order.created_at,
    )


def merge_positions(positions: list[Position]) -> Position | None:
    """One position from several in the same symbol, at the weighted-average cost."""
    if not positions:
        return None
    symbols = {p.symbol for p in positions}
    if len(symbols) != 1:
        raise ValidationError("symbol", f"cannot merge positions in different symbols: {symbols}")
    quantity = sum((p.quantity for p in positions), ZERO)
    basis = sum((p.basis for p in positions), ZERO)
    if quantity == 0:
        basis = ZERO  # what is left of the difference was realized, not held
    realized = sum((p.realized_pnl for p in positions), ZERO)
    if any(p.quantity * quantity < 0 for p in positions if p.quantity):
        raise ValidationError("quantity", "cannot merge long and short positions; apply fills")
    return Position(
        symbol=symbols.pop(),
        quantity=quantity,
        cost_basis=basis,
        realized_pnl=realized,
        commission_paid=sum((p.commission_paid for p in positions), ZERO),
        opened_at=min((p.opened_at for p in positions if p.opened_at), default=None),
    )


def calculate_pnl(position: Position, current_price: Price) -> Money:
    """Unrealized P&L of the shares held at `current_price`."""
    return Money(round_cents(position.quantity * current_price.value - position.basis))


def calculate_position_size(
    account_balance: Money,
    risk_per_trade: Decimal,
    entry_price: Price,
    stop_loss_price: Price,
    allow_fractional: bool = False,
) -> Quantity:
    """Fixed-fractional sizing: risk `risk_per_trade` of the account between entry and stop."""
    risk = to_decimal(risk_per_trade, "risk_per_trade")
    if not 0 < risk <= 1:
        raise ValidationError("risk_per_trade", f"risk_per_trade must be in (0, 1], got {risk}")
    if account_balance.amount <= 0:
        raise ValidationError("account_balance", "account balance must be positive")
    per_share = abs(entry_price.value - stop_loss_price.value)
    if per_share == 0:
        raise ValidationError("stop_loss_price", "stop loss must differ from the entry price")
    shares = account_balance.amount * risk / per_share
    step = Decimal("0.000001") if allow_fractional else Decimal(1)
    shares = shares.quantize(step, rounding=ROUND_DOWN)
    if shares <= 0:
        raise ValidationError("risk_per_trade", "the risk budget buys less than one share")
    return Quantity(shares)
