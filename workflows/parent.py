"""ParentOrderWorkflow: an execution algorithm (TWAP, VWAP) working one parent order as a
series of child orders, each an ordinary OrderWorkflow (`order-{child id}`) naming its
parent.

quote -> risk + the parent's reservation of the whole quantity (one transaction, as any
order) -> the slices' sizes (equal for TWAP, by the bars' volume profile for VWAP) -> for
each slice, at its time (durable timers): the child's row takes the slice's share of the
parent's reservation and goes through risk (one transaction), then its workflow starts ->
as children end, their fills are summed onto the parent -> when every child has ended the
parent closes (filled, or canceled with what did fill) and releases what is left.

No slice is lost or sent twice across crashes: a slice's child id is derived from the
parent id and the slice number (`child_client_order_id`), placing it is idempotent on that
id, and starting its workflow is a command in this history, so a replay after a crash
neither repeats nor skips it. Cancel (the `cancel` update or the `cancel_request` signal,
as on an OrderWorkflow, so the API's DELETE, cancel-all and the kill switch reach it the
same way) stops the unsent slices and cancels the working children.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
)

from workflows.order import OrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.order_activities import OrderActivities
    from activities.parent_activities import ParentActivities
    from contracts.names import ErrorType
    from contracts.payloads import (
        AcceptInput,
        CancelRequest,
        OrderRequest,
        OrderSnapshot,
        OrderWorkflowInput,
        ParentProgressInput,
        ParentWorkflowInput,
        PlaceChildInput,
        Placement,
        VolumeProfileInput,
        child_client_order_id,
        order_id_for,
        workflow_id_for,
    )
    from domain.market import Quote
    from domain.orders import OrderClass, OrderStatus, split_quantity
    from workflows.policies import QUICK, QUOTE, STORE, call


@workflow.defn(name="ParentOrderWorkflow")
class ParentOrderWorkflow:
    def __init__(self) -> None:
        self._order: OrderSnapshot | None = None
        self._decided = False
        self._placed_by: str | None = None
        self._cancel_requested = False
        self._cancel_reason = "canceled by client"
        self._working: dict[UUID, workflow.ChildWorkflowHandle[OrderWorkflow, OrderSnapshot]] = {}
        self._ended = 0  # children ended since the parent's row was last brought up to date
        self._slices_sent = 0

    @workflow.run
    async def run(self, input: ParentWorkflowInput) -> OrderSnapshot:
        order = await self._decide(input.request)
        if order.is_terminal:
            return order
        plan = input.plan
        if plan.algorithm is OrderClass.VWAP:
            weights = await call(
                ParentActivities.volume_profile,
                VolumeProfileInput(input.request.symbol, plan.slices),
                QUICK,
            )
        else:
            weights = [Decimal(1)] * plan.slices
        sizes = split_quantity(input.request.quantity, weights)
        interval = timedelta(seconds=plan.duration_seconds) / plan.slices
        start = workflow.now()
        for index, size in enumerate(sizes):
            if not await self._until(start + interval * index):
                break  # canceled: the slices not yet sent are never sent
            if size > 0:
                await self._send(input, index, size)
        await workflow.wait_condition(lambda: not self._working)
        return await self._close(len(sizes))

    async def _decide(self, request: OrderRequest) -> OrderSnapshot:
        accept = AcceptInput(request=request)
        try:
            quote: Quote = await call(OrderActivities.get_quote, request.symbol, QUOTE)
            accept.bid, accept.ask = quote.bid, quote.ask
        except ActivityError as err:
            if _error_type(err) != ErrorType.SYMBOL_NOT_FOUND:
                raise
            accept.rejection_code = "SYMBOL_NOT_FOUND"
            accept.rejection_reason = f"unknown symbol {request.symbol}"
        self._order = await call(OrderActivities.accept_order, accept, STORE)
        self._decided = True
        return self._order

    async def _until(self, due: datetime) -> bool:
        """Sleep until `due`, bringing the parent up to date as children end; False once a
        cancel was asked for."""
        while not self._cancel_requested:
            if self._ended:
                await self._sync()
                continue
            left = due - workflow.now()
            if left <= timedelta(0):
                return True
            try:
                await workflow.wait_condition(
                    lambda: self._cancel_requested or self._ended > 0, timeout=left
                )
            except TimeoutError:
                return True
        return False

    async def _send(self, input: ParentWorkflowInput, index: int, size: Decimal) -> None:
        parent = input.request
        client_order_id = child_client_order_id(parent.order_id, index)
        child = OrderRequest(
            order_id=order_id_for(parent.portfolio_id, client_order_id),
            portfolio_id=parent.portfolio_id,
            client_order_id=client_order_id,
            symbol=parent.symbol,
            side=parent.side,
            quantity=size,
            order_type=parent.order_type,
            time_in_force=parent.time_in_force,
            limit_price=parent.limit_price,
            parent_order_id=parent.order_id,
        )
        quote: Quote = await call(OrderActivities.get_quote, parent.symbol, QUOTE)
        placed = await call(
            ParentActivities.place_child_order,
            PlaceChildInput(parent.order_id, child, quote.bid, quote.ask),
            STORE,
        )
        self._slices_sent += 1
        if placed.is_terminal:  # refused by risk: this slice's quantity is not traded
            workflow.logger.info("parent %s: slice %d refused", parent.order_id, index + 1)
            return
        handle = await workflow.start_child_workflow(
            OrderWorkflow.run,
            OrderWorkflowInput(request=child, options=input.options),
            id=workflow_id_for(child.order_id),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
        self._working[child.order_id] = handle
        asyncio.create_task(self._follow(child.order_id, handle))  # noqa: RUF006
        if self._cancel_requested:
            await self._cancel_child(child.order_id)

    async def _follow(
        self, child_id: UUID, handle: workflow.ChildWorkflowHandle[OrderWorkflow, OrderSnapshot]
    ) -> None:
        try:
            await handle
        except ChildWorkflowError as err:  # compensated: the store holds its final state
            workflow.logger.warning("child order %s failed: %s", child_id, err)
        del self._working[child_id]
        self._ended += 1

    async def _sync(self) -> None:
        self._ended = 0
        self._order = await call(
            ParentActivities.sync_parent_order,
            ParentProgressInput(self._current.order_id),
            STORE,
        )

    async def _close(self, slices: int) -> OrderSnapshot:
        final = OrderStatus.CANCELED
        if self._cancel_requested:
            reason = self._cancel_reason
        else:
            reason = f"{slices} slices worked; not every share filled"
        self._order = await call(
            ParentActivities.sync_parent_order,
            ParentProgressInput(self._current.order_id, final=final, reason=reason),
            STORE,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._current

    # -- cancel: the same update and signal as OrderWorkflow's -----------------------------

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> OrderSnapshot:
        """Stop the unsent slices, cancel the working children, and answer once the
        parent has closed with what its children filled."""
        await self._cancel(request)
        await workflow.wait_condition(lambda: self._current.is_terminal)
        return self._current

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._order is not None and self._order.is_terminal:
            raise ValueError(f"order is already {self._order.status.value}")
        if not request.reason:
            raise ValueError("a cancel needs a reason")

    @workflow.signal(name="cancel_request")
    async def cancel_request(self, request: CancelRequest) -> None:
        """Cancel without waiting (kill switch, cancel-all): a closed parent ignores it."""
        if self._order is not None and self._order.is_terminal:
            return
        await self._cancel(request)

    async def _cancel(self, request: CancelRequest) -> None:
        await workflow.wait_condition(lambda: self._decided)
        if self._current.is_terminal or self._cancel_requested:
            return
        self._cancel_requested = True
        self._cancel_reason = request.reason
        for child_id in list(self._working):
            await self._cancel_child(child_id)

    async def _cancel_child(self, child_id: UUID) -> None:
        handle = self._working.get(child_id)
        if handle is None:
            return
        try:
            await handle.signal(OrderWorkflow.cancel_request, CancelRequest(self._cancel_reason))
        except FailureError as err:  # it closed meanwhile: nothing left to cancel
            workflow.logger.info("child order %s did not take the cancel: %s", child_id, err)

    # -- placing and reading, as on an OrderWorkflow ----------------------------------------

    @workflow.update(name="placement")
    async def placement(self, request_token: str) -> Placement:
        """Risk's decision on the parent, for one placing request (see OrderWorkflow)."""
        await workflow.wait_condition(lambda: self._decided)
        if self._placed_by is None:
            self._placed_by = request_token
        return Placement(self._current, created=self._placed_by == request_token)

    @workflow.update(name="decision")
    async def decision(self) -> OrderSnapshot:
        await workflow.wait_condition(lambda: self._decided)
        return self._current

    @workflow.signal(name="reconcile")
    def reconcile(self) -> None:
        """Sent to every open order after the broker's stream reconnects: a parent holds
        nothing at the broker (its children re-read theirs), so there is nothing to do."""

    @workflow.query(name="order")
    def order(self) -> OrderSnapshot | None:
        return self._order

    @workflow.query(name="progress")
    def progress(self) -> dict[str, int]:
        return {"slices_sent": self._slices_sent, "children_working": len(self._working)}

    @property
    def _current(self) -> OrderSnapshot:
        assert self._order is not None, "the order is read only after the decision"
        return self._order


def _error_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


__all__ = ["ParentOrderWorkflow"]
