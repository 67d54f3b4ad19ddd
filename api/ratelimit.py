"""Per-key rate limits per route class: token buckets held in this process.

Each (API key, route class) has a bucket of `max_requests + burst_allowance` tokens that
refills at `max_requests / window_seconds` a second; a request takes one token or is
refused with 429 and `Retry-After` (whole seconds until the next token).

The buckets live in the API process: with N API processes behind a balancer a key gets up
to N times its limit. That is the accepted trade for not paying a database round trip
per request; the replay guard, which must hold across processes, is in PostgreSQL.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bootstrap.settings import RateLimitRule


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rules: dict[str, RateLimitRule],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self._monotonic = monotonic
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Handlers run on one event loop, but the sync test client and threads may share it.
        self._lock = threading.Lock()

    def acquire(self, key_id: str, route_class: str) -> int:
        """Take a token; returns 0 when allowed, else the seconds to wait (Retry-After)."""
        rule = self.rules[route_class]
        capacity = rule.max_requests + rule.burst_allowance
        rate = rule.max_requests / rule.window_seconds  # tokens per second
        now = self._monotonic()
        with self._lock:
            bucket = self._buckets.get((key_id, route_class))
            if bucket is None:
                bucket = self._buckets[(key_id, route_class)] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0
            return max(1, math.ceil((1 - bucket.tokens) / rate))
