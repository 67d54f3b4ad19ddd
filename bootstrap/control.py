"""Client-side calls into the workflows, shared by the API and the operator commands: place
and cancel an order, change a portfolio's trading state, and tell orders to re-read the
broker. Each names the workflow method it drives, so go-to-definition leads there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import asyncpg
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError
from temporalio.workflow import UpdateMethodMultiParam

from activities.store.queries import open_order_ids
from activities.store.repositories import NotFoundError, UnitOfWork
from contracts.payloads import (
    TASK_QUEUE,
    BracketWorkflowInput,
    CancelRequest,
    ExecutionPlan,
    LegPlan,
    OrderRequest,
    OrderSnapshot,
    OrderWorkflowInput,
    OrderWorkflowOptions,
    ParentWorkflowInput,
    Placement,
    ProtectionInput,
    TradingStateChange,
    TradingStateRequest,
    TradingStateWorkflowInput,
    protection_workflow_id,
    trading_state_workflow_id,
    workflow_id_for,
)
from domain.orders import OrderStatus
from domain.portfolio import TradingState
from workflows.bracket import BracketWorkflow
from workflows.operations import TradingStateWorkflow
from workflows.order import OrderWorkflow
from workflows.parent import ParentOrderWorkflow
from workflows.protection import ProtectionWorkflow

log = logging.getLogger(__name__)


async def _forgetting_the_start(
    start: WithStartWorkflowOperation[Any, Any], call: Awaitable[Any]
) -> Any:
    """Await an update-with-start call. When it fails or is cancelled (a caller's deadline),
    the start's own outcome is read in the background: the SDK keeps a failed start on the
    operation, and asyncio would log the unread result as an error."""
    try:
        return await call
    except BaseException:
        pending = asyncio.ensure_future(start.workflow_handle())
        pending.add_done_callback(lambda task: task.cancelled() or task.exception())
        raise


async def place_order(
    client: Client,
    request: OrderRequest,
    options: OrderWorkflowOptions,
    task_queue: str,
    request_token: str,
    plan: ExecutionPlan | None = None,
    legs: LegPlan | None = None,
) -> Placement:
    """Start the order's workflow, or join the one already running for this order id, and
    answer with risk's decision (OrderWorkflow.placement): accepted or rejected, and
    whether this request (`request_token`) is the one that placed it.

    A workflow that already closed refuses the start (REJECT_DUPLICATE): the caller reads
    the order from the store instead (WorkflowAlreadyStartedError or ALREADY_EXISTS).

    With a `plan` (TWAP, VWAP) the order is a parent: ParentOrderWorkflow works it as
    child orders, under the same workflow id and with the same `placement` update."""
    order_id = request.order_id
    if plan is not None:
        parent = ParentWorkflowInput(request=request, plan=plan, options=options)
        return await _place_with(
            client, ParentOrderWorkflow.run, parent, ParentOrderWorkflow.placement,
            order_id, task_queue, request_token,
        )  # fmt: skip
    if legs is not None:
        # A bracket, OCO or OTO: BracketWorkflow works it, with the same `placement` update.
        bracket = BracketWorkflowInput(request=request, legs=legs, options=options)
        return await _place_with(
            client, BracketWorkflow.run, bracket, BracketWorkflow.placement,
            order_id, task_queue, request_token,
        )  # fmt: skip
    single = OrderWorkflowInput(request=request, options=options)
    return await _place_with(
        client, OrderWorkflow.run, single, OrderWorkflow.placement,
        order_id, task_queue, request_token,
    )  # fmt: skip


async def _place_with(
    client: Client,
    run: Callable[[Any, Any], Awaitable[Any]],
    workflow_input: Any,
    placement: UpdateMethodMultiParam[[Any, str], Any],
    order_id: UUID,
    task_queue: str,
    request_token: str,
) -> Placement:
    """The one update-with-start every order class is placed with: start (or join) the
    workflow `run` under the order's workflow id and ask its `placement` update."""
    start = WithStartWorkflowOperation(
        run,
        workflow_input,
        id=workflow_id_for(order_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    call = client.execute_update_with_start_workflow(
        placement, request_token, start_workflow_operation=start
    )
    # cast: the SDK types an async update's result as its coroutine
    return cast(Placement, await _forgetting_the_start(start, call))


async def protect_position(
    client: Client,
    portfolio_id: UUID,
    symbol: str,
    check_seconds: int,
    options: OrderWorkflowOptions,
    task_queue: str,
) -> str:
    """Make sure the position's guard runs (ProtectionWorkflow) and has it look at the
    levels now: signal-with-start, so a running guard is told and an ended one replaced.
    The levels themselves are on the position's row (protection_activities.set_levels).
    Returns the guard's workflow id."""
    workflow_id = protection_workflow_id(portfolio_id, symbol)
    await client.start_workflow(
        ProtectionWorkflow.run,
        ProtectionInput(portfolio_id, symbol, check_seconds, options=options),
        id=workflow_id,
        task_queue=task_queue,
        start_signal="levels_changed",
    )
    return workflow_id


async def cancel_order(client: Client, order_id: UUID, reason: str) -> OrderSnapshot:
    """Cancel through the order's workflow (OrderWorkflow.cancel) and answer with the
    resulting status: canceled, or pending_cancel while the broker has not confirmed."""
    handle = client.get_workflow_handle(workflow_id_for(order_id))
    result = await handle.execute_update(OrderWorkflow.cancel, CancelRequest(reason=reason))
    return cast(OrderSnapshot, result)


@dataclass(frozen=True)
class CancelOutcome:
    """What one order of a cancel-all came to: `status` is the order's status after the
    cancel (canceled, pending_cancel while the broker has not confirmed, or the terminal
    status it reached first); `delivered` is False only when the cancel could not be
    handed to the order's workflow at all (retry the cancel-all)."""

    order_id: UUID
    status: OrderStatus
    delivered: bool = True


async def cancel_open_orders(
    client: Client,
    pool: asyncpg.Pool,
    portfolio_id: UUID,
    reason: str,
    *,
    wait_seconds: float,
    concurrency: int = 20,
) -> list[CancelOutcome]:
    """Cancel every open order of a portfolio (the API's DELETE /orders), oldest first.

    Each order gets the `cancel` update (OrderWorkflow.cancel), waited for at most
    `wait_seconds`; when it does not answer in time, the `cancel_request` signal is sent
    instead, which the workflow keeps durably, so the cancel still happens. An order that
    closed meanwhile is reported with its terminal status. Safe to repeat: a cancel of a
    canceling or closed order changes nothing."""
    async with UnitOfWork(pool) as uow:
        orders = await uow.orders.active(portfolio_id)
    orders.sort(key=lambda order: (order.created_at, str(order.order_id)))
    gate = asyncio.Semaphore(concurrency)

    async def one(order: OrderSnapshot) -> CancelOutcome:
        async with gate:
            return await _cancel_one(client, pool, order, reason, wait_seconds)

    return list(await asyncio.gather(*(one(order) for order in orders)))


async def _cancel_one(
    client: Client, pool: asyncpg.Pool, order: OrderSnapshot, reason: str, wait_seconds: float
) -> CancelOutcome:
    try:
        async with asyncio.timeout(wait_seconds):
            result = await cancel_order(client, order.order_id, reason)
        return CancelOutcome(result.order_id, result.status)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        delivered = await _cancel_by_signal(client, order.order_id, reason)
    except (WorkflowUpdateFailedError, RPCError):
        # Refused (already terminal) or the workflow closed: the store says how it ended.
        delivered = False
    async with UnitOfWork(pool) as uow:
        now = await uow.orders.find(order.order_id)
    status = now.status if now is not None else order.status
    if status.is_terminal:
        return CancelOutcome(order.order_id, status)
    if not delivered:
        delivered = await _cancel_by_signal(client, order.order_id, reason)
    return CancelOutcome(order.order_id, status, delivered=delivered)


async def _cancel_by_signal(client: Client, order_id: UUID, reason: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id_for(order_id)).signal(
            OrderWorkflow.cancel_request, CancelRequest(reason=reason)
        )
    except RPCError as err:
        log.warning("cancel of %s could not be delivered: %s", order_id, err)
        return False
    return True


async def set_trading_state(
    client: Client,
    pool: asyncpg.Pool,
    portfolio_id: UUID,
    state: TradingState,
    reason: str,
    *,
    task_queue: str = TASK_QUEUE,
) -> TradingStateChange:
    """Move a portfolio to ACTIVE, REDUCING or HALTED; answers once the state is stored.
    HALTED goes on to cancel the orders listed in the answer, durably, in the portfolio's
    TradingStateWorkflow. Raises NotFoundError for an unknown portfolio."""
    if await pool.fetchval("SELECT 1 FROM portfolios WHERE id = $1", portfolio_id) is None:
        raise NotFoundError(f"portfolio {portfolio_id} not found")
    start = WithStartWorkflowOperation(
        TradingStateWorkflow.run,
        TradingStateWorkflowInput(portfolio_id),
        id=trading_state_workflow_id(portfolio_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    request = TradingStateRequest(TradingState(state), reason)
    call = client.execute_update_with_start_workflow(
        TradingStateWorkflow.set_state, request, start_workflow_operation=start
    )
    return cast(TradingStateChange, await _forgetting_the_start(start, call))


async def reconcile_order(client: Client, order_id: UUID) -> None:
    """Make one order's workflow re-read its broker status now. Raises RPCError (NOT_FOUND)
    when the workflow has closed: a finished order has nothing left to read."""
    await client.get_workflow_handle(workflow_id_for(order_id)).signal(OrderWorkflow.reconcile)


async def reconcile_open_orders(client: Client, pool: asyncpg.Pool) -> int:
    """Tell the workflow of every open order to re-read the broker; returns how many took it.
    Used after a broker's trade stream reconnects: updates sent meanwhile are not replayed."""
    sent = 0
    for order_id in await open_order_ids(pool):  # every one, not a page of the newest
        try:
            await reconcile_order(client, order_id)
            sent += 1
        except RPCError as err:
            log.warning("could not tell order %s to re-read the broker: %s", order_id, err)
    return sent
