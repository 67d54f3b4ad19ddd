"""Reconnect pacing for the long-lived loops Temporal does not run: vendor streams, the
paper venue's matching loop and the outbox relay. Activities never use it: Temporal's retry
policies pace them."""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before reconnect number `failures` (1, 2, ...): exponential with equal jitter.

    Half of each delay is fixed and half random, so a fleet of workers that lost the same
    server comes back spread out, not in step.
    """
    ceiling = min(cap, base * (1 << min(30, max(0, failures - 1))))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, but return as soon as `stop` is set."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
