"""Heartbeats on an activity's behalf, so an attempt cut off by a dead worker is retried in
seconds rather than at the end of its start-to-close timeout.

Temporal learns that a worker died only from silence: without heartbeats, an attempt that
was running in a SIGKILLed worker is retried when its whole start-to-close timeout has run
out (30 s for a store step or a broker call, which must cover a slow statement, the broker
client's own timeout and a rate-limit wait). Every call policy therefore sets a short
heartbeat timeout (workflows/policies.py), and this worker interceptor heartbeats while the
attempt runs.

The first heartbeat is sent only after a third of the heartbeat timeout, then one every
third: the usual step takes milliseconds and so costs no heartbeat RPC at all; a long one
(a broker call waiting on a slow venue, a store step waiting on a pool) tells the server
its worker is alive. The activities stay unaware of it: a broker call is one HTTP request
and cannot report progress, only that the process running it lives, which is what this
says. A live attempt whose event loop is blocked past the timeout is retried; every
activity is idempotent, so the retry is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor


class HeartbeatInterceptor(Interceptor):
    """A worker interceptor: heartbeat every activity attempt that has a heartbeat timeout."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Heartbeating(next)


class _Heartbeating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        timeout = info.heartbeat_timeout
        if info.is_local or not timeout:
            return await self.next.execute_activity(input)
        beat = asyncio.create_task(_beat(max(timeout.total_seconds() / 3, 0.05)))
        try:
            return await self.next.execute_activity(input)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


async def _beat(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        activity.heartbeat()
