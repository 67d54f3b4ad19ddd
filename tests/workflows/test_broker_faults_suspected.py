"""Issue 11, "suspected from reading": the order workflow items, each proven or refuted on
the time-skipping server with the real store, paper venue and outbox.

Proven: a DAY order whose cancel at the close is pending re-sent DELETE every grace
period (fixed: one DELETE, then reads, patch `expiry-waits-for-pending-cancel`); a submit
attempt still in flight could land after compensation recorded `rejected` (fixed: the
compensation waits out the in-flight grace and asks again, patch
`compensation-checks-late-submit`). Refuted: continue-as-new drops a pending reconcile or
the cancel reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta

import pytest

from contracts.payloads import CancelRequest, OrderWorkflowInput, OrderWorkflowOptions
from contracts.ports import BrokerRejectedError
from domain.orders import OrderStatus
from workflows.order import OrderWorkflow

from .harness import Stack, running_stack, terminal
from .test_broker_faults import BrokerLink

pytestmark = pytest.mark.integration


async def until(condition, timeout: float = 15.0) -> None:
    """Wait in real time (no time skipping) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.01)


# -- 3. _expire and an asynchronous cancel ---------------------------------------------------


class AsyncCancel(BrokerLink):
    """Alpaca's cancel: DELETE answers at once and the order sits in pending_cancel until
    the exchange confirms, which here happens only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = False
        self.confirmed = False

    async def cancel(self, client_order_id):
        self._through("cancel")
        if self.confirmed:
            return await self.venue.cancel(client_order_id)
        self.pending = True
        state = await self.venue.get_order(client_order_id)
        return dataclasses.replace(state, status=OrderStatus.PENDING_CANCEL)

    async def get_order(self, client_order_id):
        self._through("get_order")
        if self.pending and not self.confirmed:
            state = await self.venue.get_order(client_order_id)
            return dataclasses.replace(state, status=OrderStatus.PENDING_CANCEL)
        return await self.venue.get_order(client_order_id)


async def test_a_day_order_whose_cancel_at_the_close_is_pending_sends_delete_once(
    own_temporal_env, db_pool
):
    """Proves "`_expire` re-sends DELETE every few seconds while Alpaca's cancel is
    asynchronous": ten minutes of pending_cancel after the close cost ~120 DELETEs
    (Alpaca allows 200 requests a minute for the whole account)."""
    link = AsyncCancel()
    quiet = OrderWorkflowOptions(poll_interval_seconds=3600, max_poll_interval_seconds=3600)
    async with running_stack(own_temporal_env, db_pool, broker=link.broker, options=quiet) as stack:
        stack.feed.set_quote("JPM", "200.00", "200.02")
        decided = await stack.place("JPM", "5", order_type="limit", limit="150.00", tif="day")
        await stack.wait_for(decided.order_id, terminal(OrderStatus.SUBMITTED))
        assert decided.expires_at is not None
        now = await stack.env.get_current_time()
        await stack.env.sleep(decided.expires_at - now + timedelta(seconds=1))
        for _ in range(5):  # ten minutes at the close, the cancel still pending
            await stack.env.sleep(timedelta(minutes=2))
        waiting = await stack.order(decided.order_id)
        assert not waiting.is_terminal  # the broker has not confirmed: it stays open
        assert link.calls["cancel"] <= 2, f"{link.calls['cancel']} DELETEs while pending"

        link.confirmed = True  # the exchange confirms the cancel
        await stack.venue.cancel(str(decided.order_id))
        await stack.env.sleep(timedelta(minutes=15))
        closed = await stack.wait_for(decided.order_id, lambda o: o.is_terminal)
        assert closed.status in (OrderStatus.EXPIRED, OrderStatus.CANCELED)
        assert (await stack.portfolio_now()).reservations == {}


# -- 4. a submit attempt still in flight when the order is recorded rejected ------------------


class LateLanding(BrokerLink):
    """The first submit's request reaches the broker late: the client gave up on it and a
    look-up found nothing yet; the retry is refused outright. The first request lands
    right after compensation's cancel has looked for the order and not found it."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = None
        self.landed = False

    async def submit(self, request):
        self.calls["submit"] += 1
        if self.calls["submit"] == 1:
            self.in_flight = request
            raise TimeoutError("no answer; a look-up finds no such order yet")
        raise BrokerRejectedError("insufficient buying power")

    async def cancel(self, client_order_id):
        self.calls["cancel"] += 1
        try:
            return await self.venue.cancel(client_order_id)
        finally:
            if self.in_flight is not None and not self.landed:
                self.landed = True
                await self.venue.submit(self.in_flight)  # the first attempt lands now


