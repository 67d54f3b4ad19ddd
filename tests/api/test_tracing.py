"""OpenTelemetry (the otel extra, TRACING): one order is one trace, from the POST through the
workflow and its activities to the fill, with the SQL statements inside. In-memory exporter."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import httpx
import pytest
from temporalio.client import Client

from activities.store import keys as api_keys
from bootstrap.settings import Settings
from bootstrap.tracing import instrument_api, instrument_asyncpg, traced_client, tracer_provider
from domain.orders import OrderStatus
from tests.api.conftest import MASTER_KEY, Caller, build_app, fresh_id
from tests.workflows.harness import running_stack, terminal

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


@dataclass
class TracedEnvironment:
    """The test environment as the stack sees it, with the traced client."""

    client: Client


def test_tracing_is_off_by_default():
    assert Settings().tracing == "off"
    assert tracer_provider(Settings(), "trading-test") is None


async def test_one_order_is_one_trace_from_the_post_to_the_fill(temporal_env, db_pool):
    exporter = InMemorySpanExporter()
    provider = tracer_provider(Settings(), "trading-test", exporter)
    asyncpg_instrumentor = instrument_asyncpg(provider)
    try:
        env = TracedEnvironment(traced_client(temporal_env.client, provider))
        async with running_stack(env, db_pool) as stack:  # type: ignore[arg-type]
            stack.feed.set_quote("AAPL", "150.00", "150.02")
            app = build_app(stack)
            instrument_api(app, provider)
            key_id, secret = await api_keys.create_key(db_pool, stack.portfolio.id, MASTER_KEY)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
                caller = Caller(http, key_id, secret, stack.portfolio.id)
                order = {"symbol": "AAPL", "quantity": "3", "side": "buy"}
                response = await caller.post(
                    "/api/v1/orders", json=order | {"client_order_id": fresh_id()}
                )
            assert response.status_code == 201, response.text
            order_id = UUID(response.json()["order_id"])
            await stack.wait_for(order_id, terminal(OrderStatus.FILLED))
            # The workflow completes after its last activity (and so its span) ended.
            await env.client.get_workflow_handle(f"order-{order_id}").result()
    finally:
        if asyncpg_instrumentor is not None:
            asyncpg_instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    (post,) = [s for s in spans if s.name == "POST /api/v1/orders" and s.parent is None]
    trace = [s for s in spans if s.context.trace_id == post.context.trace_id]
    names = {s.name for s in trace}
    for expected in (
        "StartUpdateWithStartWorkflow:OrderWorkflow",
        "RunWorkflow:OrderWorkflow",
        "RunActivity:accept_order",
        "RunActivity:submit_order",
        "RunActivity:apply_fill",
    ):
        assert expected in names, f"{expected} is not in the order's trace: {sorted(names)}"
    (fill,) = [s for s in trace if s.name == "RunActivity:apply_fill"]
    statements = [
        s for s in trace if s.parent is not None and s.parent.span_id == fill.context.span_id
    ]
    assert statements, "the fill's SQL statements are not in its trace"
    assert all(s.attributes.get("db.system") == "postgresql" for s in statements)
