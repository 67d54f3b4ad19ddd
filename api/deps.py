"""What the API talks to (ApiDeps, built by hand by api/server.py or a test) and the typed
FastAPI dependencies the routes declare (async: FastAPI runs plain `def` dependencies in a
thread pool, a thread hop per dependency per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import Depends, Request
from temporalio.client import Client

from api.errors import unauthenticated
from api.metrics import Metrics
from api.ratelimit import Limiter, rate_limit_exceeded
from bootstrap.settings import ApiSettings
from contracts.ports import MarketData


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
        await take_rate_token(request.app.state, principal_of(request), route_class)

    take_token.route_class = route_class  # type: ignore[attr-defined]  # (route_class_of)
    return take_token


async def take_rate_token(state: Any, principal: Principal, route_class: str) -> None:
    """One token of the caller's portfolio's bucket for `route_class`, or 429. Every key of
    a portfolio shares the bucket (api/ratelimit.py)."""
    limiter: Limiter = state.limiter
    wait = await limiter.take(str(principal.portfolio_id), route_class)
    if wait:
        metrics: Metrics = state.metrics
        metrics.rate_limited.labels(route_class).inc()
        raise rate_limit_exceeded(route_class, wait, limiter.rules.get(route_class))


async def refuse_malformed_body(request: Request) -> None:
    """An app-wide dependency, run first on every route: a body the signature middleware
    found malformed (415/422, api/body.py) costs the caller's portfolio a token of the
    route's rate-limit class, as a well-formed request would (429 once the bucket is dry),
    and is then refused. The middleware hands such a request on with an empty body so
    that it reaches here, past FastAPI's own parsing."""
    error = getattr(request.state, "body_error", None)
    if error is None:
        return
    route = request.scope.get("route")
    for dependency in getattr(route, "dependencies", ()):
        route_class = getattr(dependency.dependency, "route_class", None)
        if isinstance(route_class, str):
            await take_rate_token(request.app.state, principal_of(request), route_class)
            break
    raise error
