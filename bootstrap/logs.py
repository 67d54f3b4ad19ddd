"""Log lines of every process, as text or as JSON (LOG_FORMAT; JSON by default in
production), each carrying `request_id`, `order_id`, `workflow_id` and `portfolio_id` when
they are known.

Where the ids come from:

* the API: `RequestContextMiddleware` binds the request's ASGI scope (`bind_request`); its
  request id, the caller's portfolio (the principal the signature check adds) and the
  `order_id` path parameter are read from it when a line is written;
* the API's Temporal client (`RequestIdClientInterceptor`) sends the request id as the
  `trading-request-id` header of every workflow start, update and signal;
* the worker (`LogContextWorkerInterceptor`): the workflow keeps the header of its start
  (and of the signal or update being handled), passes it on to every activity it starts and
  to its continue-as-new run; an activity binds it with its workflow id, the order id
  (`order-<order id>`) and the portfolio id its input names. Headers are not commands:
  workflows replay exactly as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    OutboundInterceptor,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    StartWorkflowUpdateWithStartInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.worker import (
    ActivityInboundInterceptor,
    ContinueAsNewInput,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from bootstrap.settings import Settings

REQUEST_ID_HEADER = "trading-request-id"
FIELDS = ("request_id", "order_id", "workflow_id", "portfolio_id")

# The ids bound where a line is written: the API request's scope, or an activity's ids.
_SCOPE: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "trading_request_scope", default=None
)
_IDS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "trading_log_ids", default=None
)
# Inside a workflow: the request id of the start, signal or update being handled.
_WORKFLOW_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trading_workflow_request_id", default=None
)


# -- binding ids ------------------------------------------------------------------------------


@contextlib.contextmanager
def bind_request(scope: Mapping[str, Any]) -> Iterator[None]:
    """Lines written while handling this ASGI request carry its ids."""
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def enter_request(scope: Mapping[str, Any]) -> contextvars.Token[Mapping[str, Any] | None]:
    """`bind_request` for a middleware that cannot wrap a block: pass the token to
    `leave_request` when the request ends."""
    return _SCOPE.set(scope)


def leave_request(token: contextvars.Token[Mapping[str, Any] | None]) -> None:
    _SCOPE.reset(token)


@contextlib.contextmanager
def bind(**ids: object) -> Iterator[None]:
    """Lines written in the block carry these ids (None values are left out)."""
    merged = dict(_IDS.get() or {})
    merged.update({name: str(value) for name, value in ids.items() if value is not None})
    token = _IDS.set(merged)
    try:
        yield
    finally:
        _IDS.reset(token)


def current_ids() -> dict[str, str]:
    """The ids known here: bound ones, then the API request's."""
    found: dict[str, str] = {}
    scope = _SCOPE.get()
    if scope is not None:
        state = scope.get("state") or {}
        if state.get("request_id"):
            found["request_id"] = str(state["request_id"])
        portfolio = getattr(state.get("principal"), "portfolio_id", None)
        if portfolio is not None:
            found["portfolio_id"] = str(portfolio)
        order = (scope.get("path_params") or {}).get("order_id")
        if order is not None:
            found["order_id"] = str(order)
    found.update(_IDS.get() or {})
    return found


def current_request_id() -> str | None:
    return current_ids().get("request_id") or _WORKFLOW_REQUEST_ID.get()


# -- formatting ---------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Puts the known ids on every record (as attributes), including the workflow or
    activity ids Temporal's own loggers attach (`temporal_workflow`, `temporal_activity`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        for key in ("temporal_workflow", "temporal_activity"):
            info = getattr(record, key, None)
            if isinstance(info, Mapping) and info.get("workflow_id"):
                ids.setdefault("workflow_id", str(info["workflow_id"]))
        request_id = _WORKFLOW_REQUEST_ID.get()
        if request_id and "request_id" not in ids:
            ids["request_id"] = request_id
        workflow_id = ids.get("workflow_id", "")
        if workflow_id.startswith("order-") and "order_id" not in ids:
            ids["order_id"] = workflow_id.removeprefix("order-")
        for name in FIELDS:
            if name in ids and not getattr(record, name, None):
                setattr(record, name, ids[name])
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the known
    ids, and the exception's traceback as text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> str:
    """Format the root logger's handlers as LOG_FORMAT says (JSON by default in production)
    and put the ids on every line; returns the format chosen. Idempotent."""
    chosen = settings.log_format or ("json" if settings.environment == "production" else "text")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        if chosen == "json" and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
    return chosen


