"""Heartbeats for every activity that asks for them, so a dead worker is noticed in seconds.

An activity attempt cut off by a worker crash is otherwise retried only when its whole
start-to-close timeout has run out (30 s for a broker call, which must cover the broker
client's own timeout and a rate-limit wait). The broker call policies set a short heartbeat
timeout instead (workflows/policies.py); this interceptor heartbeats on the activity's
behalf while the attempt runs, at a third of that timeout, so a live attempt is never cut
off and a dead one is retried after the heartbeat timeout.

The activities themselves stay unaware of it: a broker call is one HTTP request that cannot
report progress, only that the process running it is alive, which is what this says.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class HeartbeatInterceptor(Interceptor):
    """A worker interceptor: heartbeat every activity that has a heartbeat timeout."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Heartbeating(next)


class _Heartbeating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        timeout = info.heartbeat_timeout
        if info.is_local or not timeout:
            return await self.next.execute_activity(input)
        beat = asyncio.create_task(_beat(max(timeout.total_seconds() / 3, 0.1)))
        try:
            return await self.next.execute_activity(input)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


async def _beat(every: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)
