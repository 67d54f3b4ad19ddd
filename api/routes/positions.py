"""/api/v1/positions/{symbol}: close a position (all of it, a quantity, or a percentage) by
a market order on the other side, placed like any order (its own workflow)."""

from __future__ import annotations

import logging
import uuid
from decimal import ROUND_DOWN, Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from temporalio.service import RPCError

from activities.protection_activities import set_levels
from activities.store.repositories import PortfolioRepository
from api import queries
from api.deps import CurrentKey, Deps, MetricsDep, rate_limited
from api.errors import ApiError, error_responses, invalid, not_found, unavailable
from api.routes import API_V1
from api.routes.orders import closed_earlier, decide, placed, refusal
from api.schemas import (
    CLIENT_ORDER_ID_REGEX,
    MAX_ORDER_QUANTITY,
    SYMBOL_REGEX,
    OrderPlaced,
    ProtectionIn,
    ProtectionPublic,
    decimal_input,
)
from bootstrap import control
from contracts.payloads import OrderRequest, order_id_for
from domain.errors import ErrorCode, ValidationError
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from domain.values import QUANTITY_STEP, Quantity

log = logging.getLogger("trading.api.positions")

router = APIRouter(prefix=f"{API_V1}/positions", tags=["positions"])

HUNDRED = Decimal(100)


@router.delete(
    "/{symbol}",
    status_code=201,
    response_model=OrderPlaced,
    summary="Close a position at market",
    description="Places a market order (DAY) on the other side of the position: all of it, "
    "`quantity` shares, or `percentage` percent of it (rounded down to 10^-6 shares); "
    "never more than the position, so a close never opens the other way. Answers like "
    "POST /orders: 201 with the closing order once risk accepted it. 404 without an open "
    "position, 409 when open orders on the same side already claim the shares. A "
    "client_order_id makes a retried close return the same order (200).",
    responses={
        200: {"model": OrderPlaced, "description": "A close with this client_order_id exists"},
        **error_responses(404, 409),
    },
    dependencies=[Depends(rate_limited("place_order"))],
)
async def close_position(
    deps: Deps,
    key: CurrentKey,
    metrics: MetricsDep,
    response: Response,
    symbol: Annotated[str, Path(pattern=SYMBOL_REGEX)],
    quantity: Annotated[str | None, Query(max_length=50, description="shares")] = None,
    percentage: Annotated[
        str | None, Query(max_length=50, description="percent of the position, 0 < p <= 100")
    ] = None,
    client_order_id: Annotated[str | None, Query(pattern=CLIENT_ORDER_ID_REGEX)] = None,
) -> OrderPlaced:
    if quantity is not None and percentage is not None:
        raise invalid("percentage", "give quantity or percentage, not both")
    asked = None if quantity is None else _quantity(quantity)
    share = None if percentage is None else _percentage(percentage)
    if client_order_id is not None:
        existing = await _existing_close(deps, key.portfolio_id, client_order_id, symbol)
        if existing is not None:
            response.status_code = 200
            return existing
    async with deps.pool.acquire() as conn:
        portfolio = await PortfolioRepository(conn).get(key.portfolio_id)
    position = portfolio.positions.get(symbol)
    if position is None or position.is_closed():
        raise not_found(f"open position in {symbol}")
    held = abs(position.quantity)
    side = OrderSide.SELL if position.is_long else OrderSide.BUY
    if asked is not None:
        if asked > held:
            raise invalid("quantity", f"the position holds {held:f}, less than {asked:f}")
        size = asked
    elif share is not None:
        size = _plain((held * share / HUNDRED).quantize(QUANTITY_STEP, rounding=ROUND_DOWN))
        if size <= 0:
            raise invalid("percentage", f"{share:f}% of {held:f} is less than one lot")
    else:
        size = held
    free = portfolio.closable_quantity(symbol, side)
    if size > free:
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            f"open {side.value} orders already claim {held - free:f} of the {held:f} held; "
            "cancel them first (DELETE /api/v1/orders)",
            {"symbol": symbol, "held": f"{held:f}", "free": f"{free:f}"},
        )
    client_order_id = client_order_id or f"close-{uuid.uuid4()}"
    request = OrderRequest(
        order_id=order_id_for(key.portfolio_id, client_order_id),
        portfolio_id=key.portfolio_id,
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=size,
        order_type=OrderType.MARKET,
        time_in_force=TimeInForce.DAY,
    )
    placement = await decide(deps, request)
    if placement is None:
        response.status_code = 200
        return placed(await closed_earlier(deps, request), "this close was placed earlier")
    decided = placement.order
    if decided.status is OrderStatus.REJECTED:
        metrics.orders_rejected.labels(decided.reject_code or "UNKNOWN").inc()
        raise refusal(decided)
    if not placement.created:
        response.status_code = 200
        return placed(decided, "this close was placed earlier")
    metrics.orders_placed.inc()
    log.info("close of %s: order %s for %s", symbol, decided.order_id, size)
    return placed(decided, "closing order accepted")


