"""Timeouts and retries of every kind of activity call, and the one helper that makes a call.

Workflows call activities by method reference (`call(OrderActivities.accept_order, ...)`),
so go-to-definition leads to the activity; the name Temporal records is the one the
activity registers under (contracts.names.ActivityName).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as StepTimeoutError

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
    # May run as a local activity: a short step against our own store or quote source,
    # idempotent, that needs no routing, rate limit or server-side lease of its own.
    local: bool = False
    # A worker that dies mid-attempt is noticed after this long without a heartbeat, instead
    # of at the end of start_to_close (the worker heartbeats for the activity while it runs:
    # bootstrap/heartbeat.py).
    heartbeat: timedelta | None = None


QUOTE = CallPolicy(
    timedelta(seconds=10),
    RetryPolicy(maximum_attempts=5, non_retryable_error_types=NON_RETRYABLE),
    local=True,
)
# The store must not lose a decision or a fill: retry for as long as the database is away,
# backing off to one attempt a minute.
STORE = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(minutes=1), non_retryable_error_types=NON_RETRYABLE),
    local=True,
)
# Broker calls retry inside a window of two minutes; a window that ends without an answer
# makes the order workflow mark the broker unreachable and wait before the next window
# (OrderWorkflow._until_the_broker_answers), for as long as the outage lasts. A submit is
# safe to retry: the adapter looks the order up by client order id first.
BROKER_HEARTBEAT = timedelta(seconds=5)
SUBMIT = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30), non_retryable_error_types=NON_RETRYABLE),
    schedule_to_close=timedelta(minutes=2),
    heartbeat=BROKER_HEARTBEAT,
)
BROKER_QUERY = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30), non_retryable_error_types=NON_RETRYABLE),
    schedule_to_close=timedelta(minutes=2),
    heartbeat=BROKER_HEARTBEAT,
)
QUICK = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30)),
    schedule_to_close=timedelta(minutes=10),
    heartbeat=BROKER_HEARTBEAT,
)
# Reading every open order and position at the broker can take a while (Alpaca pages and
# rate-limits); a broker that is away for an hour fails the run, and the report says so.
BROKER_SWEEP = CallPolicy(
    timedelta(minutes=5),
    RetryPolicy(maximum_interval=timedelta(minutes=1)),
    schedule_to_close=timedelta(hours=1),
    heartbeat=timedelta(seconds=30),
)


# A local activity retries inside the workflow task up to this long; a longer backoff
# (a database outage) becomes a durable timer, so the task is not held open for it.
LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)


async def call(
    activity: Callable[[Any, A], Awaitable[R]], arg: A, policy: CallPolicy, *, local: bool = False
) -> R:
    """Run the activity method `activity` (of an activity class) with `policy`.

    With `local` and a policy that allows it, the call is a local activity: the worker runs
    it in the workflow task that asked for it, with no round trip through the server's
    task queues (its result is recorded as a marker in the history). A local activity has
    no lease of its own: the workflow task is its lease. If the worker dies mid-step, the
    task times out and the next worker runs the step again, which is why only idempotent
    steps may be local; a running local activity keeps the task alive by heartbeating it.
    """
    if local and policy.local:
        try:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=policy.start_to_close,
                schedule_to_close_timeout=policy.schedule_to_close,
                retry_policy=policy.retry,
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            )
        except (ApplicationError, StepTimeoutError) as err:
            # A local activity's failure arrives unwrapped; wrap it as a regular activity's
            # is, so callers handle both kinds of step with one `except ActivityError`.
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
