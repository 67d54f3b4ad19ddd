"""/api/v1/orders: place (one order workflow per order), read, list and cancel orders."""

from __future__ import annotations

import asyncio
import logging
import uuid
from decimal import Decimal
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, Query, Response
from temporalio.client import (
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import queries
from api.deps import CurrentKey, Deps, MetricsDep, rate_limited
from api.errors import ApiError, error_responses, invalid, not_found, unavailable
from api.routes import API_V1
from api.schemas import (
    SYMBOL_REGEX,
    CancelAllResult,
    CanceledOrder,
    OrderCreate,
    OrderLeg,
    OrderPage,
    OrderPlaced,
    OrderPublic,
)
from bootstrap import control
from contracts.payloads import (
    ExecutionPlan,
    LegPlan,
    OrderRequest,
    OrderSnapshot,
    Placement,
    order_id_for,
)
from domain.errors import ErrorCode
from domain.errors import ValidationError as DomainValidationError
from domain.market import Quote, SymbolNotFoundError
from domain.orders import OrderClass, OrderSide, OrderStatus, OrderType, check_legs

log = logging.getLogger("trading.api.orders")

router = APIRouter(prefix=f"{API_V1}/orders", tags=["orders"])

STATUS_GROUPS = {
    "open": [status for status in OrderStatus if status.is_open],
    "closed": [status for status in OrderStatus if status.is_terminal],
}


def order_public(order: OrderSnapshot) -> OrderPublic:
    return OrderPublic.model_validate(order, from_attributes=True)


def placed(order: OrderSnapshot, message: str) -> OrderPlaced:
    return OrderPlaced(**order_public(order).model_dump(), message=message)


def refusal(order: OrderSnapshot) -> ApiError:
    """A risk refusal as the envelope: the order's reject code is the envelope's code."""
    code = ErrorCode.__members__.get(order.reject_code or "", ErrorCode.VALIDATION_ERROR)
    details = {
        "order_id": str(order.order_id),
        "client_order_id": order.client_order_id,
        "reject_code": order.reject_code,
    }
    return ApiError(422, code, order.reject_reason or "order refused", details)


@router.post(
    "",
    status_code=201,
    response_model=OrderPlaced,
    summary="Place an order",
    description="Starts the order's workflow and answers once risk has accepted (201) or "
    "refused it (422 with the reason code). Never waits for a fill. A client_order_id "
    "this portfolio already used answers 200 with that order, never a second one.",
    responses={
        200: {"model": OrderPlaced, "description": "An order with this client_order_id exists"},
        **error_responses(409),
    },
    dependencies=[Depends(rate_limited("place_order"))],
)
async def place_order(
    body: OrderCreate, deps: Deps, key: CurrentKey, metrics: MetricsDep, response: Response
) -> OrderPlaced:
    client_order_id = body.client_order_id or str(uuid.uuid4())
    existing = await queries.find_by_client_order_id(deps.pool, key.portfolio_id, client_order_id)
    if existing is not None:
        return _duplicate(existing, body, response)
    quote = await _check_symbol(deps, body.symbol, metrics)
    assert body.order_type is not None  # set by OrderCreate's validator
    order_id = order_id_for(key.portfolio_id, client_order_id)
    request = OrderRequest(
        order_id=order_id,
        portfolio_id=key.portfolio_id,
        client_order_id=client_order_id,
        symbol=body.symbol,
        side=body.side,
        quantity=body.quantity,
        order_type=body.order_type,
        time_in_force=body.time_in_force,
        limit_price=body.limit_price,
        stop_price=body.stop_price,
        trail_price=body.trail_price,
        trail_percent=body.trail_percent,
        order_class=body.order_class,
    )
    plan = None
    if body.execution is not None:
        execution = body.execution
        plan = ExecutionPlan(body.order_class, execution.duration_seconds, execution.slices)
    legs = None
    if body.order_class.is_structure:
        legs = LegPlan(
            take_profit_limit=body.take_profit.limit_price if body.take_profit else None,
            stop_loss_stop=body.stop_loss.stop_price if body.stop_loss else None,
            stop_loss_limit=body.stop_loss.limit_price if body.stop_loss else None,
        )
        if body.order_class is OrderClass.OCO:
            await _check_held(deps, key.portfolio_id, body)
        elif body.order_type is OrderType.MARKET:
            # A market entry's price is the far touch: the legs must be on its far sides.
            entry_price = quote.ask if body.side is OrderSide.BUY else quote.bid
            try:
                check_legs(
                    body.order_class,
                    body.side,
                    body.order_type,
                    entry_price,
                    legs.take_profit_limit,
                    legs.stop_loss_stop,
                    legs.stop_loss_limit,
                )
            except DomainValidationError as err:
                raise invalid(err.field, err.rule) from None
    placement = await decide(deps, request, plan, legs)
    if placement is None:
        # The workflow ran and closed: the store has the order unless it failed before risk.
        existing = await closed_earlier(deps, request)
        return _duplicate(existing, body, response)
    decided = placement.order
    if decided.status is OrderStatus.REJECTED:
        metrics.orders_rejected.labels(decided.reject_code or "UNKNOWN").inc()
        raise refusal(decided)
    if not placement.created:  # a concurrent duplicate: another request placed it
        return _duplicate(decided, body, response)
    metrics.orders_placed.inc()
    log.info("order %s accepted (%s); reason: %r", order_id, decided.status.value, body.reason)
    return placed(decided, "order accepted")


async def decide(
    deps: Deps,
    request: OrderRequest,
    plan: ExecutionPlan | None = None,
    legs: LegPlan | None = None,
) -> Placement | None:
    """Start the order's workflow and wait, bounded, for risk's decision; None when a
    workflow for this order id ran and closed already (read the order from the store).
    A decision that does not come in time answers 503: retrying with the same
    client_order_id finds the order."""
    pending = {"order_id": str(request.order_id), "client_order_id": request.client_order_id}
    try:
        async with asyncio.timeout(deps.settings.api_decision_timeout_seconds):
            return await control.place_order(
                deps.temporal,
                request,
                deps.settings.workflow_options(),
                deps.settings.task_queue,
                request_token=uuid.uuid4().hex,
                plan=plan,
                legs=legs,
            )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise _not_yet("risk has not decided yet", pending) from None
    except (WorkflowAlreadyStartedError, WorkflowUpdateFailedError, RPCError) as err:
        # The time-skipping test server reports the refused start as a bare ALREADY_EXISTS.
        closed = isinstance(err, WorkflowAlreadyStartedError) or (
            isinstance(err, RPCError) and err.status is RPCStatusCode.ALREADY_EXISTS
        )
        if not closed:
            log.warning("order %s: no decision: %s", request.order_id, type(err).__name__)
            raise _not_yet("the order could not be decided", pending) from None
        return None


async def closed_earlier(deps: Deps, request: OrderRequest) -> OrderSnapshot:
    """The order of a workflow that already closed, or 409 when it closed before risk
    decided (no order row): the client must use a new client_order_id."""
    existing = await queries.find_by_client_order_id(
        deps.pool, request.portfolio_id, request.client_order_id
    )
    if existing is None:
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            "an earlier attempt with this client_order_id ended before risk decided; "
            "place the order with a new client_order_id",
            {"order_id": str(request.order_id), "client_order_id": request.client_order_id},
        )
    return existing


