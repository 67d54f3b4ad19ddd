"""Log lines carry request, order, workflow and portfolio ids: set by the API's middleware,
sent with the request to the workflow as a Temporal header, passed on to the activities."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from temporalio import activity, workflow
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from api.metrics import Metrics
from api.middleware import RequestContextMiddleware
from bootstrap.logs import (
    ContextFilter,
    JsonFormatter,
    LogContextWorkerInterceptor,
    bind,
    bind_request,
    configure_logging,
    with_request_ids,
)
from bootstrap.settings import Settings

log = logging.getLogger("tests.log_context")


class Captured(logging.Handler):
    """Records as the JSON formatter writes them, ids put on by the context filter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def of(self, message: str) -> list[dict[str, str]]:
        return [line for line in self.lines if line["message"] == message]


@pytest.fixture
def captured():
    handler = Captured()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def test_a_json_line_has_the_ids_and_the_exception():
    formatter = JsonFormatter()
    record = logging.LogRecord("trading.x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    try:
        raise ValueError("bad")
    except ValueError:
        record.exc_info = sys.exc_info()
    with bind(order_id="o-1", portfolio_id="p-1"):
        ContextFilter().filter(record)
    line = json.loads(formatter.format(record))
    assert line["message"] == "boom now" and line["level"] == "ERROR"
    assert line["order_id"] == "o-1" and line["portfolio_id"] == "p-1"
    assert "request_id" not in line  # unknown ids are left out, not null
    assert "ValueError: bad" in line["exception"]
    assert datetime.fromisoformat(line["time"]).tzinfo is not None


@pytest.mark.parametrize(
    "environment,log_format,expected",
    [
        ("production", None, "json"),
        ("development", None, "text"),
        ("production", "text", "text"),
        ("development", "json", "json"),
    ],
)
def test_json_is_the_default_in_production_and_log_format_overrides_it(
    environment, log_format, expected
):
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.StreamHandler()
    root.handlers[:] = [handler]
    try:
        settings = Settings(environment=environment, log_format=log_format)
        assert configure_logging(settings) == expected
        assert isinstance(handler.formatter, JsonFormatter) == (expected == "json")
        assert any(isinstance(f, ContextFilter) for f in handler.filters)
    finally:
        root.handlers[:] = saved


async def test_the_api_middleware_binds_the_request_id_portfolio_and_order(captured):
    @dataclass
    class Principal:
        portfolio_id: str

    async def endpoint(request: Request) -> PlainTextResponse:
        request.scope["state"]["principal"] = Principal("p-42")  # as the signature check does
        log.info("handling")
        return PlainTextResponse("ok")

    app = RequestContextMiddleware(
        Starlette(routes=[Route("/orders/{order_id}", endpoint)]),
        Metrics(),
        lambda: datetime.now(UTC),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        response = await http.get("/orders/o-7", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 200
    log.info("after the request")
    (line,) = captured.of("handling")
    assert (line["request_id"], line["portfolio_id"], line["order_id"]) == (
        "trace-1",
        "p-42",
        "o-7",
    )
    assert "request_id" not in captured.of("after the request")[0]


# -- through Temporal -------------------------------------------------------------------------


@dataclass
class ProbeInput:
    portfolio_id: str
    step: str


@activity.defn(name="log_context_probe")
async def probe(input: ProbeInput) -> str:
    log.info("activity %s", input.step)
    return input.step


@workflow.defn(name="LogContextProbe", sandboxed=False)
class ProbeWorkflow:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, portfolio_id: str) -> str:
        await workflow.execute_activity(
            probe, ProbeInput(portfolio_id, "start"), start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.wait_condition(lambda: self.done)
        return "ok"

    @workflow.update
    async def step(self, name: str) -> str:
        return await workflow.execute_activity(
            probe, ProbeInput("p-update", name), start_to_close_timeout=timedelta(seconds=10)
        )

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def test_the_request_id_reaches_the_workflow_and_its_activities_logs(temporal_env, captured):
    client = with_request_ids(temporal_env.client)
    queue = f"log-context-{uuid.uuid4()}"
    order_id = str(uuid.uuid4())
    workflow_id = f"order-{order_id}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ProbeWorkflow],
        activities=[probe],
        interceptors=[LogContextWorkerInterceptor()],
    ):
        start = WithStartWorkflowOperation(
            ProbeWorkflow.run,
            "p-start",
            id=workflow_id,
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        # As the API places an order: update-with-start, inside the request's context.
        scope = {"state": {"request_id": "req-place"}}
        with bind_request(scope):
            await client.execute_update_with_start_workflow(
                ProbeWorkflow.step, "placed", start_workflow_operation=start
            )
        with bind_request({"state": {"request_id": "req-cancel"}}):
            handle = client.get_workflow_handle(workflow_id)
            await handle.execute_update(ProbeWorkflow.step, "canceled")
            await handle.signal(ProbeWorkflow.finish)
        assert await handle.result() == "ok"
    by_step = {line["message"]: line for line in captured.lines}
    assert by_step["activity start"] == {
        **by_step["activity start"],
        "request_id": "req-place",
        "workflow_id": workflow_id,
        "order_id": order_id,
        "portfolio_id": "p-start",
    }
    assert by_step["activity placed"]["request_id"] == "req-place"
    assert by_step["activity canceled"]["request_id"] == "req-cancel"
    assert by_step["activity canceled"]["portfolio_id"] == "p-update"
