"""The outermost middleware: request id, security headers, metrics, the 503 envelope of a
dependency outage (api.errors.outage_error, logged once with a count) and the 500 envelope."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import REQUEST_ID_HEADER, ApiError, error_response, outage_error
from api.metrics import Metrics
from bootstrap.logs import enter_request, leave_request
from domain.errors import ErrorCode

log = logging.getLogger("trading.api")

# The seed document's security headers, on every response. /docs and /redoc load their
# assets from this server (api/openapi.py); ReDoc also runs a web worker from a blob: URL
# and both draw inline SVG images, which their content security policy allows.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "1; mode=block",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "X-Trading-System": "trading-0.1.0",
    "X-API-Version": "1.0",
}
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
# A caller's own request id is kept when it is a plain token (it ends up in logs).
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class OutageLog:
    """Requests answered 503 because a dependency is down, logged once with a count rather
    than once per request: the first failure of a dependency at once, then one line per
    `every` seconds while it keeps failing ("postgres unavailable (...): 412 requests
    answered 503 in the last 10 s")."""

    def __init__(self, every: float = 10.0, monotonic: Callable[[], float] = time.monotonic):
        self.every = every
        self._monotonic = monotonic
        self._state: dict[str, tuple[float, int]] = {}  # dependency -> (last line, held)

    def failed(self, dependency: str, reason: str) -> None:
        now = self._monotonic()
        last, held = self._state.get(dependency, (float("-inf"), 0))
        if now - last < self.every:
            self._state[dependency] = (last, held + 1)
            return
        self._state[dependency] = (now, 0)
        if last == float("-inf") or now - last > 2 * self.every:
            log.warning("%s unavailable (%s): answering 503 until it is back", dependency, reason)
        else:
            log.warning(
                "%s unavailable (%s): %d requests answered 503 in the last %.0f s",
                dependency,
                reason,
                held + 1,
                now - last,
            )


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock
        self.outages = OutageLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        bound = enter_request(scope)  # log lines carry its request, portfolio and order ids
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if scope["path"] in DOCS_PATHS:
                    headers["Content-Security-Policy"] = DOCS_CSP
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            error = outage_error(exc)
            if error is not None:
                self.outages.failed(error.details["dependency"], error.details["reason"])
            else:
                log.exception(
                    "unhandled error in %s %s [%s]", scope["method"], scope["path"], request_id
                )
                error = ApiError(
                    500,
                    ErrorCode.INTERNAL_ERROR,
                    f"internal error; quote request id {request_id} when reporting it",
                )
            if started:
                raise
            await error_response(scope, error, self.clock())(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - began)
            leave_request(bound)

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate = bytes(value).decode("latin-1")
                if CLIENT_REQUEST_ID.match(candidate):
                    return candidate
        return "req-" + uuid.uuid4().hex
