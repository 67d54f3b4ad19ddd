"""The token buckets behind 429: burst, refill and Retry-After, on a fake clock."""

from __future__ import annotations

from api.ratelimit import RateLimiter
from bootstrap.settings import RateLimitRule


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock) -> RateLimiter:
    rule = RateLimitRule(max_requests=10, window_seconds=60, burst_allowance=2)
    return RateLimiter({"place_order": rule}, monotonic=clock)


def test_a_full_bucket_allows_the_limit_plus_the_burst_at_once():
    limits = limiter(Clock())

    answers = [limits.acquire("key", "place_order") for _ in range(13)]

    assert answers[:12] == [0] * 12
    assert answers[12] == 6  # one token every 6 s (10 a minute)


def test_tokens_come_back_at_the_rule_rate():
    clock = Clock()
    limits = limiter(clock)
    for _ in range(12):
        limits.acquire("key", "place_order")

    clock.now += 3
    assert limits.acquire("key", "place_order") == 3  # half a token: wait the other half
    clock.now += 3
    assert limits.acquire("key", "place_order") == 0


def test_each_key_has_its_own_bucket():
    limits = limiter(Clock())
    for _ in range(12):
        limits.acquire("first", "place_order")

    assert limits.acquire("first", "place_order") > 0
    assert limits.acquire("second", "place_order") == 0
