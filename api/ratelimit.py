"""Rate limits: token buckets per portfolio and route class, shared by every API process
(in PostgreSQL), and per client address for requests that fail to authenticate (in this
process, checked before any key lookup).

A bucket holds `max_requests + burst_allowance` tokens and refills at
`max_requests / window_seconds` a second; a request takes one token or is refused with 429
and `Retry-After` (whole seconds until the next token).

* `SharedRateLimiter`: the bucket is keyed by the caller's **portfolio**, so every key of a
  portfolio draws from one bucket and N API processes give a portfolio its limit once,
  not N times. One statement per request (`api_take_token`, migration 0009) refills and
  takes under the bucket's row lock.
* `RateLimiter`: the same buckets in this process's memory (the address guard, tests).
* `AddressGuard`: each request that fails authentication (missing, malformed, stale,
  unknown or wrong signature, replay) takes a token from its client address's bucket;
  while that bucket is empty every /api/v1 request from the address answers 429 before
  the key is looked up. Signed traffic never spends these tokens. Per process: an
  attacker spread over N API processes gets N buckets, which is still a bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from api.errors import ApiError
from bootstrap.settings import RateLimitRule
from domain.errors import ErrorCode

# Failed authentications per client address: 50 at once, then 5 a second.
UNAUTHENTICATED = RateLimitRule(max_requests=50, window_seconds=10)
MAX_ADDRESSES = 10_000  # buckets kept for addresses; idle (full) ones are dropped first


@dataclass
class _Bucket:
    tokens: float
    updated: float


def _capacity_and_rate(rule: RateLimitRule) -> tuple[float, float]:
    return float(rule.max_requests + rule.burst_allowance), rule.max_requests / rule.window_seconds


def retry_after(seconds: float) -> int:
    """Whole seconds to wait for a token (at least 1)."""
    return max(1, math.ceil(seconds))


class RateLimiter:
    """Token buckets in this process, keyed by (bucket, route class)."""

    def __init__(
        self,
        rules: dict[str, RateLimitRule],
        monotonic: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_ADDRESSES,
    ) -> None:
        self.rules = rules
        self._monotonic = monotonic
        self._max_buckets = max_buckets
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Handlers run on one event loop, but the sync test client and threads may share it.
        self._lock = threading.Lock()

    def acquire(self, key_id: str, route_class: str) -> int:
        """Take a token; returns 0 when allowed, else the seconds to wait (Retry-After)."""
        return self._use(key_id, route_class, take=True)

    def peek(self, key_id: str, route_class: str) -> int:
        """0 when a token is there (none taken), else the seconds until there is one."""
        return self._use(key_id, route_class, take=False)

    async def take(self, bucket: str, route_class: str) -> int:
        return self.acquire(bucket, route_class)

    def _use(self, key_id: str, route_class: str, *, take: bool) -> int:
        capacity, rate = _capacity_and_rate(self.rules[route_class])
        now = self._monotonic()
        with self._lock:
            bucket = self._buckets.get((key_id, route_class))
            if bucket is None:
                if not take:
                    return 0
                self._make_room(now)
                bucket = self._buckets[(key_id, route_class)] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                if take:
                    bucket.tokens -= 1
                return 0
            return retry_after((1 - bucket.tokens) / rate)

    def _make_room(self, now: float) -> None:
        """Bound the memory: past `max_buckets`, drop the buckets that have refilled (a
        fresh one is the same), then the oldest."""
        if len(self._buckets) < self._max_buckets:
            return
        for name, bucket in list(self._buckets.items()):
            capacity, rate = _capacity_and_rate(self.rules[name[1]])
            if bucket.tokens + (now - bucket.updated) * rate >= capacity:
                del self._buckets[name]
        while len(self._buckets) >= self._max_buckets:
            del self._buckets[next(iter(self._buckets))]


class AddressGuard:
    """Failed authentications per client address (see the module docstring)."""

    ROUTE_CLASS = "unauthenticated"

    def __init__(
        self, rule: RateLimitRule = UNAUTHENTICATED, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.limiter = RateLimiter({self.ROUTE_CLASS: rule}, monotonic)

    def blocked(self, address: str) -> int:
        """0 when the address may try, else the seconds until it may."""
        return self.limiter.peek(address, self.ROUTE_CLASS)

    def failed(self, address: str) -> None:
        self.limiter.acquire(address, self.ROUTE_CLASS)


class SharedRateLimiter:
    """Token buckets in PostgreSQL, shared by every API process (migration 0009)."""

    def __init__(self, pool: asyncpg.Pool, rules: dict[str, RateLimitRule]) -> None:
        self.pool = pool
        self.rules = rules

    async def take(self, bucket: str, route_class: str) -> int:
        """Take a token of `bucket` (a portfolio id); 0 when allowed, else Retry-After."""
        capacity, rate = _capacity_and_rate(self.rules[route_class])
        wait = await self.pool.fetchval(
            "SELECT api_take_token($1, $2, $3, $4)", bucket, route_class, capacity, rate
        )
        return 0 if wait == 0 else retry_after(float(wait))


class Limiter(Protocol):
    rules: dict[str, RateLimitRule]

    async def take(self, bucket: str, route_class: str) -> int: ...


def rate_limit_exceeded(
    route_class: str,
    wait: int,
    rule: RateLimitRule | None,
    scope: str = "portfolio",
    what: str | None = None,
) -> ApiError:
    """429 with Retry-After and the limit that applies (its scope, rate and burst)."""
    details: dict[str, object] = {
        "route_class": route_class,
        "retry_after_seconds": wait,
        "scope": scope,
    }
    if rule is not None:
        details |= {
            "max_requests": rule.max_requests,
            "window_seconds": rule.window_seconds,
            "burst_allowance": rule.burst_allowance,
        }
    if what is None:
        what = "failed authentications" if scope == "address" else route_class
    if scope == "address":
        what += " from this address"
    return ApiError(
        429,
        ErrorCode.RATE_LIMIT_EXCEEDED,
        f"rate limit of {what} exceeded; retry in {wait} s",
        details,
        headers={"Retry-After": str(wait)},
    )
