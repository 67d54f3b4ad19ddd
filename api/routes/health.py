"""/health (the process answers), /ready (its dependencies answer) and /metrics; unsigned."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

from fastapi import APIRouter, Response

from api.deps import Deps, MetricsDep
from api.errors import error_responses, unavailable
from api.middleware import OutageLog
from api.schemas import ComponentStatus, Health, Readiness
from bootstrap.resources import DependencyUnavailable

log = logging.getLogger("trading.api.health")

router = APIRouter(tags=["service"])

CHECK_TIMEOUT_SECONDS = 1.5  # every check runs at once: /ready answers within 2 s
NAMES = {"database": "database (PostgreSQL)", "temporal": "Temporal"}


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: database, Temporal, broker and market data reachable",
    responses=error_responses(503),
)
async def ready(deps: Deps) -> Readiness:
    async def database() -> bool:
        return bool(await deps.pool.fetchval("SELECT 1"))

    async def temporal() -> bool:
        timeout = timedelta(seconds=CHECK_TIMEOUT_SECONDS)
        return await deps.temporal.service_client.check_health(timeout=timeout)

    checks: dict[str, Callable[[], Awaitable[bool]]] = {
        "database": database,
        "temporal": temporal,
        "broker": deps.broker_ready,
        "market_data": deps.market_data.ready,
    }
    results = await asyncio.gather(*(_check(name, check) for name, check in checks.items()))
    components = dict(zip(checks, results, strict=True))
    if all(component.status == "up" for component in components.values()):
        return Readiness(status="ready", components=components)
    down = sorted(name for name, component in components.items() if component.status == "down")
    raise unavailable(
        f"not ready: {', '.join(NAMES.get(name, name) for name in down)} unavailable",
        {
            "down": down,
            "components": {name: c.model_dump(mode="json") for name, c in components.items()},
        },
        retry_after=2,
    )


async def _check(name: str, check: Callable[[], Awaitable[bool]]) -> ComponentStatus:
    """One check, answered within CHECK_TIMEOUT_SECONDS whatever it does: it runs as its
    own task and is abandoned (cancelled, not awaited) at the deadline, since the clean-up
    of a call into a frozen server (a pool release, a cancel request) can hang as well."""
    began = time.perf_counter()
    error = None
    task = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT_SECONDS)
    if not done:
        task.cancel()
        task.add_done_callback(_swallow)
        error = f"no answer within {CHECK_TIMEOUT_SECONDS} s"
    elif task.exception() is not None:
        # Only the type: a vendor's message may carry a URL with its API key.
        err = task.exception()
        error = err.reason if isinstance(err, DependencyUnavailable) else type(err).__name__
    elif not task.result():
        error = "not ready"
    elapsed = Decimal(int((time.perf_counter() - began) * 1_000_000)) / 1000
    if error is not None:
        _DOWN_LOG.failed(name, error)
    return ComponentStatus(
        status="up" if error is None else "down", latency_ms=elapsed, error=error
    )


def _swallow(task: asyncio.Future[bool]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit


_DOWN_LOG = OutageLog(every=60.0)  # readiness probes come every few seconds


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