def _duplicate(existing: OrderSnapshot, body: OrderCreate, response: Response) -> OrderPlaced:
    """A client_order_id this portfolio already used: the same order again answers 200
    with it; a different order under the same id is a conflict (409), never a second one."""
    asked = (
        body.symbol,
        body.side,
        body.quantity,
        body.order_type,
        body.time_in_force,
        body.limit_price,
        body.stop_price,
        body.trail_price,
        body.trail_percent,
        body.order_class,
    )
    held = (
        existing.symbol,
        existing.side,
        existing.quantity,
        existing.order_type,
        existing.time_in_force,
        existing.limit_price,
        existing.stop_price,
        existing.trail_price,
        existing.trail_percent,
        existing.order_class,
    )
    if asked != held:
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            "this client_order_id names a different order; use a new client_order_id",
            {"order_id": str(existing.order_id), "client_order_id": existing.client_order_id},
        )
    response.status_code = 200
    return placed(existing, "an order with this client_order_id already exists")


async def _check_held(deps: Deps, portfolio_id: UUID, body: OrderCreate) -> None:
    """An OCO closes a held position: a long for a sell, a short for a buy, at least as
    large as the order; otherwise 422 naming `quantity` (or `side`), and nothing starts."""
    try:
        portfolio = await queries.load_portfolio(deps.pool, portfolio_id)
    except (OSError, asyncpg.PostgresError) as err:
        log.warning("oco position check failed: %s", type(err).__name__)
        raise unavailable("the position could not be read; retry") from None
    position = portfolio.positions.get(body.symbol)
    held = Decimal(0) if position is None else position.quantity
    if held == 0:
        raise invalid("symbol", f"an oco order closes a held position; none in {body.symbol}")
    if (held > 0) != (body.side is OrderSide.SELL):
        raise invalid("side", f"the {body.symbol} position is closed by the other side")
    if body.quantity > abs(held):
        raise invalid("quantity", f"the {body.symbol} position is {abs(held)} shares")


