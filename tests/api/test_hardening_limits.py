"""Unsigned traffic and limits across API processes (issue 13, items 8 and 10).

* Failed authentications are limited per client address before any key lookup: past the
  address's bucket, its requests answer 429 without touching the key table, while
  another address's signed requests go through.
* Key lookups are cached (found and unknown keys alike, bounded): a flood of one unknown
  key id, or of bad signatures on a real key id, costs one lookup; a revoked key is
  refused on its next request all the same.
* Malformed bodies take a token of the portfolio's bucket like any request.
* The per-portfolio buckets live in PostgreSQL: two API apps (two processes' worth of
  state) and a second key of the same portfolio share one limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from activities.store import keys as api_keys
from api import security
from api.ratelimit import UNAUTHENTICATED, RateLimiter, SharedRateLimiter
from bootstrap.settings import RateLimitRule
from tests.api.conftest import MASTER_KEY, Api, Caller, assert_envelope, build_app, fresh_id

ORDER = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "limit"}
CAPACITY = UNAUTHENTICATED.max_requests + UNAUTHENTICATED.burst_allowance


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key id the API looks up in PostgreSQL."""
    seen: list[str] = []
    real = api_keys.lookup_key

    async def counting(pool: asyncpg.Pool, key_id: str) -> Any:
        seen.append(key_id)
        return await real(pool, key_id)

    monkeypatch.setattr(api_keys, "lookup_key", counting)
    return seen


