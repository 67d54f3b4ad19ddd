"""The API on a real worker: the time-skipping Temporal server, real activities on the real
PostgreSQL, the paper venue, and the FastAPI app, called in-process (httpx ASGITransport)
or served by uvicorn on a free loopback port (`server`)."""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.store import keys as api_keys
from activities.store import ledger
from activities.store.postgres import free_port
from api.app import create_app
from api.client import Credentials
from api.deps import ApiDeps
from api.server import paper_venue_running
from api.signing import signed_headers
from bootstrap.settings import ApiSettings, RateLimitRule
from contracts.payloads import order_id_for, workflow_id_for
from domain.portfolio import Portfolio
from tests.fixtures.temporal import time_skipping_environment
from tests.workflows.harness import LIMITS, Stack, running_stack

MASTER_KEY = b"tests-master-key-0123456789abcdef0123456789abcdef"
GENEROUS = RateLimitRule(max_requests=10_000, window_seconds=1, burst_allowance=10_000)
ENVELOPE_KEYS = {"code", "message", "details", "timestamp", "request_id"}


def api_settings(stack: Stack, **overrides: Any) -> ApiSettings:
    """Settings for a test app: the stack's task queue, limits high unless a test says."""
    values: dict[str, Any] = {
        "environment": "test",
        "task_queue": stack.task_queue,
        "api_rate_limits": dict.fromkeys(
            ("place_order", "cancel_order", "get_positions", "get_market_data"), GENEROUS
        ),
        "api_decision_timeout_seconds": 10,
    }
    return ApiSettings(**(values | overrides))


def build_app(stack: Stack, master_key: bytes = MASTER_KEY, **overrides: Any) -> FastAPI:
    deps = ApiDeps(
        pool=stack.pool,
        temporal=stack.env.client,
        market_data=stack.feed,
        broker_ready=lambda: paper_venue_running(stack.pool),
        settings=api_settings(stack, **overrides),
        master_key=master_key,
    )
    return create_app(deps)


@dataclass
class Caller:
    """Signed requests for one key, with the means to break the signature on purpose."""

    http: httpx.AsyncClient
    key_id: str
    secret: str
    portfolio_id: UUID
    clock_offset: int = 0
    sent: list[httpx.Request] = field(default_factory=list)

    async def request(
        self,
        method: str,
        target: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timestamp: int | None = None,
        signed_target: str | None = None,
        signed_body: bytes | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """Send `method target`; the signature covers `signed_target`/`signed_body` when
        given (a tampered request), else exactly what is sent."""
        if json is not None:
            content = jsonlib.dumps(json).encode()
        request = self.http.build_request(
            method,
            target,
            content=content,
            headers={"Content-Type": "application/json"} if content is not None else None,
        )
        sent_target = request.url.raw_path.decode()
        stamp = int(time.time()) + self.clock_offset if timestamp is None else timestamp
        request.headers.update(
            signed_headers(
                self.key_id,
                secret or self.secret,
                method,
                signed_target or sent_target,
                request.content if signed_body is None else signed_body,
                stamp,
            )
        )
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.sent.append(request)
        return await self.http.send(request)

    async def resend(self, request: httpx.Request) -> httpx.Response:
        return await self.http.send(request)

    async def get(self, target: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", target, **kwargs)

    async def post(self, target: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", target, **kwargs)

    async def delete(self, target: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", target, **kwargs)


@dataclass
class Api:
    stack: Stack
    app: FastAPI
    http: httpx.AsyncClient
    caller: Caller

    @property
    def pool(self) -> asyncpg.Pool:
        return self.stack.pool

    async def key(self, portfolio_id: UUID | None = None) -> Caller:
        """A caller with a new key, for this stack's portfolio or another."""
        portfolio_id = portfolio_id or self.stack.portfolio.id
        key_id, secret = await api_keys.create_key(self.pool, portfolio_id, MASTER_KEY)
        return Caller(self.http, key_id, secret, portfolio_id)

    async def other_portfolio(self, cash: str = "100000.00") -> Caller:
        portfolio = Portfolio(initial_capital=Decimal(cash), limits=LIMITS, name="other")
        await ledger.create_portfolio(self.pool, portfolio)
        return await self.key(portfolio.id)

    async def place(self, caller: Caller | None = None, **body: Any) -> httpx.Response:
        """POST an order (AAPL 10 buy gtc, a fresh client_order_id, as the Python client
        sends) with `body` on top."""
        order = {"symbol": "AAPL", "quantity": "10", "side": "buy", "time_in_force": "gtc"}
        order["client_order_id"] = fresh_id()
        return await (caller or self.caller).post("/api/v1/orders", json=order | body)

    async def counts(self, portfolio_id: UUID | None = None) -> tuple[int, int]:
        """(orders, reservations) of a portfolio: what a refused request must not create."""
        portfolio_id = portfolio_id or self.stack.portfolio.id
        orders = await self.pool.fetchval(
            "SELECT count(*) FROM orders WHERE portfolio_id = $1", portfolio_id
        )
        reservations = await self.pool.fetchval(
            "SELECT count(*) FROM reservations WHERE portfolio_id = $1", portfolio_id
        )
        return int(orders), int(reservations)

    async def workflow_exists(self, client_order_id: str, portfolio_id: UUID | None = None) -> bool:
        order_id = order_id_for(portfolio_id or self.stack.portfolio.id, client_order_id)
        handle = self.stack.env.client.get_workflow_handle(workflow_id_for(order_id))
        try:
            await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; returns its body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response.headers["X-Request-ID"]
    time.strptime(error["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    return dict(error)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the API tests' own, in place of the shared one.

    Some API tests leave work the server never sees finish, on purpose: an update-with-start
    on a task queue no worker polls (the decision deadline), fifty concurrent duplicates.
    The test server holds its clock while such work is outstanding, which would stop time
    skipping for every workflow test that runs after them."""
    async with time_skipping_environment() as env:
        yield env


@pytest.fixture
async def stack(temporal_env: WorkflowEnvironment, db_pool: asyncpg.Pool) -> AsyncIterator[Stack]:
    async with running_stack(temporal_env, db_pool) as stack:
        stack.feed.set_quote("AAPL", "150.00", "150.02")
        stack.feed.set_quote("MSFT", "400.00", "400.10")
        yield stack


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    app = build_app(stack)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        key_id, secret = await api_keys.create_key(stack.pool, stack.portfolio.id, MASTER_KEY)
        yield Api(stack, app, http, Caller(http, key_id, secret, stack.portfolio.id))


def fresh_id() -> str:
    return f"test-{uuid4()}"


@pytest.fixture
async def server(api: Api) -> AsyncIterator[str]:
    """The app under uvicorn on 127.0.0.1; yields its URL."""
    port = free_port()
    config = uvicorn.Config(api.app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    while not served.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        await task


@pytest.fixture
def credentials(api: Api, server: str, tmp_path: Path) -> Path:
    path = tmp_path / "credentials.json"
    Credentials(server, api.caller.key_id, api.caller.secret, str(api.caller.portfolio_id)).save(
        path
    )
    return path