async def _check_symbol(deps: Deps, symbol: str, metrics: MetricsDep) -> Quote:
    """Refuse an unknown symbol before any workflow exists (and so before any order row);
    the symbol's quote."""
    try:
        return await deps.market_data.get_quote(symbol)
    except SymbolNotFoundError:
        metrics.orders_rejected.labels(ErrorCode.SYMBOL_NOT_FOUND.value).inc()
        reason = f"unknown symbol {symbol}"
        raise ApiError(
            422, ErrorCode.SYMBOL_NOT_FOUND, reason, {"field": "symbol", "reason": reason}
        ) from None
    except DomainValidationError as err:
        raise invalid("symbol", err.rule) from None
    except Exception as err:
        log.warning("market data unavailable for %s: %s", symbol, type(err).__name__)
        raise unavailable("market data is unavailable; retry later") from None


def _not_yet(message: str, details: dict[str, str]) -> ApiError:
    return unavailable(f"{message}; retry with the same client_order_id to get the order", details)


@router.get(
    "",
    response_model=OrderPage,
    summary="List orders, newest first",
    dependencies=[Depends(rate_limited("get_positions"))],
)
async def list_orders(
    deps: Deps,
    key: CurrentKey,
    status: Annotated[
        list[Annotated[str, Query(max_length=200)]] | None,
        Query(
            description="Statuses to include: repeat the parameter or separate with commas. "
            "`open` and `closed` stand for every open / terminal status.",
            examples=["open"],
        ),
    ] = None,
    symbol: Annotated[str | None, Query(pattern=SYMBOL_REGEX)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
) -> OrderPage:
    statuses = _statuses(status or [])
    after = None
    if cursor is not None:
        try:
            after = queries.Cursor.decode(cursor)
        except ValueError as err:
            raise invalid("cursor", str(err)) from None
    orders, next_cursor = await queries.list_orders(
        deps.pool, key.portfolio_id, statuses=statuses, symbol=symbol, limit=limit, after=after
    )
    return OrderPage(
        orders=[order_public(order) for order in orders],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


def _statuses(values: list[str]) -> list[OrderStatus]:
    chosen: list[OrderStatus] = []
    for value in (part.strip() for text in values for part in text.split(",")):
        if value in STATUS_GROUPS:
            chosen += STATUS_GROUPS[value]
        elif value in OrderStatus._value2member_map_:
            chosen.append(OrderStatus(value))
        else:
            allowed = ", ".join([*STATUS_GROUPS, *(s.value for s in OrderStatus)])
            raise invalid("status", f"unknown status {value[:40]!r}; use one of {allowed}")
    return chosen


@router.delete(
    "",
    response_model=CancelAllResult,
    summary="Cancel every open order",
    description="Cancels every open order of the key's portfolio through each order's "
    "workflow and lists them, oldest first, with the status each reached: `canceled`, or "
    "`pending_cancel` while the broker has not confirmed (the cancel goes on durably; GET "
    "the order later). An order that closed meanwhile shows its terminal status. With no "
    "open order the list is empty. Safe to repeat.",
    dependencies=[Depends(rate_limited("cancel_order"))],
)
async def cancel_all_orders(deps: Deps, key: CurrentKey) -> CancelAllResult:
    try:
        outcomes = await control.cancel_open_orders(
            deps.temporal,
            deps.pool,
            key.portfolio_id,
            reason="canceled by client (cancel all)",
            wait_seconds=deps.settings.api_decision_timeout_seconds,
        )
    except (OSError, asyncpg.PostgresError) as err:
        log.warning("cancel-all failed: %s", type(err).__name__)
        raise unavailable("the orders could not be read; retry") from None
    return CancelAllResult(
        orders=[
            CanceledOrder(order_id=o.order_id, status=o.status, delivered=o.delivered)
            for o in outcomes
        ]
    )


@router.get(
    "/{order_id}",
    response_model=OrderPublic,
    summary="Get one order",
    responses=error_responses(404),
    dependencies=[Depends(rate_limited("get_positions"))],
)
async def get_order(order_id: UUID, deps: Deps, key: CurrentKey) -> OrderPublic:
    order = await queries.find_order(deps.pool, key.portfolio_id, order_id)
    if order is None:
        raise not_found(f"order {order_id}")
    public = order_public(order)
    if order.order_class.is_parent:
        children = await queries.children_of(deps.pool, order.order_id)
        public.legs = [OrderLeg.model_validate(c, from_attributes=True) for c in children]
    return public


@router.delete(
    "/{order_id}",
    response_model=OrderPublic,
    summary="Cancel an order",
    description="Cancels through the order's workflow and answers with the resulting status "
    "(`canceled`, or `pending_cancel` while the broker has not confirmed). 409 when the "
    "order is already terminal.",
    responses=error_responses(404, 409),
    dependencies=[Depends(rate_limited("cancel_order"))],
)
async def cancel_order(order_id: UUID, deps: Deps, key: CurrentKey) -> OrderPublic:
    order = await queries.find_order(deps.pool, key.portfolio_id, order_id)
    if order is None:
        raise not_found(f"order {order_id}")
    if order.is_terminal:
        raise _already(order)
    try:
        async with asyncio.timeout(deps.settings.api_decision_timeout_seconds):
            result = await control.cancel_order(
                deps.temporal, order.order_id, reason="canceled by client"
            )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise unavailable(
            "the cancel is on its way but the broker has not answered yet; "
            "GET the order for its status",
            {"order_id": str(order_id)},
        ) from None
    except (WorkflowUpdateFailedError, RPCError) as err:
        # The validator refuses a terminal order; a closed workflow is a terminal order too.
        now = await queries.find_order(deps.pool, key.portfolio_id, order_id)
        if now is not None and now.is_terminal:
            raise _already(now) from None
        log.warning("cancel of %s failed: %s", order_id, type(err).__name__)
        raise unavailable(
            "the cancel could not be delivered; retry", {"order_id": str(order_id)}
        ) from None
    return order_public(result)


def _already(order: OrderSnapshot) -> ApiError:
    return ApiError(
        409,
        ErrorCode.CONFLICT,
        f"order is already {order.status.value}",
        {"order_id": str(order.order_id), "status": order.status.value},
    )
