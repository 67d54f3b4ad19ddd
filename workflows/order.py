"""OrderWorkflow: the saga of one order, from risk check to its terminal state.

quote -> risk + reservation + persist (one transaction) -> submit (client order id = our
order id) -> broker events as signals, de-duplicated by execution id, with polling when
they stop -> each fill applied in one transaction -> terminal: reservation released.
Any failure after submit cancels at the broker and releases the reservation.

Broker faults never close an order the broker may hold. The order is closed in the books
only when the broker says it is closed, or provably never received it (it answers that it
does not know the client order id). An outage of any length, on submit, poll or cancel,
makes the order wait and try again with a capped backoff (`_until_the_broker_answers`),
visible while it lasts: the `BrokerStatus` search attribute reads `unreachable` and the
order row's `broker_unreachable_since` is set (`trading orders stuck` lists it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.order_activities import OrderActivities
    from contracts.names import ErrorType
    from contracts.payloads import (
        AcceptInput,
        ApplyFillInput,
        BrokerEvent,
        BrokerEventType,
        BrokerOrderState,
        BrokerReachability,
        CancelRequest,
        OrderSnapshot,
        OrderWorkflowInput,
        Placement,
        RecordStatusInput,
        ResumeState,
    )
    from domain.market import Quote  # passed through: activity results decode into it
    from domain.orders import OrderStatus
    from workflows.policies import BROKER_QUERY, QUOTE, STORE, SUBMIT, CallPolicy, call

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
SYMBOL = SearchAttributeKey.for_keyword("Symbol")
PORTFOLIO_ID = SearchAttributeKey.for_keyword("PortfolioId")
BROKER_STATUS = SearchAttributeKey.for_keyword("BrokerStatus")  # reachable | unreachable
SEARCH_ATTRIBUTES = (ORDER_STATUS, SYMBOL, PORTFOLIO_ID, BROKER_STATUS)

# Patch ids (workflow.patched): orders in flight under older code replay their old path.
OUTAGES_WAIT = "broker-outages-wait"  # an outage waits instead of compensating
EXPIRY_CANCEL_PENDING = "expiry-waits-for-pending-cancel"  # one DELETE at the close, then reads
LATE_SUBMIT_CHECK = "compensation-checks-late-submit"  # a refused submit may have landed
# Quote, accept, status, reachability, fills run as local activities (see `_local`). New id:
# "local-store-steps" named an earlier version that was withdrawn before it shipped.
LOCAL_STEPS = "local-store-steps-v2"
# After the broker was unreachable, wait this long before asking whether it has the order:
# every submit attempt ends within its start-to-close timeout (and the broker client's own
# timeout is shorter), so no attempt still in flight can land after the answer.
IN_FLIGHT_GRACE = timedelta(seconds=60)
OUTAGE_BACKOFF_FIRST = timedelta(seconds=30)
OUTAGE_BACKOFF_CAP = timedelta(minutes=10)

R = TypeVar("R")
A = TypeVar("A")


def _newer(current: OrderSnapshot | None, candidate: OrderSnapshot) -> OrderSnapshot:
    """Activities run concurrently (the cancel update, the main loop); keep the latest row."""
    if current is None or candidate.version >= current.version:
        return candidate
    return current


@workflow.defn(name="OrderWorkflow")
class OrderWorkflow:
    def __init__(self) -> None:
        self._order: OrderSnapshot | None = None
        self._events: list[BrokerEvent] = []
        self._applied: set[str] = set()
        self._decided = False
        self._submitted = False
        self._cancel_requested = False
        self._canceling = False
        self._cancel_reason = "canceled by client"
        self._reconcile_requested = False
        self._idle_polls = 0  # polls in a row that found nothing new
        self._marked_unreachable = False  # the order row says the broker is unreachable
        self._placed_by: str | None = None  # the placing request answered first
        # The short store steps run as local activities (patch LOCAL_STEPS): quote, accept,
        # record_status, record_broker_reachability and apply_fill. Each is safe there
        # because it is idempotent (the docstrings in activities/order_activities.py say
        # how; a fill is booked once per execution id): a local activity has no lease of
        # its own, so a worker that dies mid-step makes the next worker run it again, and
        # its retries wait on durable timers between workflow tasks (workflows/policies.
        # call). Fill signals that arrive while one runs are buffered by the server and
        # delivered with the next task. Broker calls stay regular activities: they need
        # their own retry windows, rate limits and worker routing, and a broker that hangs
        # must not hold a workflow task open.
        self._local = False

    # -- the saga ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: OrderWorkflowInput) -> OrderSnapshot:
        # Decided once, before the first command: an order started under older code replays
        # its regular activities to the end; a new one (and each of its continued runs) runs
        # its short store steps as local activities, so the risk decision is made, and the
        # placing update answered, in the very first workflow task (a rejection also closes
        # the workflow in that task). A worker without a workflow cache opts out with
        # options.local_store_steps (see OrderWorkflowOptions).
        self._local = workflow.patched(LOCAL_STEPS) and input.options.local_store_steps
        if input.resume is not None:
            self._resume(input.resume)
        else:
            order = await self._decide(input)
            if order.status is OrderStatus.REJECTED or order.is_terminal:
                return order
            try:
                await self._submit(input)
            except ActivityError as err:
                return await self._compensate(f"submit failed: {_cause(err)}", rejected=True)
        try:
            return await self._work(input)
        except ActivityError as err:
            await self._compensate(f"order workflow failed after submit: {_cause(err)}")
            raise ApplicationError(
                f"order {input.request.order_id} compensated: {_cause(err)}",
                type=ErrorType.ORDER_COMPENSATED,
                non_retryable=True,
            ) from err

    async def _decide(self, input: OrderWorkflowInput) -> OrderSnapshot:
        request = input.request
        accept = AcceptInput(request=request)
        try:
            quote: Quote = await call(
                OrderActivities.get_quote, request.symbol, QUOTE, local=self._local
            )
            accept.bid, accept.ask = quote.bid, quote.ask
        except ActivityError as err:
            if _error_type(err) != ErrorType.SYMBOL_NOT_FOUND:
                raise
            accept.rejection_code = "SYMBOL_NOT_FOUND"
            accept.rejection_reason = f"unknown symbol {request.symbol}"
        order = await call(OrderActivities.accept_order, accept, STORE, local=self._local)
        self._set_order(order)
        self._decided = True
        return order

    async def _submit(self, input: OrderWorkflowInput) -> None:
        if self._cancel_requested:
            await self._record(OrderStatus.CANCELED, reason=self._cancel_reason)
            return
        result = await self._until_the_broker_answers(
            OrderActivities.submit_order, input.request, SUBMIT, give_up=self._submit_moot
        )
        if result is None:
            await self._close_if_never_received()
            return
        await self._record(OrderStatus.SUBMITTED, broker_order_id=result.broker_order_id)
        self._submitted = True

    def _submit_moot(self) -> bool:
        """While the broker is unreachable, a submit stops being worth retrying once the
        order was canceled or its session closed: then we only ask what the broker holds."""
        expires_at = self._current.expires_at
        expired = expires_at is not None and workflow.now() >= expires_at
        return self._cancel_requested or expired

    async def _close_if_never_received(self) -> None:
        """The submit was given up during an outage (canceled, or expired meanwhile). An
        attempt may still have landed: wait until none can be in flight, then ask the
        broker. Unknown there: it never received the order, which closes here. Known: it
        is live, and the main loop handles it as submitted (cancel or expire at the broker)."""
        await workflow.sleep(IN_FLIGHT_GRACE)
        try:
            state = await self._until_the_broker_answers(
                OrderActivities.get_broker_order, str(self._current.order_id), BROKER_QUERY
            )
        except ActivityError as err:
            if _error_type(err) != ErrorType.ORDER_NOT_FOUND:
                raise
            if self._cancel_requested:
                await self._record(OrderStatus.CANCELED, reason=self._cancel_reason)
            else:
                await self._record(
                    OrderStatus.EXPIRED, reason="the session closed before the broker answered"
                )
            return
        assert state is not None
        await self._record(OrderStatus.SUBMITTED, broker_order_id=state.broker_order_id)
        self._submitted = True
        await self._apply_state(state)

    async def _work(self, input: OrderWorkflowInput) -> OrderSnapshot:
        options = input.options
        while not self._current.is_terminal:
            if self._cancel_requested and self._current.status is OrderStatus.ACCEPTED:
                await self._record(OrderStatus.CANCELED, reason=self._cancel_reason)
                break
            if self._should_continue_as_new(options.max_history_events):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    OrderWorkflowInput(
                        request=input.request,
                        options=options,
                        resume=ResumeState(
                            snapshot=self._current,
                            applied_execution_ids=sorted(self._applied),
                            pending_events=list(self._events),
                            cancel_requested=self._cancel_requested,
                            idle_polls=self._idle_polls,
                            cancel_reason=self._cancel_reason,
                            reconcile_requested=self._reconcile_requested,
                        ),
                    )
                )
            poll_every = timedelta(
                seconds=min(
                    options.poll_interval_seconds * 2**self._idle_polls,
                    options.max_poll_interval_seconds,
                )
            )
            timeout = poll_every
            expires_at = self._current.expires_at
            if expires_at is not None:
                until_expiry = expires_at - workflow.now()
                timeout = max(timedelta(seconds=0), min(poll_every, until_expiry))
            try:
                await workflow.wait_condition(
                    lambda: bool(self._events) or self._reconcile_requested, timeout=timeout
                )
            except TimeoutError:
                if expires_at is not None and workflow.now() >= expires_at:
                    await self._expire(options.expiry_grace_seconds)
                else:
                    version = self._current.version
                    await self._poll_broker()
                    if self._current.version == version:
                        self._idle_polls = min(self._idle_polls + 1, 16)
                continue
            self._idle_polls = 0
            await self._drain_events()
            if self._reconcile_requested and not self._current.is_terminal:
                await self._poll_broker()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._marked_unreachable:  # closed by the broker's own events meanwhile
            await self._broker_reachable(True)
        return self._current

    # -- broker events ----------------------------------------------------------------------

    @workflow.signal(name="broker_event")
    def broker_event(self, event: BrokerEvent) -> None:
        if event.execution_id is not None and event.execution_id in self._applied:
            return  # a duplicate delivery; nothing to do
        self._events.append(event)

    async def _drain_events(self) -> None:
        while self._events:
            event = self._events.pop(0)
            await self._handle(event)

    async def _handle(self, event: BrokerEvent) -> None:
        order = self._current
        if event.event.is_fill:
            if event.execution_id is None or event.execution_id in self._applied:
                return
            fill = ApplyFillInput(order_id=order.order_id, fill=event)
            snapshot = await call(OrderActivities.apply_fill, fill, STORE, local=self._local)
            self._applied.add(event.execution_id)
            self._set_order(snapshot)
        elif event.event.is_terminal and not order.is_terminal:
            if event.cumulative_quantity is not None and (
                event.cumulative_quantity > order.filled_quantity
            ):
                # The broker filled more than we have applied: fetch the missing executions
                # before closing the order, so a lost fill event never loses a fill.
                await self._poll_broker(interruptible=False)
                if self._current.is_terminal:
                    return
            status = {
                BrokerEventType.CANCELED: OrderStatus.CANCELED,
                BrokerEventType.EXPIRED: OrderStatus.EXPIRED,
                BrokerEventType.REJECTED: OrderStatus.REJECTED,
            }[event.event]
            await self._record(status, reason=event.reason, code="BROKER_" + status.name)
        elif event.event is BrokerEventType.NEW and not self._submitted and event.broker_order_id:
            await self._record(OrderStatus.SUBMITTED, broker_order_id=event.broker_order_id)
            self._submitted = True

    async def _poll_broker(self, interruptible: bool = True) -> None:
        """Ask the broker for the order's state and apply whatever the events missed.

        While the broker is unreachable, an interruptible poll stops waiting as soon as
        events get through, so the main loop applies them instead of sitting in a backoff."""
        self._reconcile_requested = False
        broker_id = str(self._current.order_id)
        state = await self._until_the_broker_answers(
            OrderActivities.get_broker_order,
            broker_id,
            BROKER_QUERY,
            give_up=(lambda: bool(self._events)) if interruptible else None,
        )
        if state is not None:
            await self._apply_state(state)

    async def _apply_state(self, state: BrokerOrderState) -> None:
        for execution in state.executions:
            await self._handle(execution)
        terminal = {
            OrderStatus.CANCELED: BrokerEventType.CANCELED,
            OrderStatus.EXPIRED: BrokerEventType.EXPIRED,
            OrderStatus.REJECTED: BrokerEventType.REJECTED,
        }.get(state.status)
        if terminal is not None and not self._current.is_terminal:
            await self._record(
                state.status, reason=state.reason, code="BROKER_" + state.status.name
            )
        elif (
            state.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)
            and self._current.status is OrderStatus.PENDING_CANCEL
            and not self._cancel_requested
        ):
            await self._record(state.status)  # the broker refused the cancel

    async def _expire(self, grace_seconds: int) -> None:
        """The session closed: a DAY order still open at the broker is canceled there."""
        await workflow.sleep(timedelta(seconds=grace_seconds))  # let the venue expire it
        await self._drain_events()
        if self._current.is_terminal:
            return
        state = await self._cancel_at_broker()
        for execution in state.executions:
            await self._handle(execution)
        if state.status is OrderStatus.PENDING_CANCEL and workflow.patched(EXPIRY_CANCEL_PENDING):
            # The broker cancels asynchronously (Alpaca answers pending_cancel): read until
            # it closes the order rather than sending the cancel again every grace period.
            state = await self._while_cancel_pending(state)
        if not self._current.is_terminal:
            if state.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
                await self._record(OrderStatus.EXPIRED, reason="expired at the session close")
            else:
                await self._apply_state(state)

    # -- cancel (an update: the caller gets the resulting status) ----------------------------

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> OrderSnapshot:
        """Cancel and answer with the resulting status (the API's DELETE)."""
        return await self._cancel(request)

    @workflow.signal(name="cancel_request")
    async def cancel_request(self, request: CancelRequest) -> None:
        """Cancel without waiting for the answer (kill switch, operators). A terminal order
        ignores it: a signal has no validator to refuse it with."""
        if self._order is not None and self._order.is_terminal:
            return
        await self._cancel(request)

    async def _cancel(self, request: CancelRequest) -> OrderSnapshot:
        await workflow.wait_condition(lambda: self._decided)
        if self._current.is_terminal:
            return self._current
        if self._canceling:  # a cancel is already on its way to the broker: share its answer
            await workflow.wait_condition(lambda: not self._canceling)
            return self._current
        self._canceling = True
        try:
            self._cancel_requested = True
            self._cancel_reason = request.reason
            if not self._submitted:
                # The main loop cancels before submitting, or right after the submit returns.
                await workflow.wait_condition(lambda: self._submitted or self._current.is_terminal)
                if self._current.is_terminal:
                    return self._current
            if self._current.status is not OrderStatus.PENDING_CANCEL:
                await self._record(OrderStatus.PENDING_CANCEL)
            try:
                state = await self._cancel_at_broker()
            except ActivityError as err:
                # The broker does not know the order: it never received it, so it closes
                # here (a signal handler that raised would fail the whole workflow).
                if _error_type(err) != ErrorType.ORDER_NOT_FOUND or not workflow.patched(
                    OUTAGES_WAIT
                ):
                    raise
                await self._record(
                    OrderStatus.CANCELED, reason=f"{request.reason}; not at the broker"
                )
                return self._current
            self._cancel_requested = False
            await self._apply_state(state)
            return self._current
        finally:
            self._canceling = False

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._order is not None and self._order.is_terminal:
            raise ValueError(f"order is already {self._order.status.value}")
        if not request.reason:
            raise ValueError("a cancel needs a reason")

    # -- queries and operator controls ------------------------------------------------------

    @workflow.update(name="decision")
    async def decision(self) -> OrderSnapshot:
        """Wait until risk has accepted or refused the order; the API answers with this."""
        await workflow.wait_condition(lambda: self._decided)
        return self._current

    @workflow.update(name="placement")
    async def placement(self, request_token: str) -> Placement:
        """Like `decision`, for one placing request named by `request_token`: the first
        request to be answered placed the order (created), every other one is a duplicate
        of it. The API answers 201 to the one and 200 to the others."""
        await workflow.wait_condition(lambda: self._decided)
        if self._placed_by is None:
            self._placed_by = request_token
        return Placement(self._current, created=self._placed_by == request_token)

    @workflow.query(name="order")
    def order(self) -> OrderSnapshot | None:
        return self._order

    @workflow.signal(name="reconcile")
    def reconcile(self) -> None:
        """Operator or reconciliation: re-read the broker's status now instead of waiting."""
        self._reconcile_requested = True

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _current(self) -> OrderSnapshot:
        assert self._order is not None, "the order is read only after the decision"
        return self._order

    def _set_order(self, snapshot: OrderSnapshot) -> None:
        previous = self._order.status if self._order is not None else None
        self._order = _newer(self._order, snapshot)
        if self._order.status is not previous:
            workflow.upsert_search_attributes(
                [
                    ORDER_STATUS.value_set(self._order.status.value),
                    SYMBOL.value_set(self._order.symbol),
                    PORTFOLIO_ID.value_set(str(self._order.portfolio_id)),
                ]
            )

    async def _record(
        self,
        status: OrderStatus,
        broker_order_id: str | None = None,
        reason: str | None = None,
        code: str | None = None,
    ) -> None:
        change = RecordStatusInput(
            order_id=self._current.order_id,
            status=status,
            broker_order_id=broker_order_id,
            reason=reason,
            code=code,
        )
        snapshot = await call(OrderActivities.record_status, change, STORE, local=self._local)
        self._set_order(snapshot)

    async def _cancel_at_broker(self) -> BrokerOrderState:
        """Cancel at the broker and return its state, however long the broker is away."""
        broker_id = str(self._current.order_id)  # our order id is the broker's client order id
        state = await self._until_the_broker_answers(
            OrderActivities.cancel_at_broker, broker_id, BROKER_QUERY
        )
        assert state is not None  # no give_up: it waits for an answer
        return state

    async def _until_the_broker_answers(
        self,
        activity: Callable[[Any, A], Awaitable[R]],
        arg: A,
        policy: CallPolicy,
        give_up: Callable[[], bool] | None = None,
    ) -> R | None:
        """Call the broker until it answers; None if `give_up()` says so between attempts.

        Each window of attempts (the policy's schedule-to-close) that ends without an
        answer marks the order unreachable and waits (30 s doubling to 10 min) before the
        next: an outage of any length is waited out, never turned into a compensation. A
        business refusal (non-retryable) is raised at once. Orders started under older
        code that had no such loop keep their path (patch OUTAGES_WAIT).
        """
        outages = 0
        while True:
            try:
                result = await call(activity, arg, policy)
            except ActivityError as err:
                if _is_business_refusal(err) or not workflow.patched(OUTAGES_WAIT):
                    raise
                outages += 1
                if not self._marked_unreachable:
                    await self._broker_reachable(False, _cause(err))
                if give_up is not None and give_up():
                    return None
                pause = min(OUTAGE_BACKOFF_FIRST * 2 ** min(outages - 1, 10), OUTAGE_BACKOFF_CAP)
                if give_up is None:
                    await workflow.sleep(pause)
                    continue
                try:  # a reason to give up (an event, a cancel) ends the pause early
                    await workflow.wait_condition(give_up, timeout=pause)
                    return None
                except TimeoutError:
                    continue
            if self._marked_unreachable:
                await self._broker_reachable(True)
            return result

    async def _broker_reachable(self, reachable: bool, why: str | None = None) -> None:
        self._marked_unreachable = not reachable
        if not reachable:
            workflow.logger.warning("order %s: broker unreachable: %s", self._current.order_id, why)
        workflow.upsert_search_attributes(
            [BROKER_STATUS.value_set("reachable" if reachable else "unreachable")]
        )
        since = None if reachable else workflow.now()
        await call(
            OrderActivities.record_broker_reachability,
            BrokerReachability(self._current.order_id, since, why),
            STORE,
            local=self._local,
        )

    def _resume(self, state: ResumeState) -> None:
        self._set_order(state.snapshot)
        self._applied = set(state.applied_execution_ids)
        self._events = list(state.pending_events)
        self._decided = True
        self._submitted = state.snapshot.broker_order_id is not None
        self._cancel_requested = state.cancel_requested
        self._idle_polls = state.idle_polls
        self._cancel_reason = state.cancel_reason
        self._reconcile_requested = state.reconcile_requested

    def _should_continue_as_new(self, max_events: int) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > max_events

    async def _until_closed_at_broker(self, state: BrokerOrderState) -> None:
        """A compensation's cancel is done only when the broker confirms the order closed
        (a broker may cancel asynchronously): re-read until it does, applying any fill."""
        wait = timedelta(seconds=5)
        while not state.status.is_terminal:
            await workflow.sleep(wait)
            wait = min(wait * 2, OUTAGE_BACKOFF_CAP)
            answer = await self._until_the_broker_answers(
                OrderActivities.get_broker_order, str(self._current.order_id), BROKER_QUERY
            )
            assert answer is not None
            state = answer
            for execution in state.executions:
                await self._handle(execution)

    async def _while_cancel_pending(self, state: BrokerOrderState) -> BrokerOrderState:
        """Re-read (backing off 5 s to 10 min) while the broker's cancel is pending, applying
        any fill; the broker's first answer that is not pending_cancel."""
        wait = timedelta(seconds=5)
        while state.status is OrderStatus.PENDING_CANCEL:
            await workflow.sleep(wait)
            wait = min(wait * 2, OUTAGE_BACKOFF_CAP)
            answer = await self._until_the_broker_answers(
                OrderActivities.get_broker_order, str(self._current.order_id), BROKER_QUERY
            )
            assert answer is not None
            state = answer
            for execution in state.executions:
                await self._handle(execution)
        return state

    async def _landed_late(self) -> BrokerOrderState | None:
        """After a refused submit, the broker did not know the order when we canceled it; an
        earlier attempt may still have been on its way. Wait until none can be in flight
        and ask again: the broker's state if it landed after all, else None."""
        await workflow.sleep(IN_FLIGHT_GRACE)
        try:
            return await self._until_the_broker_answers(
                OrderActivities.get_broker_order, str(self._current.order_id), BROKER_QUERY
            )
        except ActivityError as err:
            if _error_type(err) != ErrorType.ORDER_NOT_FOUND:
                raise
            return None

    async def _compensate(self, reason: str, rejected: bool = False) -> OrderSnapshot:
        """Undo what can be undone: cancel at the broker (the order may have landed) and
        close the order, which releases its reservation. What was filled stays filled."""
        order = self._current
        try:
            state = await self._cancel_at_broker()
            for execution in state.executions:
                await self._handle(execution)
            if workflow.patched(OUTAGES_WAIT):
                await self._until_closed_at_broker(state)
        except ActivityError as err:
            landed = None
            if (
                rejected
                and _error_type(err) == ErrorType.ORDER_NOT_FOUND
                and workflow.patched(LATE_SUBMIT_CHECK)
            ):
                landed = await self._landed_late()
            if landed is None:
                workflow.logger.warning(
                    "compensation: cancel at broker failed for %s", order.order_id
                )
            else:
                # It is live at the broker: track it, cancel it, and wait until it is closed.
                await self._record(OrderStatus.SUBMITTED, broker_order_id=landed.broker_order_id)
                self._submitted = True
                rejected = False
                state = await self._cancel_at_broker()
                for execution in state.executions:
                    await self._handle(execution)
                await self._until_closed_at_broker(state)
        if not self._current.is_terminal:
            status = (
                OrderStatus.REJECTED
                if rejected and not self._current.filled_quantity
                else (OrderStatus.CANCELED)
            )
            await self._record(status, reason=reason, code="COMPENSATED")
        return self._current


def _cause(err: BaseException) -> str:
    cause: BaseException | None = err
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause or err)


def _is_business_refusal(err: ActivityError) -> bool:
    """A non-retryable failure (a refusal, a validation error): not an outage to wait out."""
    cause: Any = err.cause
    return isinstance(cause, ApplicationError) and cause.non_retryable


def _error_type(err: ActivityError) -> str | None:
    cause: Any = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


__all__ = ["SEARCH_ATTRIBUTES", "OrderWorkflow"]
