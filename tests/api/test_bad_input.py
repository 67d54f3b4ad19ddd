"""The issue's bad input: each answer is a 4xx envelope naming the field, and afterwards
there is no order row, no reservation and no workflow."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import Api, assert_envelope

pytestmark = pytest.mark.integration

CLIENT_ORDER_ID = "bad-input-1"
GOOD = {
    "symbol": "AAPL",
    "quantity": "10",
    "side": "buy",
    "time_in_force": "gtc",
    "client_order_id": CLIENT_ORDER_ID,
}


def body(**changes: Any) -> bytes:
    order: dict[str, Any] = {**GOOD, **changes}
    return json.dumps({k: v for k, v in order.items() if v is not ...}).encode()


BAD_INPUT = [
    ("malformed JSON", json.dumps(GOOD).encode()[:-5], 422, "VALIDATION_ERROR", "body"),
    ("not an object", b'["AAPL", "10"]', 422, "VALIDATION_ERROR", "body"),
    ("empty body", b"", 422, "VALIDATION_ERROR", "body"),
    ("not UTF-8", b'{"symbol": "\xff"}', 400, "VALIDATION_ERROR", "body"),
    ("quantity of the wrong type", body(quantity=True), 422, "VALIDATION_ERROR", "quantity"),
    ("symbol of the wrong type", body(symbol=123), 422, "VALIDATION_ERROR", "symbol"),
    ("side of the wrong type", body(side=["buy"]), 422, "VALIDATION_ERROR", "side"),
    ("zero quantity", body(quantity="0"), 422, "VALIDATION_ERROR", "quantity"),
    ("negative quantity", body(quantity="-5"), 422, "VALIDATION_ERROR", "quantity"),
    ("negative integer quantity", body(quantity=-5), 422, "VALIDATION_ERROR", "quantity"),
    ("float quantity", body(quantity=1.5), 422, "VALIDATION_ERROR", "quantity"),
    ("absurd precision", body(quantity="1.0000001"), 422, "VALIDATION_ERROR", "quantity"),
    ("absurd size", body(quantity="1" * 30), 422, "VALIDATION_ERROR", "quantity"),
    ("exponent", body(quantity="1e3"), 422, "VALIDATION_ERROR", "quantity"),
    ("not a number", body(quantity="NaN"), 422, "VALIDATION_ERROR", "quantity"),
    (
        "sub-penny limit price",
        body(order_type="limit", limit_price="150.001"),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    (
        "absurd limit price",
        body(order_type="limit", limit_price="99999999.00"),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    (
        "limit order without a limit price",
        body(order_type="limit"),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    (
        "stop order without a stop price",
        body(order_type="stop"),
        422,
        "VALIDATION_ERROR",
        "stop_price",
    ),
    (
        "market order with a limit price",
        body(order_type="market", limit_price="150.00"),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    ("unknown side", body(side="hold"), 422, "VALIDATION_ERROR", "side"),
    ("upper-case enum", body(side="BUY"), 422, "VALIDATION_ERROR", "side"),
    ("unknown order type", body(order_type="iceberg"), 422, "VALIDATION_ERROR", "order_type"),
    (
        "unknown time in force",
        body(time_in_force="forever"),
        422,
        "VALIDATION_ERROR",
        "time_in_force",
    ),
    ("missing side", body(side=...), 422, "VALIDATION_ERROR", "side"),
    ("unknown field", body(leverage="10"), 422, "VALIDATION_ERROR", "leverage"),
    ("lower-case symbol", body(symbol="aapl"), 422, "VALIDATION_ERROR", "symbol"),
    ("unknown symbol", body(symbol="ZZZZ"), 422, "SYMBOL_NOT_FOUND", "symbol"),
    (
        "bad client_order_id",
        body(client_order_id="a b\n"),
        422,
        "VALIDATION_ERROR",
        "client_order_id",
    ),
    (
        "oversized body",
        body(reason="x" * 20_000),
        413,
        "VALIDATION_ERROR",
        "body",
    ),
]


@pytest.mark.parametrize(
    ("content", "status", "code", "field"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
async def test_bad_input_is_refused_with_the_field_and_leaves_nothing_behind(
    api: Api, content: bytes, status: int, code: str, field: str
):
    response = await api.caller.post("/api/v1/orders", content=content)

    error = assert_envelope(response, status, code)
    assert error["details"]["field"] == field, error
    assert error["details"]["reason"]
    assert await api.counts() == (0, 0)  # no order row, no reservation
    assert not await api.workflow_exists(CLIENT_ORDER_ID)


async def test_the_good_body_of_these_cases_is_accepted(api: Api):
    """The control: the same body without the defect places the order."""
    response = await api.caller.post("/api/v1/orders", content=body())

    assert response.status_code == 201, response.text
    assert await api.workflow_exists(CLIENT_ORDER_ID)


async def test_every_field_error_is_listed_and_no_input_is_echoed(api: Api):
    response = await api.caller.post(
        "/api/v1/orders", content=body(quantity="-1", side="hold", symbol="secret-ish")
    )

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    fields = {item["field"] for item in error["details"]["errors"]}
    assert {"quantity", "side", "symbol"} <= fields
    assert "secret-ish" not in response.text
