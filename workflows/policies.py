"""Timeouts and retries of every kind of activity call, and the one helper that makes a call.

Workflows call activities by method reference (`call(OrderActivities.accept_order, ...)`),
so go-to-definition leads to the activity; the name Temporal records is the one the
activity registers under (contracts.names.ActivityName).

The workflows import this module passed through their sandbox, as Temporal advises for
deterministic helpers in files of their own: it holds constants and one function that only
asks the running workflow to schedule a call, so there is nothing to isolate, and it is not
re-executed for every workflow run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts.names import NON_RETRYABLE

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class CallPolicy:
    """Timeouts and retries of one kind of activity call."""

    start_to_close: timedelta
    retry: RetryPolicy
    schedule_to_close: timedelta | None = None
    # A worker that dies mid-attempt is noticed after this long without a heartbeat rather
    # than at the end of start_to_close; the worker heartbeats for every attempt that runs
    # longer than a third of it (bootstrap/heartbeat.py), so a live one is never cut off.
    heartbeat: timedelta | None = timedelta(seconds=5)
    # Set for a short, idempotent step against our own store or quote source that may run
    # as a local activity (`call(..., local=True)`): one attempt's start-to-close there.
    # Kept short, because a running local activity holds its workflow task open (the task
    # is its lease; see `call`).
    local_start_to_close: timedelta | None = None


QUOTE = CallPolicy(
    timedelta(seconds=10),
    RetryPolicy(maximum_attempts=5, non_retryable_error_types=NON_RETRYABLE),
    local_start_to_close=timedelta(seconds=5),
)
# The store must not lose a decision or a fill: retry for as long as the database is away,
# backing off to one attempt a minute.
STORE = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(minutes=1), non_retryable_error_types=NON_RETRYABLE),
    local_start_to_close=timedelta(seconds=10),
)
# Broker calls retry inside a window of two minutes; a window that ends without an answer
# makes the order workflow mark the broker unreachable and wait before the next window
# (OrderWorkflow._until_the_broker_answers), for as long as the outage lasts. A submit is
# safe to retry: the adapter looks the order up by client order id first.
SUBMIT = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30), non_retryable_error_types=NON_RETRYABLE),
    schedule_to_close=timedelta(minutes=2),
)
BROKER_QUERY = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30), non_retryable_error_types=NON_RETRYABLE),
    schedule_to_close=timedelta(minutes=2),
)
QUICK = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30)),
    schedule_to_close=timedelta(minutes=10),
)
# Reading every open order and position at the broker can take a while (Alpaca pages and
# rate-limits); a broker that is away for an hour fails the run, and the report says so.
BROKER_SWEEP = CallPolicy(
    timedelta(minutes=5),
    RetryPolicy(maximum_interval=timedelta(minutes=1)),
    schedule_to_close=timedelta(hours=1),
)


# A failed local activity attempt is retried inside the worker, within the still-open
# workflow task, only while its backoff is at most this long; a longer backoff ends the task
# and waits on a durable timer (the SDK's default threshold is one minute). Below the first
# retry interval of every local policy (1 s), so no retry ever sleeps inside a workflow task:
# a database outage is waited out on timers, exactly as a regular activity's retries are,
# and a server that skips time (the test server) can skip those waits. Must be positive:
# the SDK treats a zero threshold as unset.
LOCAL_RETRY_THRESHOLD = timedelta(milliseconds=500)


async def call(
    activity: Callable[[Any, A], Awaitable[R]], arg: A, policy: CallPolicy, *, local: bool = False
) -> R:
    """Run the activity method `activity` (of an activity class) with `policy`.

    With `local` and a policy that has a `local_start_to_close`, the call is a local
    activity: the worker runs it inside the workflow task that asked for it, with no round
    trip through the server's task queues, and records its result as a marker in the
    history. What that changes for the step, and why only idempotent steps may be local:

    * Lease: a local activity has no server-side lease; the open workflow task is its lease.
      If the worker dies mid-step, the task times out and the next worker runs the step
      again from the last recorded marker, so the step may run twice.
    * Heartbeat: none of its own. While a step runs longer than most of the workflow task
      timeout, the worker completes the task and asks for a new one to keep it alive.
    * Retry: the workflow's retry policy applies, attempt by attempt. Every backoff is
      longer than LOCAL_RETRY_THRESHOLD, so each retry waits on a durable timer between
      workflow tasks; a task is never held open for a backoff.
    * Cache: the run must stay in the worker's workflow cache while its step runs. A worker
      with no cache (max_cached_workflows=0) evicts it and loses the task until the task
      timeout; such workers run their orders with OrderWorkflowOptions.local_store_steps
      off.

    A local activity's own failure (ApplicationError) reaches the workflow unwrapped, where
    a regular activity's arrives as the cause of an ActivityError: it is wrapped here the
    same way, so callers handle both kinds of step with one `except ActivityError`.
    """
    if local and policy.local_start_to_close is not None:
        try:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=policy.local_start_to_close,
                schedule_to_close_timeout=policy.schedule_to_close,
                retry_policy=policy.retry,
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            )
        except ApplicationError as err:
            raise ActivityError(
                str(err),
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=getattr(activity, "__name__", str(activity)),
                activity_id="",
                retry_state=None,
            ) from err
    return await workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=policy.start_to_close,
        schedule_to_close_timeout=policy.schedule_to_close,
        heartbeat_timeout=policy.heartbeat,
        retry_policy=policy.retry,
    )
