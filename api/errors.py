"""The error envelope of every 4xx/5xx answer, and the handlers that turn errors into it.

    {"error": {"code": "VALIDATION_ERROR", "message": "...", "details": {...},
               "timestamp": "2026-01-15T14:32:45Z", "request_id": "..."}}

Messages are written for the client; they never carry a secret, a stack trace or the
text of an unexpected exception (those go to the server log under the request id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import ErrorEnvelope
from bootstrap.resources import DependencyUnavailable, describe, is_outage
from domain.errors import ErrorCode
from domain.errors import ValidationError as DomainValidationError

REQUEST_ID_HEADER = "X-Request-ID"
ACCEPTED_MEDIA_TYPE = "application/json; charset=utf-8"

DESCRIPTIONS = {
    401: "AUTHENTICATION_ERROR: missing, malformed, wrong, stale or replayed signature",
    404: "NOT_FOUND (or SYMBOL_NOT_FOUND): no such resource in this key's portfolio",
    405: "VALIDATION_ERROR: method not allowed",
    409: "CONFLICT: the order is already terminal",
    413: "VALIDATION_ERROR: the request body is too large",
    415: "UNSUPPORTED_MEDIA_TYPE: a body that is not application/json in UTF-8 (no BOM)",
    422: "VALIDATION_ERROR with the field (malformed JSON, a duplicate key, a number out of "
    "range, a rule of the field), or the risk refusal's code",
    429: "RATE_LIMIT_EXCEEDED, with Retry-After",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE: a dependency is unavailable or slow; retry (Retry-After)",
}


class ApiError(Exception):
    """An answer other than success: HTTP status, envelope code, message and details."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of error answers: the envelope, with what each status means."""
    return {
        status: {"model": ErrorEnvelope, "description": DESCRIPTIONS[status]} for status in statuses
    }


COMMON_ERRORS = error_responses(401, 413, 415, 422, 429, 500, 503)


def invalid(field: str, reason: str, status: int = 422) -> ApiError:
    """A field-level validation failure, shaped like FastAPI's own (field + reason)."""
    return ApiError(
        status,
        ErrorCode.VALIDATION_ERROR,
        f"invalid {field}: {reason}",
        {"field": field, "reason": reason, "errors": [{"field": field, "reason": reason}]},
    )


def unsupported_media_type(field: str, reason: str) -> ApiError:
    """A body the API does not read: not application/json, or not UTF-8 (api/body.py)."""
    return ApiError(
        415,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        f"unsupported {field}: {reason}",
        {"field": field, "reason": reason, "accepted": ACCEPTED_MEDIA_TYPE},
    )


def unavailable(
    message: str, details: Mapping[str, Any] | None = None, retry_after: int = 1
) -> ApiError:
    """503: a dependency did not answer (in time); the same request may succeed later."""
    return ApiError(
        503,
        ErrorCode.SERVICE_UNAVAILABLE,
        message,
        details,
        headers={"Retry-After": str(retry_after)},
    )


def outage_error(error: BaseException, retry_after: int = 2) -> ApiError | None:
    """The one place an exception that means "a dependency is down or too slow" becomes
    503 SERVICE_UNAVAILABLE with Retry-After: PostgreSQL's (`DependencyUnavailable` from
    the bounded pool, or a raw asyncpg/socket error or timeout) and Temporal's (an RPC that
    is unavailable, timed out or throttled). None: not an outage (a bug: 500)."""
    if isinstance(error, RPCError):
        if error.status not in TEMPORAL_OUTAGE:
            return None
        dependency, reason = "temporal", f"RPC {error.status.name}"
    elif is_outage(error):
        if isinstance(error, DependencyUnavailable):
            dependency = error.dependency
        elif isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
            dependency = "postgres"
        else:  # a bare timeout or socket error: the log has the request id and the trace
            dependency = "a dependency"
        reason = describe(error)
    else:
        return None
    return unavailable(
        f"{dependency} is unavailable; retry later",
        {"dependency": dependency, "reason": reason},
        retry_after=retry_after,
    )


TEMPORAL_OUTAGE = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
    }
)


def not_found(what: str) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, f"{what} not found")


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, ErrorCode.AUTHENTICATION_ERROR, message)


def envelope(
    code: ErrorCode, message: str, details: Mapping[str, Any], request_id: str, now: datetime
) -> dict[str, Any]:
    timestamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "error": {
            "code": code.value,
            "message": message,
            "details": dict(details),
            "timestamp": timestamp,
            "request_id": request_id,
        }
    }


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", "-"))


def error_response(scope: Scope, error: ApiError, now: datetime) -> JSONResponse:
    body = envelope(error.code, error.message, error.details, request_id_of(scope), now)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _field_and_reason(error: Mapping[str, Any]) -> dict[str, str]:
    location = [str(part) for part in error.get("loc", ())]
    # ("body", "quantity") -> "quantity"; a malformed body is ("body", <offset>) -> "body"
    if location and location[0] in ("body", "query", "path", "header"):
        names = [part for part in location[1:] if not part.isdigit()]
        field = ".".join(names) or location[0]
    else:
        field = ".".join(location) or "request"
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, DomainValidationError) and field in ("body", "query", "request"):
        field = cause.field  # a rule across fields, raised by the model; it names its field
    reason = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        reason = "malformed JSON: " + str(error.get("ctx", {}).get("error", "cannot be parsed"))
    reason = reason.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return {"field": field, "reason": reason}


def validation_failure(errors: list[Mapping[str, Any]]) -> ApiError:
    """FastAPI's validation errors as one envelope: the first field on top, all in `errors`.
    The rejected input values are not echoed back."""
    fields = [_field_and_reason(error) for error in errors] or [
        {"field": "request", "reason": "invalid request"}
    ]
    first = fields[0]
    return ApiError(
        422,
        ErrorCode.VALIDATION_ERROR,
        f"invalid {first['field']}: {first['reason']}",
        {**first, "errors": fields},
    )


def install_error_handlers(app: FastAPI, clock: Callable[[], datetime]) -> None:
    """Envelope FastAPI's and Starlette's own errors (validation, 404, 405) and ours."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request.scope, exc, clock())

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request.scope, validation_failure(list(exc.errors())), clock())

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        target = f"{request.method} {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            error = ApiError(404, ErrorCode.NOT_FOUND, f"no route {target}", headers=headers)
        elif exc.status_code == 405:
            allowed = headers.get("Allow", headers.get("allow", ""))
            reason = f"method {request.method} is not allowed here; allowed: {allowed}"
            error = invalid("method", reason, status=405)
            error.headers = headers
        elif exc.status_code < 500:  # FastAPI's 400, which api/body.py's rules pre-empt
            error = invalid("body", str(exc.detail), status=exc.status_code)
        else:
            error = ApiError(exc.status_code, ErrorCode.INTERNAL_ERROR, "internal error")
        return error_response(request.scope, error, clock())

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
