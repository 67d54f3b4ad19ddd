"""Composition root of the HTTP API: routers, error handlers and middleware on ApiDeps."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from api import DESCRIPTION
from api.deps import ApiDeps, refuse_malformed_body
from api.errors import COMMON_ERRORS, install_error_handlers
from api.metrics import Metrics
from api.middleware import RequestContextMiddleware
from api.openapi import install_openapi
from api.ratelimit import SharedRateLimiter
from api.routes import events, health, market_data, operations, orders, portfolio, positions
from api.security import Authenticator, SignatureMiddleware


def create_app(deps: ApiDeps) -> FastAPI:
    settings = deps.settings
    app = FastAPI(
        title="trading API",
        version="1.0",
        description=DESCRIPTION,
        dependencies=[Depends(refuse_malformed_body)],
    )
    app.state.deps = deps
    app.state.metrics = metrics = Metrics()
    app.state.limiter = SharedRateLimiter(deps.pool, settings.rate_limits())
    for router in (
        orders.router,
        operations.snapshots,  # before /portfolio's routes: a more specific path
        operations.trading_state,
        portfolio.router,
        positions.router,
        events.router,
        market_data.router,
    ):
        app.include_router(router, responses=COMMON_ERRORS)
    app.include_router(health.router)
    install_openapi(app)
    install_error_handlers(app, deps.clock)
    authenticator = Authenticator(
        deps.pool, deps.master_key, settings.api_clock_skew_seconds, deps.clock, metrics
    )
    app.state.authenticator = authenticator
    app.add_middleware(
        SignatureMiddleware,
        authenticator=authenticator,
        max_body_bytes=settings.api_max_body_bytes,
        clock=deps.clock,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics, clock=deps.clock)  # outermost
    return app
