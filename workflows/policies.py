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


QUOTE = CallPolicy(
    timedelta(seconds=10),
    RetryPolicy(maximum_attempts=5, non_retryable_error_types=NON_RETRYABLE),
)
# The store must not lose a decision or a fill: retry for as long as the database is away,
# backing off to one attempt a minute.
STORE = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(minutes=1), non_retryable_error_types=NON_RETRYABLE),
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


async def call(activity: Callable[[Any, A], Awaitable[R]], arg: A, policy: CallPolicy) -> R:
    """Run the activity method `activity` (of an activity class) with `policy`."""
    return await workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=policy.start_to_close,
        schedule_to_close_timeout=policy.schedule_to_close,
        heartbeat_timeout=policy.heartbeat,
        retry_policy=policy.retry,
    )
