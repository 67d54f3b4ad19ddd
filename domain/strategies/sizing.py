"""From a target to orders: close what points the wrong way first, then open with the
available equity in whole shares at the price the order will trade at.

Two steps, because the opening size depends on the cash the close leaves: the strategy
workflow places the closing order, waits for its fill, and only then sizes the opening
one (as established backtesting libraries do when a strategy closes and re-enters on the
same bar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from domain.errors import ValidationError
from domain.orders import OrderSide
from domain.strategies.base import Exposure, Target

ZERO = Decimal(0)


@dataclass(frozen=True)
class PlannedOrder:
    """A market order the strategy wants placed: side, whole-share quantity, and why."""

    side: OrderSide
    quantity: Decimal
    reason: str
    closing: bool


def closing_order(target: Target, position: Decimal) -> PlannedOrder | None:
    """The order that closes `position` when the target is flat or the other way."""
    if position == 0 or (target.exposure.sign * position > 0):
        return None
    side = OrderSide.SELL if position > 0 else OrderSide.BUY
    return PlannedOrder(side, abs(position), target.reason, closing=True)


def opening_order(
    target: Target,
    position: Decimal,
    available: Decimal,
    price: Decimal,
    commission: Callable[[OrderSide, Decimal, Decimal], Decimal],
) -> PlannedOrder | None:
    """The order that opens the target's exposure from flat: the most whole shares whose
    notional plus commission fits in `fraction` of `available` at `price`.

    `commission(side, quantity, price)` prices a trade (the configured commission model).
    Nothing when already on the target's side, when the target is flat, or when not even
    one share fits.
    """
    if target.exposure is Exposure.FLAT or position != 0:
        return None
    if price <= 0:
        raise ValidationError("price", f"price must be positive, got {price}")
    side = OrderSide.BUY if target.exposure is Exposure.LONG else OrderSide.SELL
    budget = available * target.fraction
    if budget <= 0:
        return None
    quantity = (budget / price).to_integral_value(rounding=ROUND_FLOOR)
    if quantity > 0:
        # Start from what a proportional commission allows, then step down while the
        # commission (any model: minimums, tiers) does not fit.
        rate = commission(side, quantity, price) / (quantity * price)
        quantity = (budget / (price * (1 + rate))).to_integral_value(rounding=ROUND_FLOOR)
    while quantity > 0 and quantity * price + commission(side, quantity, price) > budget:
        quantity -= 1
    if quantity <= 0:
        return None
    return PlannedOrder(side, quantity, target.reason, closing=False)
