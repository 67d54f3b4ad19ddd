"""The worker heartbeats for a long activity attempt (bootstrap/heartbeat.py), so call
policies can carry a short heartbeat timeout: a dead worker's attempt is retried after it,
while a live attempt that runs longer than it is never cut off.

On the real Temporal dev server, which enforces heartbeat timeouts as production does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.worker import Worker

from bootstrap.heartbeat import HeartbeatInterceptor
from bootstrap.temporal import connect
from worker.devserver import DevServer
from workflows.policies import STORE, SUBMIT

HEARTBEAT = timedelta(seconds=2)
STEP_SECONDS = 5.0  # well past the heartbeat timeout, well inside start-to-close


@activity.defn
async def slow_step(seconds: float) -> int:
    """Sleeps, never heartbeating itself; returns the attempt that finished."""
    await asyncio.sleep(seconds)
    return activity.info().attempt


@workflow.defn(sandboxed=False)
class SlowStep:
    @workflow.run
    async def run(self, seconds: float) -> int:
        return await workflow.execute_activity(
            slow_step,
            seconds,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@pytest.fixture(scope="module")
async def dev_client() -> AsyncIterator[Client]:
    async with DevServer(port=0, ui_port=None, db_file=None) as server:
        yield await connect(server.address)


async def run_slow_step(client: Client, interceptors: list[HeartbeatInterceptor]) -> int:
    queue = f"heartbeat-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SlowStep],
        activities=[slow_step],
        interceptors=interceptors,
    ):
        return await client.execute_workflow(
            SlowStep.run, STEP_SECONDS, id=f"slow-{queue}", task_queue=queue
        )


async def test_a_step_longer_than_its_heartbeat_timeout_finishes_in_one_attempt(
    dev_client: Client,
) -> None:
    assert await run_slow_step(dev_client, [HeartbeatInterceptor()]) == 1


async def test_without_the_worker_heartbeating_the_same_step_is_timed_out(
    dev_client: Client,
) -> None:
    """The control: the server does enforce the heartbeat timeout, so the test above
    passes because the worker heartbeats, not because nothing is checked."""
    with pytest.raises(WorkflowFailureError) as failure:
        await run_slow_step(dev_client, [])
    cause = failure.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, TimeoutError)
    assert cause.cause.type == TimeoutType.HEARTBEAT


def test_store_and_broker_calls_carry_a_heartbeat_timeout_shorter_than_start_to_close() -> None:
    for policy in (STORE, SUBMIT):
        assert policy.heartbeat is not None
        assert policy.heartbeat < policy.start_to_close
