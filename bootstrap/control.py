"""Client-side calls into the workflows, shared by the API and the operator commands: place
and cancel an order, change a portfolio's trading state, and tell orders to re-read the
broker. Each names the workflow method it drives, so go-to-definition leads there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, cast
from uuid import UUID

import asyncpg
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from activities.store.repositories import NotFoundError, UnitOfWork
from contracts.payloads import (
    TASK_QUEUE,
    CancelRequest,
    OrderRequest,
    OrderSnapshot,
    OrderWorkflowInput,
    OrderWorkflowOptions,
    Placement,
    TradingStateChange,
    TradingStateRequest,
    TradingStateWorkflowInput,
    trading_state_workflow_id,
    workflow_id_for,
)
from domain.portfolio import TradingState
from workflows.operations import TradingStateWorkflow
from workflows.order import OrderWorkflow

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
) -> Placement:
    """Start the order's workflow, or join the one already running for this order id, and
    answer with risk's decision (OrderWorkflow.placement): accepted or rejected, and
    whether this request (`request_token`) is the one that placed it.

    A workflow that already closed refuses the start (REJECT_DUPLICATE): the caller reads
    the order from the store instead (WorkflowAlreadyStartedError or ALREADY_EXISTS)."""
    start = WithStartWorkflowOperation(
        OrderWorkflow.run,
        OrderWorkflowInput(request=request, options=options),
        id=workflow_id_for(request.order_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    call = client.execute_update_with_start_workflow(
        OrderWorkflow.placement, request_token, start_workflow_operation=start
    )
    # cast: the SDK types an async update's result as its coroutine
    return cast(Placement, await _forgetting_the_start(start, call))


async def cancel_order(client: Client, order_id: UUID, reason: str) -> OrderSnapshot:
    """Cancel through the order's workflow (OrderWorkflow.cancel) and answer with the
    resulting status: canceled, or pending_cancel while the broker has not confirmed."""
    handle = client.get_workflow_handle(workflow_id_for(order_id))
    result = await handle.execute_update(OrderWorkflow.cancel, CancelRequest(reason=reason))
    return cast(OrderSnapshot, result)


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
    async with UnitOfWork(pool) as uow:
        orders = await uow.orders.active()
    sent = 0
    for order in orders:
        try:
            await reconcile_order(client, order.order_id)
            sent += 1
        except RPCError as err:
            log.warning("could not tell order %s to re-read the broker: %s", order.order_id, err)
    return sent