def client_at(api: Api, address: str, app: Any = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app or api.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


async def test_failed_authentications_are_limited_per_address_before_any_key_lookup(
    api: Api, lookups: list[str]
) -> None:
    async with client_at(api, "192.0.2.7") as attacker:
        unknown = Caller(attacker, "unknown-key-0001", "0" * 64, api.caller.portfolio_id)
        answers = [await unknown.get("/api/v1/portfolio") for _ in range(CAPACITY + 10)]

        assert [a.status_code for a in answers[:CAPACITY]] == [401] * CAPACITY
        for answer in answers[CAPACITY:]:
            error = assert_envelope(answer, 429, "RATE_LIMIT_EXCEEDED")
            assert error["details"]["scope"] == "address"
            assert int(answer.headers["Retry-After"]) >= 1
        assert lookups == ["unknown-key-0001"]  # cached, then refused before any lookup
        # A valid signature from the blocked address is refused too: the address is out.
        blocked = Caller(attacker, api.caller.key_id, api.caller.secret, api.caller.portfolio_id)
        assert (await blocked.get("/api/v1/portfolio")).status_code == 429
    async with client_at(api, "198.51.100.9") as other:
        caller = Caller(other, api.caller.key_id, api.caller.secret, api.caller.portfolio_id)
        assert (await caller.get("/api/v1/portfolio")).status_code == 200


async def test_key_lookups_are_cached_for_refusals_and_revocation_is_immediate(
    api: Api, lookups: list[str]
) -> None:
    wrong = Caller(api.http, api.caller.key_id, "f" * 64, api.caller.portfolio_id)
    for _ in range(10):
        assert (await wrong.get("/api/v1/portfolio")).status_code == 401
    assert lookups == [api.caller.key_id]  # one lookup for ten bad signatures

    assert (await api.caller.get("/api/v1/portfolio")).status_code == 200
    assert await api_keys.revoke_key(api.pool, api.caller.key_id)
    assert_envelope(await api.caller.get("/api/v1/portfolio"), 401, "AUTHENTICATION_ERROR")


async def test_concurrent_lookups_are_shared_and_bounded_per_address(
    api: Api, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client_at(api, "192.0.2.8") as attacker:
        same = Caller(attacker, "unknown-key-same", "0" * 64, api.caller.portfolio_id)
        answers = await asyncio.gather(*(same.get("/api/v1/portfolio") for _ in range(20)))
        assert {a.status_code for a in answers} == {401}
        assert lookups == ["unknown-key-same"]  # twenty requests, one query

        # Lookups held at a gate: 30 distinct key ids at once; 8 get a lookup, the other
        # 22 wait their turn (never refused: a gateway may present many keys from one
        # address), and no more than 8 are ever in flight.
        gate = asyncio.Event()
        counting = api_keys.lookup_key
        in_flight = 0
        most = 0

        async def gated(pool: asyncpg.Pool, key_id: str) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await gate.wait()
                return await counting(pool, key_id)
            finally:
                in_flight -= 1

        monkeypatch.setattr(api_keys, "lookup_key", gated)
        callers = [
            Caller(attacker, f"unknown-key-{n:04d}", "0" * 64, api.caller.portfolio_id)
            for n in range(30)
        ]
        tasks = [asyncio.ensure_future(c.get("/api/v1/portfolio")) for c in callers]
        async with asyncio.timeout(60):
            while in_flight < security.LOOKUPS_PER_ADDRESS:
                await asyncio.sleep(0.01)
            assert not any(task.done() for task in tasks)  # the other 22 wait, unanswered
            gate.set()
            answers = await asyncio.gather(*tasks)
    assert most == security.LOOKUPS_PER_ADDRESS
    assert [a.status_code for a in answers] == [401] * 30
    assert len(lookups) == 1 + 30
    assert api.app.state.authenticator._lookups == {}  # every slot given back


async def test_the_key_cache_is_bounded(
    api: Api, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(security, "KEY_CACHE_SIZE", 5)
    for n in range(20):
        caller = Caller(api.http, f"unknown-key-{n:04d}", "0" * 64, api.caller.portfolio_id)
        assert (await caller.get("/api/v1/portfolio")).status_code == 401
    assert len(lookups) == 20
    assert len(api.app.state.authenticator._keys) <= 5


def test_the_address_buckets_are_bounded() -> None:
    limiter = RateLimiter({"unauthenticated": UNAUTHENTICATED}, max_buckets=100)
    for n in range(1000):
        limiter.acquire(f"10.0.{n // 250}.{n % 250}", "unauthenticated")
    assert len(limiter._buckets) <= 100


@pytest.fixture
async def two_apps(api: Api) -> AsyncIterator[tuple[Caller, Caller, Caller]]:
    """Two API apps on one database, place_order 3 a minute without burst; callers: key A
    on app 1, key B (same portfolio) on app 2, key A on app 2."""
    limits = {"place_order": RateLimitRule(max_requests=3, window_seconds=60)}
    first = build_app(api.stack, api_rate_limits=limits)
    second = build_app(api.stack, api_rate_limits=limits)
    async with (
        client_at(api, "127.0.0.1", first) as one,
        client_at(api, "127.0.0.1", second) as two,
    ):
        key_b, secret_b = await api_keys.create_key(api.pool, api.stack.portfolio.id, MASTER_KEY)
        yield (
            Caller(one, api.caller.key_id, api.caller.secret, api.caller.portfolio_id),
            Caller(two, key_b, secret_b, api.caller.portfolio_id),
            Caller(two, api.caller.key_id, api.caller.secret, api.caller.portfolio_id),
        )


async def test_the_limit_holds_per_portfolio_across_api_processes_and_keys(
    api: Api, two_apps: tuple[Caller, Caller, Caller]
) -> None:
    a_on_1, b_on_2, a_on_2 = two_apps
    answers = []
    for caller in (a_on_1, b_on_2, a_on_2, a_on_1, b_on_2, a_on_2):
        body = ORDER | {"limit_price": "100.00", "client_order_id": fresh_id()}
        answers.append(await caller.post("/api/v1/orders", json=body))

    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429, 429]
    error = assert_envelope(answers[3], 429, "RATE_LIMIT_EXCEEDED")
    assert error["details"] | {"retry_after_seconds": 0} == {
        "route_class": "place_order",
        "retry_after_seconds": 0,
        "scope": "portfolio",
        "max_requests": 3,
        "window_seconds": 60,
        "burst_allowance": 0,
    }
    orders, _ = await api.counts()
    assert orders == 3
    # Another portfolio has a bucket of its own.
    other = await api.other_portfolio()
    body = ORDER | {"limit_price": "100.00", "client_order_id": fresh_id()}
    assert (await other.post("/api/v1/orders", json=body)).status_code == 201


async def test_malformed_bodies_take_tokens_of_the_portfolio(api: Api) -> None:
    app = build_app(
        api.stack, api_rate_limits={"place_order": RateLimitRule(max_requests=2, window_seconds=60)}
    )
    async with client_at(api, "127.0.0.1", app) as http:
        caller = Caller(http, api.caller.key_id, api.caller.secret, api.caller.portfolio_id)
        first = await caller.post("/api/v1/orders", content=b'{"symbol": "AAPL", "symbol": "X"}')
        second = await caller.post(
            "/api/v1/orders", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        third = await caller.post("/api/v1/orders", content=b"not json")
        valid = await caller.post(
            "/api/v1/orders", json=ORDER | {"limit_price": "100.00", "client_order_id": fresh_id()}
        )

    assert_envelope(first, 422, "VALIDATION_ERROR")
    assert_envelope(second, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_envelope(third, 429, "RATE_LIMIT_EXCEEDED")  # the bucket ran dry: 429 first
    assert_envelope(valid, 429, "RATE_LIMIT_EXCEEDED")
    assert await api.counts() == (0, 0)


async def test_concurrent_takes_never_exceed_the_bucket(db_pool: asyncpg.Pool) -> None:
    limiter = SharedRateLimiter(
        db_pool, {"place_order": RateLimitRule(max_requests=10, window_seconds=3600)}
    )
    bucket = str(uuid4())

    waits = await asyncio.gather(*(limiter.take(bucket, "place_order") for _ in range(40)))

    assert waits.count(0) == 10
    assert all(wait >= 1 for wait in waits if wait)
