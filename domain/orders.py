"""Orders: their types, the status state machine, validation rules and fill accounting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar
from uuid import UUID, uuid4

from domain.errors import IllegalTransitionError, OverfillError, ValidationError
from domain.values import (
    MAX_PRICE,
    QUANTITY_DP,
    Quantity,
    round_to_tick,
    tick_size_for,
    to_decimal,
)

E = TypeVar("E", bound=StrEnum)

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the direction a fill moves the position."""
        return 1 if self is OrderSide.BUY else -1


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        return not self.is_terminal


S = OrderStatus
TERMINAL_STATUSES = frozenset({S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED})

# Every legal status change, in one place. Fills may race the broker's acknowledgement and
# a cancel request, so ACCEPTED and PENDING_CANCEL may move straight to a fill; a cancel the
# broker refuses sends PENDING_CANCEL back to where the order was (SUBMITTED or
# PARTIALLY_FILLED). PENDING -> SUBMITTED exists for brokers that accept without a separate
# risk step (and the seed's tests).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.ACCEPTED, S.SUBMITTED, S.REJECTED, S.CANCELED}),
    S.ACCEPTED: frozenset(
        {
            S.SUBMITTED,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.PENDING_CANCEL,
            S.CANCELED,
            S.EXPIRED,
            S.REJECTED,
        }
    ),
    S.SUBMITTED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED, S.REJECTED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED}
    ),
    S.PENDING_CANCEL: frozenset(
        {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
    ),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REJECTED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


def validate_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise ValidationError(
            "symbol", f"symbol must be 1-10 upper-case letters, digits or dots, got {symbol!r}"
        )
    return symbol


def validate_order_price(value: object, field_name: str) -> Decimal:
    """An order price must be positive, sane and on the tick grid (no sub-penny above $1)."""
    price = to_decimal(value, field_name)
    if price <= 0:
        raise ValidationError(field_name, f"{field_name} must be positive, got {price}")
    if price > MAX_PRICE:
        raise ValidationError(field_name, f"{field_name} must be at most {MAX_PRICE}, got {price}")
    tick = tick_size_for(price)
    if price % tick != 0:
        raise ValidationError(
            field_name, f"{field_name} {price} is not a multiple of the tick size {tick}"
        )
    return price


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Fill:
    """One execution reported by the broker; `execution_id` makes applying it idempotent."""

    execution_id: str
    quantity: Decimal
    price: Decimal
    commission: Decimal = Decimal(0)
    executed_at: datetime = field(default_factory=_utcnow)

    def __post_init__(self) -> None:
        if not self.execution_id:
            raise ValidationError("execution_id", "execution_id must not be empty")
        object.__setattr__(self, "quantity", Quantity(self.quantity).value)
        price = to_decimal(self.price, "price")
        if price <= 0:
            raise ValidationError("price", f"fill price must be positive, got {price}")
        object.__setattr__(self, "price", price)
        commission = to_decimal(self.commission, "commission")
        if commission < 0:
            raise ValidationError("commission", f"commission must not be negative: {commission}")
        object.__setattr__(self, "commission", commission)
        if self.executed_at.tzinfo is None:
            raise ValidationError("executed_at", "executed_at must be timezone-aware")

    @property
    def notional(self) -> Decimal:
        """Exact quantity x price, before settlement rounding."""
        return self.quantity * self.price


@dataclass
class Order:
    """Represents an order to buy or sell `quantity` shares of `symbol`.

    Checks its own invariants on construction; every status change goes through the
    TRANSITIONS table, and fills are applied at most once per execution id.
    """

    symbol: str
    quantity: Decimal
    side: OrderSide
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    id: UUID = field(default_factory=uuid4)
    portfolio_id: UUID | None = None
    client_order_id: str | None = None
    status: OrderStatus = OrderStatus.PENDING
    filled_quantity: Decimal = Decimal(0)
    # Exact sum of quantity x price over fills; the average is derived from it so that
    # repeated partial fills never accumulate rounding error.
    filled_notional: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    broker_order_id: str | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    created_at: datetime = field(default_factory=_utcnow)
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    closed_at: datetime | None = None
    execution_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.symbol = validate_symbol(self.symbol)
        quantity = to_decimal(self.quantity, "quantity")
        if quantity <= 0:
            raise ValidationError("quantity", f"Order quantity must be positive, got {quantity}")
        self.quantity = Quantity(quantity).value
        self.side = _enum(OrderSide, self.side, "side")
        self.order_type = _enum(OrderType, self.order_type, "order_type")
        self.time_in_force = _enum(TimeInForce, self.time_in_force, "time_in_force")
        self.status = _enum(OrderStatus, self.status, "status")
        needs_limit = self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        label = self.order_type.value.title()
        if needs_limit and self.limit_price is None:
            raise ValidationError("limit_price", f"{label} order requires a limit_price")
        if needs_stop and self.stop_price is None:
            raise ValidationError("stop_price", f"{label} order requires a stop_price")
        if not needs_limit and self.limit_price is not None:
            raise ValidationError("limit_price", f"{label} order must not have a limit_price")
        if not needs_stop and self.stop_price is not None:
            raise ValidationError("stop_price", f"{label} order must not have a stop_price")
        if self.limit_price is not None:
            self.limit_price = validate_order_price(self.limit_price, "limit_price")
        if self.stop_price is not None:
            self.stop_price = validate_order_price(self.stop_price, "stop_price")
        if self.client_order_id is not None and not (0 < len(self.client_order_id) <= 128):
            raise ValidationError("client_order_id", "client_order_id must be 1-128 characters")
        self.filled_quantity = to_decimal(self.filled_quantity, "filled_quantity")
        if not 0 <= self.filled_quantity <= self.quantity:
            raise ValidationError(
                "filled_quantity", "filled_quantity must be between 0 and the order quantity"
            )
        if self.created_at.tzinfo is None:
            raise ValidationError("created_at", "created_at must be timezone-aware")

    # -- derived values -------------------------------------------------------------------

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def average_fill_price(self) -> Decimal | None:
        """Quantity-weighted average of the fill prices, rounded to the tick."""
        if self.filled_quantity == 0:
            return None
        return round_to_tick(self.filled_notional / self.filled_quantity)

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    @property
    def is_fractional(self) -> bool:
        return self.quantity != self.quantity.to_integral_value()

    # -- state machine --------------------------------------------------------------------

    def transition_to(self, target: OrderStatus, at: datetime | None = None) -> None:
        if not can_transition(self.status, target):
            raise IllegalTransitionError(self.id, self.status.value, target.value)
        now = at or _utcnow()
        self.status = target
        self.updated_at = now
        if target.is_terminal:
            self.closed_at = now

    def accept(self, at: datetime | None = None) -> None:
        """Risk has approved the order and buying power is reserved."""
        self.transition_to(OrderStatus.ACCEPTED, at)

    def submit(self, broker_order_id: str, at: datetime | None = None) -> None:
        """The broker acknowledged the order under `broker_order_id`.

        A fill may overtake the acknowledgement; then only the broker id is recorded.
        """
        if not broker_order_id:
            raise ValidationError("broker_order_id", "broker_order_id must not be empty")
        if self.status in (OrderStatus.PENDING, OrderStatus.ACCEPTED):
            self.transition_to(OrderStatus.SUBMITTED, at)
        elif self.status.is_terminal and self.status is not OrderStatus.FILLED:
            raise IllegalTransitionError(self.id, self.status.value, OrderStatus.SUBMITTED.value)
        self.broker_order_id = broker_order_id
        self.submitted_at = self.submitted_at or at or _utcnow()

    def fill(
        self,
        quantity: Decimal,
        price: Decimal,
        execution_id: str | None = None,
        commission: Decimal = Decimal(0),
        at: datetime | None = None,
    ) -> bool:
        """Apply one execution; returns False (and changes nothing) if it was already applied."""
        execution = Fill(
            execution_id=execution_id or f"{self.id}-{len(self.execution_ids) + 1}",
            quantity=quantity,
            price=price,
            commission=commission,
            executed_at=at or _utcnow(),
        )
        return self.apply_fill(execution)

    def apply_fill(self, execution: Fill) -> bool:
        if execution.execution_id in self.execution_ids:
            return False
        if execution.quantity > self.remaining_quantity:
            raise OverfillError(self.id, self.quantity, self.filled_quantity, execution.quantity)
        filled = self.filled_quantity + execution.quantity
        target = OrderStatus.FILLED if filled == self.quantity else OrderStatus.PARTIALLY_FILLED
        if self.status is OrderStatus.PENDING_CANCEL and target is OrderStatus.PARTIALLY_FILLED:
            target = OrderStatus.PENDING_CANCEL  # still waiting for the broker's cancel answer
        elif self.status.is_terminal:
            # A fill reported after our cancel/expiry was still executed at the broker: the
            # money moved, so the ledger takes it, but a closed order stays closed.
            target = self.status
        elif not can_transition(self.status, target):
            raise IllegalTransitionError(self.id, self.status.value, target.value)
        self.filled_quantity = filled
        self.filled_notional += execution.notional
        self.commission += execution.commission
        self.execution_ids.add(execution.execution_id)
        if target is not self.status:
            self.transition_to(target, execution.executed_at)
        self.updated_at = execution.executed_at
        if target is OrderStatus.FILLED:
            self.filled_at = execution.executed_at
        return True

    def request_cancel(self, at: datetime | None = None) -> None:
        """The client asked to cancel; the order waits for the broker's answer."""
        if self.status in (OrderStatus.PENDING, OrderStatus.ACCEPTED):
            self.transition_to(OrderStatus.CANCELED, at)  # never reached the broker
        else:
            self.transition_to(OrderStatus.PENDING_CANCEL, at)

    def cancel(self, reason: str | None = None, at: datetime | None = None) -> None:
        """The broker confirmed the cancel; what was filled stays filled."""
        self.transition_to(OrderStatus.CANCELED, at)
        if reason:
            self.reject_reason = reason

    def cancel_refused(self, at: datetime | None = None) -> None:
        """The broker refused the cancel (too late): the order goes back to working."""
        working = OrderStatus.PARTIALLY_FILLED if self.filled_quantity else OrderStatus.SUBMITTED
        self.transition_to(working, at)

    def expire(self, at: datetime | None = None) -> None:
        self.transition_to(OrderStatus.EXPIRED, at)

    def reject(self, reason: str, code: str | None = None, at: datetime | None = None) -> None:
        if not reason:
            raise ValidationError("reason", "a rejection needs a reason")
        self.transition_to(OrderStatus.REJECTED, at)
        self.reject_reason = reason
        self.reject_code = code

    # -- pricing helpers --------------------------------------------------------------------

    def reference_price(self, market_price: Decimal) -> Decimal:
        """The worst price this order can reasonably be expected to execute at, for risk.

        Limit prices bound the execution; stop orders trigger at their stop; market orders
        execute near the market.
        """
        if self.limit_price is not None:
            return self.limit_price
        if self.stop_price is not None:
            worst = max if self.side is OrderSide.BUY else min
            return worst(self.stop_price, market_price)
        return market_price

    def signed_quantity(self) -> Decimal:
        return self.quantity * self.side.sign


def _enum(kind: type[E], value: object, field_name: str) -> E:
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationError(
            field_name, f"{field_name} must be one of {allowed}, got {value!r}"
        ) from None


__all__ = [
    "QUANTITY_DP",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "Fill",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "TimeInForce",
    "can_transition",
    "validate_order_price",
    "validate_symbol",
]
