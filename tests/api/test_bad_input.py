"""The issue's bad input: each answer is a 4xx envelope naming the field, and afterwards
there is no order row, no reservation and no workflow. The strict body rules (api/body.py)
and the numeric bounds (api/schemas.py) are here too; media types are in
test_media_type.py."""

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


def raw(field: str, literal: bytes, **changes: Any) -> bytes:
    """The good body with `field` set to a JSON literal json.dumps would not write."""
    return body(**{field: "@raw@"}, **changes).replace(b'"@raw@"', literal)


def repeated(text: bytes) -> bytes:
    """The good body with `text` (`"key": value`) appended after its own keys."""
    return body()[:-1] + b", " + text + b"}"


BAD_INPUT = [
    ("malformed JSON", json.dumps(GOOD).encode()[:-5], 422, "VALIDATION_ERROR", "body"),
    ("not an object", b'["AAPL", "10"]', 422, "VALIDATION_ERROR", "body"),
    ("empty body", b"", 422, "VALIDATION_ERROR", "body"),
    ("not UTF-8", b'{"symbol": "\xff"}', 415, "UNSUPPORTED_MEDIA_TYPE", "body"),
    (
        "latin-1 text",
        body(reason="caf\u00e9").replace(b"\\u00e9", b"\xe9"),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "body",
    ),
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
    # Magnitudes: each bounded before any arithmetic (quantize overflowed at 10**22: 500).
    ("integer quantity 10**21", body(quantity=10**21), 422, "VALIDATION_ERROR", "quantity"),
    ("integer quantity 10**22", body(quantity=10**22), 422, "VALIDATION_ERROR", "quantity"),
    ("integer quantity 10**39", body(quantity=10**39), 422, "VALIDATION_ERROR", "quantity"),
    ("negative 10**22", body(quantity=-(10**22)), 422, "VALIDATION_ERROR", "quantity"),
    ("5000-digit integer", raw("quantity", b"9" * 5000), 422, "VALIDATION_ERROR", "quantity"),
    ("exponent literal", raw("quantity", b"1e999999"), 422, "VALIDATION_ERROR", "quantity"),
    ("tiny exponent", raw("quantity", b"1e-999999"), 422, "VALIDATION_ERROR", "quantity"),
    ("NaN literal", raw("quantity", b"NaN"), 422, "VALIDATION_ERROR", "quantity"),
    ("Infinity literal", raw("quantity", b"Infinity"), 422, "VALIDATION_ERROR", "quantity"),
    ("-Infinity literal", raw("quantity", b"-Infinity"), 422, "VALIDATION_ERROR", "quantity"),
    ("exponent text", body(quantity="1e999999"), 422, "VALIDATION_ERROR", "quantity"),
    ("long digit text", body(quantity="9" * 5000), 422, "VALIDATION_ERROR", "quantity"),
    ("long fraction text", body(quantity="1." + "0" * 5000), 422, "VALIDATION_ERROR", "quantity"),
    (
        "integer limit price 10**22",
        body(order_type="limit", limit_price=10**22),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    (
        "integer stop price 10**22",
        body(order_type="stop", stop_price=10**22),
        422,
        "VALIDATION_ERROR",
        "stop_price",
    ),
    (
        "5000-digit limit price",
        raw("limit_price", b"9" * 5000, order_type="limit"),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    (
        "NaN stop price",
        raw("stop_price", b"NaN", order_type="stop"),
        422,
        "VALIDATION_ERROR",
        "stop_price",
    ),
    (
        "exponent limit price",
        body(order_type="limit", limit_price="1e999999"),
        422,
        "VALIDATION_ERROR",
        "limit_price",
    ),
    (
        "long stop price text",
        body(order_type="stop", stop_price="1" * 5000),
        422,
        "VALIDATION_ERROR",
        "stop_price",
    ),
    # Duplicate keys: refused wherever they are, never the last one winning.
    ("side twice", repeated(b'"side": "sell"'), 422, "VALIDATION_ERROR", "side"),
    ("side twice, same value", repeated(b'"side": "buy"'), 422, "VALIDATION_ERROR", "side"),
    ("side twice, escaped", repeated(b'"\\u0073ide": "sell"'), 422, "VALIDATION_ERROR", "side"),
    ("quantity twice", repeated(b'"quantity": "500"'), 422, "VALIDATION_ERROR", "quantity"),
    (
        "a key twice in a nested object",
        repeated(b'"extra": {"a": 1, "a": 2}'),
        422,
        "VALIDATION_ERROR",
        "extra.a",
    ),
    (
        "a key twice in an object in an array",
        repeated(b'"extra": [{"b": 1, "b": 1}]'),
        422,
        "VALIDATION_ERROR",
        "extra.b",
    ),
    (
        "nested too deeply",
        repeated(b'"extra": ' + b"[" * 40 + b"]" * 40),
        422,
        "VALIDATION_ERROR",
        "body",
    ),
    (
        "nested beyond the parser",
        repeated(b'"extra": ' + b"[" * 5000 + b"]" * 5000),
        422,
        "VALIDATION_ERROR",
        "body",
    ),
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


async def test_a_repeated_side_is_refused_rather_than_the_last_one_winning(api: Api):
    """The defect: `"side":"buy"` then `"side":"sell"` placed a sell."""
    content = body(side="buy")[:-1] + b', "side": "sell"}'

    response = await api.caller.post("/api/v1/orders", content=content)

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "side"
    assert "duplicate" in error["details"]["reason"]
    assert await api.counts() == (0, 0)


async def test_the_largest_quantity_text_is_refused_by_its_rule_not_by_an_overflow(api: Api):
    """Twenty digits on both sides of the point: within the bounds, so the field's own rules
    decide (too many decimals) instead of the decimal context's overflow."""
    response = await api.caller.post(
        "/api/v1/orders", content=body(quantity="9" * 20 + "." + "9" * 20)
    )

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "quantity"
    assert "decimal places" in error["details"]["reason"]


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ("/api/v1/orders?limit=" + "9" * 5000, "limit"),
        ("/api/v1/orders?limit=1e999999", "limit"),
        ("/api/v1/orders?limit=NaN", "limit"),
        ("/api/v1/market-data/bars/AAPL?limit=" + "9" * 5000, "limit"),
        ("/api/v1/market-data/bars/AAPL?limit=-1e999999", "limit"),
        ("/api/v1/portfolio/snapshots?limit=" + "9" * 5000, "limit"),
        ("/api/v1/portfolio/snapshots?since=1e999999", "since"),
        ("/api/v1/portfolio/snapshots?until=" + "9" * 5000, "until"),
    ],
)
async def test_numbers_out_of_range_in_the_query_name_the_parameter(
    api: Api, target: str, field: str
):
    response = await api.caller.get(target)

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field