# -- the request id through Temporal ----------------------------------------------------------


def _payload(value: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def _read(headers: Mapping[str, Payload]) -> str | None:
    payload = headers.get(REQUEST_ID_HEADER)
    if payload is None:
        return None
    try:
        value = json.loads(payload.data)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _with_request_id(
    headers: Mapping[str, Payload], request_id: str | None
) -> Mapping[str, Payload]:
    if request_id is None or REQUEST_ID_HEADER in headers:
        return headers
    return {**headers, REQUEST_ID_HEADER: _payload(request_id)}


class RequestIdClientInterceptor(ClientInterceptor):
    """A client interceptor: the current request id goes with every start, update and
    signal as the `trading-request-id` header."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _ClientOutbound(next)


class _ClientOutbound(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        input.headers = _with_request_id(input.headers, current_request_id())
        return await self.next.start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        input.headers = _with_request_id(input.headers, current_request_id())
        await self.next.signal_workflow(input)

    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        input.headers = _with_request_id(input.headers, current_request_id())
        return await self.next.start_workflow_update(input)

    async def start_update_with_start_workflow(
        self, input: StartWorkflowUpdateWithStartInput
    ) -> WorkflowUpdateHandle[Any]:
        request_id = current_request_id()
        start, update = input.start_workflow_input, input.update_workflow_input
        start.headers = _with_request_id(start.headers, request_id)
        update.headers = _with_request_id(update.headers, request_id)
        return await self.next.start_update_with_start_workflow(input)


class LogContextWorkerInterceptor(Interceptor):
    """A worker interceptor: workflows pass the request id on to their activities, and
    activities log with their request, order, workflow and portfolio ids."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _WorkflowInbound


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        ids: dict[str, object] = {
            "request_id": _read(input.headers),
            "workflow_id": info.workflow_id,
        }
        for argument in input.args:
            for source in (argument, getattr(argument, "request", None)):
                for name in ("order_id", "portfolio_id"):
                    value = getattr(source, name, None)
                    if value is not None:
                        ids.setdefault(name, value)
        with bind(**ids):
            return await self.next.execute_activity(input)


class _WorkflowInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        self.next.init(_WorkflowOutbound(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        _WORKFLOW_REQUEST_ID.set(_read(input.headers))
        return await self.next.execute_workflow(input)

    async def handle_signal(self, input: HandleSignalInput) -> None:
        request_id = _read(input.headers)
        token = _WORKFLOW_REQUEST_ID.set(request_id) if request_id else None
        try:
            await self.next.handle_signal(input)
        finally:
            if token is not None:
                _WORKFLOW_REQUEST_ID.reset(token)

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        request_id = _read(input.headers)
        token = _WORKFLOW_REQUEST_ID.set(request_id) if request_id else None
        try:
            return await self.next.handle_update_handler(input)
        finally:
            if token is not None:
                _WORKFLOW_REQUEST_ID.reset(token)


class _WorkflowOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = _with_request_id(input.headers, _WORKFLOW_REQUEST_ID.get())
        return self.next.start_activity(input)

    def continue_as_new(self, input: ContinueAsNewInput) -> NoReturn:
        input.headers = _with_request_id(input.headers, _WORKFLOW_REQUEST_ID.get())
        self.next.continue_as_new(input)


def with_request_ids(client: Client) -> Client:
    """The same client (connection, namespace, converter), also sending the request id
    header: `Client(**config)` is the SDK's documented way to derive a client."""
    config = client.config()
    config["interceptors"] = [*config.get("interceptors", []), RequestIdClientInterceptor()]
    return Client(**config)


__all__ = [
    "REQUEST_ID_HEADER",
    "ContextFilter",
    "JsonFormatter",
    "LogContextWorkerInterceptor",
    "RequestIdClientInterceptor",
    "bind",
    "bind_request",
    "configure_logging",
    "current_ids",
    "with_request_ids",
]
