"""BracketWorkflow: a bracket (an entry, then a take-profit and a stop-loss that cancel each
other), an OCO (two exit legs on a held position) or an OTO (an entry, then one exit leg).
The parent is an order row of its own (`order_class`); its entry and legs are ordinary
orders, each with its own `order-{id}` OrderWorkflow (a child workflow) naming the parent.

quote -> risk + the parent's reservation (the entry's, or an OCO's claim on the position)
-> the entry takes the parent's reservation and goes through risk (one transaction), its
workflow starts -> every `check_seconds` the parent reads its orders from the store: when
the entry has filled more than the legs cover, a new group of legs is placed for the
difference (so legs exist only for filled shares, and a partial fill gets legs of its
size); a group's legs are one OCO group at the paper venue (a fill cancels the others in the
same transaction), and the parent also cancels a group's other legs once one has filled,
whatever the broker -> when the entry and every leg have ended, the parent closes (filled
when the entry, or an OCO's exit, filled completely; else canceled).

Cancel (the `cancel` update or the `cancel_request` signal, as on an OrderWorkflow, so the
API's DELETE, cancel-all and the kill switch reach it the same way) cancels the entry and
every open leg and places no further leg. Every id is derived from the parent's, and every
step is a command in this history or idempotent on that id, so a crash neither loses nor
doubles an order. The state lives in the store, so the loop continues as new every
CONTINUE_AS_NEW_AFTER checks without carrying anything.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.order import OrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.bracket_activities import BracketActivities
    from activities.order_activities import OrderActivities
    from activities.parent_activities import ParentActivities
    from contracts.names import ErrorType
    from contracts.payloads import (
        AcceptInput,
        BracketProgressInput,
        BracketWorkflowInput,
        CancelRequest,
        OrderRequest,
        OrderSnapshot,
        OrderWorkflowInput,
        PlaceChildInput,
        PlaceLegsInput,
        Placement,
        entry_client_order_id,
        leg_client_order_id,
        leg_role,
        oco_group_for,
        order_id_for,
        workflow_id_for,
    )
    from domain.market import Quote
    from domain.orders import OrderClass, OrderSide, OrderStatus, OrderType
    from workflows.policies import QUICK, QUOTE, STORE, call

CONTINUE_AS_NEW_AFTER = 500


@workflow.defn(name="BracketWorkflow")
class BracketWorkflow:
    def __init__(self) -> None:
        self._order: OrderSnapshot | None = None
        self._decided = False
        self._placed_by: str | None = None
        self._cancel_requested = False
        self._cancel_reason = "canceled by client"
        self._asked: set[UUID] = set()  # children already told to cancel
        self._wake = False

    @workflow.run
    async def run(self, input: BracketWorkflowInput) -> OrderSnapshot:
        request = input.request
        if input.resumed:
            self._order = await call(
                BracketActivities.sync_bracket, BracketProgressInput(request.order_id), STORE
            )
            self._decided = True
        else:
            await self._decide(request)
        if self._current.is_terminal:
            return self._current
        has_entry = request.order_class is not OrderClass.OCO
        for _ in range(CONTINUE_AS_NEW_AFTER):
            self._wake = False
            children = await call(BracketActivities.bracket_children, request.order_id, QUICK)
            entry = next(
                (
                    c
                    for c in children
                    if c.client_order_id == entry_client_order_id(request.order_id)
                ),
                None,
            )
            groups = _groups(request.order_id, children)
            if has_entry and entry is None and not self._cancel_requested:
                await self._place_entry(input)
                continue
            filled = request.quantity
            if has_entry:
                filled = entry.filled_quantity if entry is not None else Decimal(0)
            covered = sum(
                (max(leg.quantity for leg in legs) for legs in groups.values()), Decimal(0)
            )
            if filled > covered and not self._cancel_requested:
                await self._place_group(input, len(groups) + 1, filled - covered)
                continue
            await self._one_cancels_other(groups)
            if self._cancel_requested:
                for child in children:
                    if not child.is_terminal:
                        await self._cancel_child(child.order_id)
            await self._progress(request, entry, children)
            entry_done = not has_entry or entry is None or entry.is_terminal
            if entry_done and all(child.is_terminal for child in children):
                return await self._close(request)
            try:
                await workflow.wait_condition(
                    lambda: self._wake,
                    timeout=timedelta(seconds=input.check_seconds),
                )
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(replace(input, resumed=True))

    async def _decide(self, request: OrderRequest) -> None:
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

    async def _place_entry(self, input: BracketWorkflowInput) -> None:
        parent = input.request
        client_order_id = entry_client_order_id(parent.order_id)
        entry = OrderRequest(
            order_id=order_id_for(parent.portfolio_id, client_order_id),
            portfolio_id=parent.portfolio_id,
            client_order_id=client_order_id,
            symbol=parent.symbol,
            side=parent.side,
            quantity=parent.quantity,
            order_type=parent.order_type,
            time_in_force=parent.time_in_force,
            limit_price=parent.limit_price,
            parent_order_id=parent.order_id,
        )
        quote: Quote = await call(OrderActivities.get_quote, parent.symbol, QUOTE)
        placed = await call(
            ParentActivities.place_child_order,
            PlaceChildInput(parent.order_id, entry, quote.bid, quote.ask),
            STORE,
        )
        if not placed.is_terminal:
            await self._start(entry, input)

    async def _place_group(self, input: BracketWorkflowInput, group: int, size: Decimal) -> None:
        """Exit legs for `size` more shares: a take-profit limit and/or a stop-loss."""
        parent = input.request
        exit_side = parent.side
        if parent.order_class is not OrderClass.OCO:
            exit_side = OrderSide.SELL if parent.side is OrderSide.BUY else OrderSide.BUY
        plan = input.legs
        both = plan.take_profit_limit is not None and plan.stop_loss_stop is not None
        oco_group = oco_group_for(parent.order_id, group) if both else None
        legs: list[OrderRequest] = []

        def leg(
            role: str, order_type: OrderType, limit: Decimal | None, stop: Decimal | None
        ) -> None:
            client_order_id = leg_client_order_id(parent.order_id, role, group)
            legs.append(
                OrderRequest(
                    order_id=order_id_for(parent.portfolio_id, client_order_id),
                    portfolio_id=parent.portfolio_id,
                    client_order_id=client_order_id,
                    symbol=parent.symbol,
                    side=exit_side,
                    quantity=size,
                    order_type=order_type,
                    time_in_force=parent.time_in_force,
                    limit_price=limit,
                    stop_price=stop,
                    parent_order_id=parent.order_id,
                    oco_group=oco_group,
                )
            )

        if plan.take_profit_limit is not None:
            leg("tp", OrderType.LIMIT, plan.take_profit_limit, None)
        if plan.stop_loss_stop is not None:
            kind = OrderType.STOP if plan.stop_loss_limit is None else OrderType.STOP_LIMIT
            leg("sl", kind, plan.stop_loss_limit, plan.stop_loss_stop)
        quote: Quote = await call(OrderActivities.get_quote, parent.symbol, QUOTE)
        placed = await call(
            BracketActivities.place_legs,
            PlaceLegsInput(parent.order_id, legs, quote.bid, quote.ask),
            STORE,
        )
        decided = {snapshot.order_id: snapshot for snapshot in placed}
        for request in legs:
            snapshot = decided.get(request.order_id)
            if snapshot is not None and not snapshot.is_terminal:
                await self._start(request, input)

    async def _start(self, request: OrderRequest, input: BracketWorkflowInput) -> None:
        await workflow.start_child_workflow(
            OrderWorkflow.run,
            OrderWorkflowInput(request=request, options=input.options),
            id=workflow_id_for(request.order_id),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )

    async def _one_cancels_other(self, groups: dict[int, list[OrderSnapshot]]) -> None:
        """Whatever the broker: once a leg of a group has filled (even partly), the group's
        other legs are canceled (the paper venue has done so already, in the same pass)."""
        for legs in groups.values():
            if any(leg.filled_quantity > 0 for leg in legs):
                for leg in legs:
                    if leg.filled_quantity == 0 and not leg.is_terminal:
                        await self._cancel_child(leg.order_id, "one-cancels-other")

    async def _progress(
        self, request: OrderRequest, entry: OrderSnapshot | None, children: list[OrderSnapshot]
    ) -> None:
        if request.order_class is OrderClass.OCO:
            filled = sum((c.filled_quantity for c in children), Decimal(0))
        else:
            filled = entry.filled_quantity if entry is not None else Decimal(0)
        if min(filled, request.quantity) != self._current.filled_quantity:
            self._order = await call(
                BracketActivities.sync_bracket, BracketProgressInput(request.order_id), STORE
            )

    async def _close(self, request: OrderRequest) -> OrderSnapshot:
        reason = self._cancel_reason if self._cancel_requested else "not every share filled"
        self._order = await call(
            BracketActivities.sync_bracket,
            BracketProgressInput(request.order_id, final=OrderStatus.CANCELED, reason=reason),
            STORE,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._current

    async def _cancel_child(self, child_id: UUID, reason: str | None = None) -> None:
        if child_id in self._asked:
            return
        self._asked.add(child_id)
        handle = workflow.get_external_workflow_handle(workflow_id_for(child_id))
        try:
            await handle.signal(
                OrderWorkflow.cancel_request, CancelRequest(reason or self._cancel_reason)
            )
        except FailureError as err:  # it closed meanwhile: nothing left to cancel
            workflow.logger.info("order %s did not take the cancel: %s", child_id, err)

    # -- cancel: the same update and signal as OrderWorkflow's -----------------------------

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> OrderSnapshot:
        """Cancel the entry and every open leg, and answer once the parent has closed."""
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
        self._wake = True

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
        """Sent to every open order after the broker's stream reconnects: the parent holds
        nothing at the broker (its entry and legs re-read theirs)."""

    @workflow.query(name="order")
    def order(self) -> OrderSnapshot | None:
        return self._order

    @property
    def _current(self) -> OrderSnapshot:
        assert self._order is not None, "the order is read only after the decision"
        return self._order


def _groups(parent_order_id: UUID, children: list[OrderSnapshot]) -> dict[int, list[OrderSnapshot]]:
    """The exit legs by group number (from their client order ids: `{parent}-tp{n}`)."""
    groups: dict[int, list[OrderSnapshot]] = {}
    prefix = len(str(parent_order_id)) + 3
    for child in children:
        if leg_role(parent_order_id, child.client_order_id) is not None:
            groups.setdefault(int(child.client_order_id[prefix:]), []).append(child)
    return groups


def _error_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


__all__ = ["BracketWorkflow"]
