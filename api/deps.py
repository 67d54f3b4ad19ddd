"""What the API talks to (ApiDeps, built by hand by api/server.py or a test) and the typed
FastAPI dependencies the routes declare (async: FastAPI runs plain `def` dependencies in a
thread pool, a thread hop per dependency per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, Request
from temporalio.client import Client

from api.errors import ApiError, unauthenticated
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from bootstrap.settings import ApiSettings
from contracts.ports import MarketData
from domain.errors import ErrorCode


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiDeps:
    """The API's resources. `temporal` must use the pydantic data converter (bootstrap.temporal
    .connect); `broker_ready` answers whether the broker can take orders right now."""

    pool: asyncpg.Pool
    temporal: Client
    market_data: MarketData
    broker_ready: Callable[[], Awaitable[bool]]
    settings: ApiSettings
    master_key: bytes = field(repr=False)
    clock: Callable[[], datetime] = utcnow


@dataclass(frozen=True)
class Principal:
    """The caller, once its signature checked out: an API key acting for one portfolio."""

    key_id: str
    portfolio_id: UUID


async def get_deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_principal(request: Request) -> Principal:
    """Set by the signature middleware on every /api/v1 request it let through."""
    return principal_of(request)


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise unauthenticated("this route needs a signed request")
    return principal


Deps = Annotated[ApiDeps, Depends(get_deps)]
CurrentKey = Annotated[Principal, Depends(get_principal)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def rate_limited(route_class: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency taking one token of `route_class` from the caller's bucket, or 429."""

    async def take_token(request: Request) -> None:
        limiter: RateLimiter = request.app.state.limiter
        wait = limiter.acquire(principal_of(request).key_id, route_class)
        if wait:
            metrics: Metrics = request.app.state.metrics
            metrics.rate_limited.labels(route_class).inc()
            raise ApiError(
                429,
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"rate limit of {route_class} exceeded; retry in {wait} s",
                {"route_class": route_class, "retry_after_seconds": wait},
                headers={"Retry-After": str(wait)},
            )

    return take_token