async def _existing_close(
    deps: Deps, portfolio_id: uuid.UUID, client_order_id: str, symbol: str
) -> OrderPlaced | None:
    existing = await queries.find_by_client_order_id(deps.pool, portfolio_id, client_order_id)
    if existing is None:
        return None
    if existing.symbol != symbol or existing.order_type is not OrderType.MARKET:
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            "this client_order_id names a different order; use a new client_order_id",
            {"order_id": str(existing.order_id), "client_order_id": client_order_id},
        )
    return placed(existing, "this close was placed earlier")


def _quantity(text: str) -> Decimal:
    try:
        value = Quantity(decimal_input(text)).value
    except ValueError as err:
        raise invalid("quantity", _reason(err)) from None
    if value > MAX_ORDER_QUANTITY:
        raise invalid("quantity", f"must be at most {MAX_ORDER_QUANTITY}")
    return value


def _percentage(text: str) -> Decimal:
    try:
        value = decimal_input(text)
    except ValueError as err:
        raise invalid("percentage", str(err)) from None
    if not 0 < value <= HUNDRED:
        raise invalid("percentage", "must be above 0 and at most 100")
    return value


def _plain(value: Decimal) -> Decimal:
    """5.000000 -> 5, 2.500000 -> 2.5 (never 1E+1)."""
    whole = value.to_integral_value()
    return whole.quantize(Decimal(1)) if value == whole else value.normalize()


def _reason(err: Exception) -> str:
    return err.rule if isinstance(err, ValidationError) else str(err)


@router.put(
    "/{symbol}/protection",
    response_model=ProtectionPublic,
    summary="Protect a position with a stop-loss and/or a take-profit",
    description="Stores the levels on the position (GET /positions shows them) and runs "
    "the position's guard: every `check_seconds` it compares the last trade with the "
    "levels and closes the position at market when one is hit. The guard ends when the "
    "position is flat (closed by it or by hand) or trading is halted. For a long the "
    "stop-loss must be below the take-profit, for a short above. 404 without an open "
    "position.",
    responses=error_responses(404),
    dependencies=[Depends(rate_limited("place_order"))],
)
async def protect_position(
    body: ProtectionIn,
    deps: Deps,
    key: CurrentKey,
    symbol: Annotated[str, Path(pattern=SYMBOL_REGEX)],
) -> ProtectionPublic:
    async with deps.pool.acquire() as conn:
        portfolio = await PortfolioRepository(conn).get(key.portfolio_id, symbols=[symbol])
    held = portfolio.positions.get(symbol)
    if held is None or held.is_closed():
        raise not_found(f"open position in {symbol}")
    stop, take = body.stop_loss_price, body.take_profit_price
    if stop is not None and take is not None:
        if held.is_long and not stop < take:
            raise invalid("take_profit_price", "a long's take-profit must be above its stop-loss")
        if not held.is_long and not take < stop:
            raise invalid("take_profit_price", "a short's take-profit must be below its stop-loss")
    position = await set_levels(deps.pool, key.portfolio_id, symbol, stop, take)
    if position is None:  # closed meanwhile
        raise not_found(f"open position in {symbol}")
    try:
        guard = await control.protect_position(
            deps.temporal,
            key.portfolio_id,
            symbol,
            body.check_seconds,
            deps.settings.workflow_options(),
            deps.settings.task_queue,
        )
    except RPCError as err:
        log.warning("guard of %s not started: %s", symbol, type(err).__name__)
        raise unavailable("the levels are stored but the guard could not start; retry") from None
    return ProtectionPublic(
        symbol=symbol,
        side="long" if position.is_long else "short",
        quantity=position.quantity,
        stop_loss_price=position.stop_loss_price,
        take_profit_price=position.take_profit_price,
        guard=guard,
    )