async def test_a_submit_attempt_landing_after_a_refused_retry_is_not_left_working(
    own_temporal_env, db_pool
):
    """Proves "a submit attempt still running lands after compensation has recorded
    `rejected`, leaving an untracked live order"."""
    link = LateLanding()
    async with running_stack(own_temporal_env, db_pool, broker=link.broker) as stack:
        stack.feed.set_quote("AMD", "159.98", "160.00")
        decided = await stack.place("AMD", "4", order_type="limit", limit="150.00", tif="gtc")
        result = await stack.result(decided.order_id)
        at_venue = await stack.venue.get_order(str(decided.order_id))
        # The books may close the order only once the broker has closed it too.
        assert at_venue.status.is_terminal, f"working at the venue, {result.status} in the books"
        assert (await stack.portfolio_now()).reservations == {}


# -- 5. continue-as-new carries a pending reconcile request and the cancel reason -------------


class Held(BrokerLink):
    """Every get_order waits until the test lets it answer; a cancel is accepted as
    pending (asynchronous, as at Alpaca) and confirmed only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Semaphore(0)
        self.cancels_pending = False
        self.confirmed = False

    async def get_order(self, client_order_id):
        self.calls["get_order"] += 1
        await self.go.acquire()
        state = await self.venue.get_order(client_order_id)
        if self.cancels_pending and not self.confirmed:
            return dataclasses.replace(state, status=OrderStatus.PENDING_CANCEL)
        return state

    async def cancel(self, client_order_id):
        self.calls["cancel"] += 1
        if self.confirmed:
            return await self.venue.cancel(client_order_id)
        self.cancels_pending = True
        state = await self.venue.get_order(client_order_id)
        return dataclasses.replace(state, status=OrderStatus.PENDING_CANCEL)


async def continued_as_new_with(stack: Stack, order_id) -> OrderWorkflowInput | None:
    """The input the order's first run continued as new with, or None if it has not."""
    first = stack.handle(order_id)
    history = await stack.env.client.get_workflow_handle(
        first.id, run_id=first.result_run_id
    ).fetch_history()
    for event in history.events:
        if event.HasField("workflow_execution_continued_as_new_event_attributes"):
            attributes = event.workflow_execution_continued_as_new_event_attributes
            (decoded,) = await stack.env.client.data_converter.decode(
                attributes.input.payloads, [OrderWorkflowInput]
            )
            return decoded
    return None


async def test_continue_as_new_carries_a_pending_reconcile_request_and_the_cancel_reason(
    own_temporal_env, db_pool
):
    """Refutes "continue-as-new drops a pending reconcile request and the cancel reason":
    a reconcile signal that arrives while a poll is in flight is still pending at the
    continue-as-new; the next run carries it (and the cancel reason) and re-reads the broker
    at once, with no time passing."""
    link = Held()
    options = OrderWorkflowOptions(
        poll_interval_seconds=60, max_poll_interval_seconds=60, max_history_events=60
    )
    async with running_stack(
        own_temporal_env, db_pool, broker=link.broker, options=options
    ) as stack:
        stack.feed.set_quote("MSFT", "399.98", "400.00")
        decided = await stack.place("MSFT", "5", order_type="limit", limit="380.00", tif="gtc")
        await stack.wait_for(decided.order_id, terminal(OrderStatus.SUBMITTED))
        handle = stack.handle(decided.order_id)
        first_run = stack.handle(decided.order_id).result_run_id
        await handle.signal(OrderWorkflow.cancel_request, CancelRequest("operator: stop it"))
        await stack.wait_for(decided.order_id, terminal(OrderStatus.PENDING_CANCEL))
        await stack.env.sleep(timedelta(seconds=61))  # the first idle poll
        carried, released = None, 0
        for _ in range(100):  # each poll: a reconcile arrives while it is in flight
            await until(lambda n=released: link.calls["get_order"] > n)
            await handle.signal(OrderWorkflow.reconcile)
            link.go.release()
            released += 1
            # Then either the run continues as new, or the pending reconcile polls again.
            deadline = time.monotonic() + 15
            while link.calls["get_order"] <= released and time.monotonic() < deadline:
                carried = await continued_as_new_with(stack, decided.order_id)
                if carried is not None:
                    break
                await asyncio.sleep(0.01)
            if carried is not None:
                break
        assert carried is not None and carried.resume is not None
        assert carried.resume.reconcile_requested
        assert carried.resume.cancel_reason == "operator: stop it"
        assert carried.resume.snapshot.status is OrderStatus.PENDING_CANCEL
        assert (await handle.describe()).run_id != first_run

        # The next run re-reads the broker at once (no time passes here)...
        await until(lambda: link.calls["get_order"] > released)
        # ...and when the exchange confirms the cancel, the order closes.
        link.confirmed = True
        await stack.venue.cancel(str(decided.order_id))
        for _ in range(20):
            link.go.release()
        await handle.signal(OrderWorkflow.reconcile)
        closed = await stack.wait_for(decided.order_id, terminal(OrderStatus.CANCELED))
        assert closed.filled_quantity == 0
        assert (await stack.portfolio_now()).reservations == {}
