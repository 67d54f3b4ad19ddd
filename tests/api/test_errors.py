"""The error envelope on every 4xx/5xx (ours, FastAPI's and Starlette's), rate limits,
the body size limit, security headers and request ids."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from activities.store import keys as api_keys
from api.middleware import SECURITY_HEADERS
from bootstrap.settings import RateLimitRule
from tests.api.conftest import MASTER_KEY, Api, Caller, assert_envelope, build_app

pytestmark = pytest.mark.integration


async def test_an_unknown_route_answers_404_with_the_envelope(api: Api):
    signed = await api.caller.get("/api/v1/nowhere")
    unsigned = await api.http.get("/nowhere")

    assert_envelope(signed, 404, "NOT_FOUND")
    assert_envelope(unsigned, 404, "NOT_FOUND")


async def test_a_wrong_method_answers_405_with_the_envelope_and_allow(api: Api):
    response = await api.caller.post("/api/v1/portfolio", json={})

    error = assert_envelope(response, 405, "VALIDATION_ERROR")
    assert error["details"]["field"] == "method"
    assert response.headers["Allow"] == "GET"


async def test_an_unhandled_exception_answers_500_without_internals(api: Api):
    async def boom() -> None:
        raise RuntimeError("db password is hunter2")

    api.app.add_api_route("/api/v1/boom", boom)
    response = await api.caller.get("/api/v1/boom")

    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert error["request_id"] in error["message"]


async def test_a_failing_market_data_source_answers_503_service_unavailable(api: Api):
    api.stack.feed.set_bars("IBM", [])  # known symbol, no quote scripted: the feed raises

    quote = await api.caller.get("/api/v1/market-data/quote/IBM")
    placing = await api.place(symbol="IBM")

    for response in (quote, placing):
        assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
        assert response.headers["Retry-After"] == "1"
    assert await api.counts() == (0, 0)


async def test_an_oversized_body_answers_413_before_anything_else(api: Api):
    big = b"{" + b" " * 20_000 + b"}"
    signed = await api.caller.post("/api/v1/orders", content=big)
    declared = await api.http.post("/api/v1/orders", content=big)

    for response in (signed, declared):
        error = assert_envelope(response, 413, "VALIDATION_ERROR")
        assert error["details"]["field"] == "body"
        assert error["details"]["max_bytes"] == 16 * 1024


async def test_a_query_parameter_error_names_the_field(api: Api):
    response = await api.caller.get("/api/v1/market-data/bars/AAPL?timeframe=2min")

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "timeframe"


async def test_a_malformed_order_id_names_the_field(api: Api):
    response = await api.caller.get("/api/v1/orders/not-a-uuid")

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "order_id"


async def test_ready_answers_503_per_component_when_the_broker_is_down(api: Api):
    async def down() -> bool:
        return False

    api.app.state.deps.broker_ready = down
    response = await api.http.get("/ready")

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["Retry-After"] == "2"
    components = error["details"]["components"]
    assert components["broker"]["status"] == "down"
    assert {components[name]["status"] for name in ("database", "temporal", "market_data")} == {
        "up"
    }


@pytest.fixture
async def limited(api: Api) -> AsyncIterator[tuple[Caller, Caller]]:
    """An app whose place_order allows two orders a minute and no burst; two keys."""
    app = build_app(
        api.stack,
        api_rate_limits={"place_order": RateLimitRule(max_requests=2, window_seconds=60)},
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://l") as http:
        callers = []
        for _ in range(2):
            key_id, secret = await api_keys.create_key(api.pool, api.stack.portfolio.id, MASTER_KEY)
            callers.append(Caller(http, key_id, secret, api.stack.portfolio.id))
        yield callers[0], callers[1]


async def test_the_rate_limit_answers_429_with_retry_after_per_portfolio_and_route(
    api: Api, limited: tuple[Caller, Caller]
):
    first, second = limited
    answers = [await api.place(first, order_type="limit", limit_price="100.00") for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [201, 201]
    error = assert_envelope(answers[2], 429, "RATE_LIMIT_EXCEEDED")
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 30
    assert error["details"]["route_class"] == "place_order"
    assert error["details"]["scope"] == "portfolio" and error["details"]["max_requests"] == 2
    # Another route class still passes; another key of the same portfolio shares its bucket.
    assert (await first.get("/api/v1/portfolio")).status_code == 200
    second_answer = await api.place(second, order_type="limit", limit_price="100.00")
    assert_envelope(second_answer, 429, "RATE_LIMIT_EXCEEDED")
    orders, _ = await api.counts()
    assert orders == 2


async def test_security_headers_and_a_request_id_are_on_every_answer(api: Api):
    answers = [
        await api.caller.get("/api/v1/portfolio"),
        await api.caller.get("/api/v1/nowhere"),
        await api.http.get("/api/v1/portfolio"),
        await api.http.get("/health"),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            if name != "Content-Security-Policy":
                assert answer.headers[name] == value, name
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert answer.headers["X-Request-ID"].startswith("req-")
    assert len({answer.headers["X-Request-ID"] for answer in answers}) == len(answers)


async def test_a_clients_own_request_id_is_kept_when_it_is_a_plain_token(api: Api):
    mine = await api.caller.get("/api/v1/nowhere", headers={"X-Request-ID": "trace-42"})
    odd = await api.http.get("/health", headers={"X-Request-ID": "a b <script>"})

    assert mine.headers["X-Request-ID"] == "trace-42"
    assert mine.json()["error"]["request_id"] == "trace-42"
    assert odd.headers["X-Request-ID"].startswith("req-")


async def test_the_docs_page_loads_nothing_from_another_origin(api: Api):
    response = await api.http.get("/docs")

    policy = response.headers["Content-Security-Policy"]
    assert "http" not in policy and "script-src 'self'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_the_envelope_timestamp_is_the_servers_utc_time(api: Api):
    before = time.gmtime(time.time() - 1)
    error = assert_envelope(await api.http.get("/nowhere"), 404, "NOT_FOUND")
    stamp = time.strptime(error["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert stamp >= before
