"""Brackets, OCO and OTO through the API on a real worker, the real PostgreSQL and the paper
venue: a bracket placed over HTTP shows its class and legs on GET, and every malformed
structure is refused with a 422 naming the field, creating nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api import client_cli as commands
from domain.orders import OrderStatus
from tests.api.conftest import Api, assert_envelope, fresh_id
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration

TP = {"limit_price": "155.00"}
SL = {"stop_price": "145.00"}


async def _legs(api: Api, order_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        answer = await api.caller.get(f"/api/v1/orders/{order_id}")
        assert answer.status_code == 200, answer.text
        legs = answer.json()["legs"] or []
        exits = [leg for leg in legs if not leg["client_order_id"].endswith("-entry")]
        if len(exits) == count and all(leg["status"] == "submitted" for leg in exits):
            return list(legs)
        assert time.monotonic() < deadline, f"timed out waiting for legs: {legs}"
        await asyncio.sleep(0.02)


async def test_a_bracket_over_http_shows_its_class_and_legs_then_cancels_them_all(api: Api):
    placed = await api.place(order_class="bracket", take_profit=TP, stop_loss=SL)

    assert placed.status_code == 201, placed.text
    body = placed.json()
    assert body["order_class"] == "bracket" and body["status"] == "accepted"
    legs = await _legs(api, body["order_id"], 2)
    kinds = sorted((leg["client_order_id"].rsplit("-", 1)[-1], leg["status"]) for leg in legs)
    assert kinds == [("entry", "filled"), ("sl1", "submitted"), ("tp1", "submitted")]
    stop = next(leg for leg in legs if leg["client_order_id"].endswith("-sl1"))
    assert (stop["side"], stop["order_type"], stop["stop_price"]) == ("sell", "stop", "145.00")

    canceled = await api.caller.delete(f"/api/v1/orders/{body['order_id']}")

    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "filled"  # the entry filled completely
    for leg in legs:
        stored = await api.stack.order(UUID(leg["order_id"]))
        assert stored.status in (OrderStatus.FILLED, OrderStatus.CANCELED)
    portfolio = await api.stack.portfolio_now()
    assert portfolio.positions["AAPL"].quantity == 10  # the legs were canceled, not filled
    assert portfolio.reserved() == 0 and portfolio.ledger_imbalance() == 0


async def test_an_oco_needs_a_held_position(api: Api):
    before = await api.counts()
    answer = await api.place(side="sell", order_class="oco", take_profit=TP, stop_loss=SL)
    assert assert_envelope(answer, 422, "VALIDATION_ERROR")["details"]["field"] == "symbol"

    placed = await api.place(quantity="10")
    await api.stack.wait_for(UUID(placed.json()["order_id"]), terminal(OrderStatus.FILLED))
    too_many = await api.place(
        side="sell", quantity="11", order_class="oco", take_profit=TP, stop_loss=SL
    )
    assert assert_envelope(too_many, 422, "VALIDATION_ERROR")["details"]["field"] == "quantity"
    wrong_side = await api.place(  # a short's exits, but the position is long
        side="buy",
        order_class="oco",
        take_profit={"limit_price": "140.00"},
        stop_loss={"stop_price": "160.00"},
    )
    assert assert_envelope(wrong_side, 422, "VALIDATION_ERROR")["details"]["field"] == "side"
    orders, reservations = await api.counts()
    assert (orders, reservations) == (before[0] + 1, before[1])  # only the buy


BAD = [
    ({"order_class": "bracket", "stop_loss": SL}, "take_profit.limit_price"),
    ({"order_class": "bracket", "take_profit": TP}, "stop_loss.stop_price"),
    ({"order_class": "bracket", "take_profit": {}, "stop_loss": SL}, "take_profit.limit_price"),
    (
        {"order_class": "bracket", "take_profit": {"limit_price": "140.00"}, "stop_loss": SL},
        "take_profit.limit_price",
    ),  # a long's take-profit below its stop
    (
        {
            "order_class": "bracket",
            "side": "sell",
            "take_profit": TP,
            "stop_loss": SL,
        },
        "take_profit.limit_price",
    ),  # a short's take-profit above its stop
    (
        {
            "order_class": "bracket",
            "limit_price": "156.00",
            "take_profit": TP,
            "stop_loss": SL,
        },
        "take_profit.limit_price",
    ),  # the take-profit on the wrong side of a limit entry
    (
        {
            "order_class": "bracket",
            "limit_price": "144.00",
            "take_profit": TP,
            "stop_loss": SL,
        },
        "stop_loss.stop_price",
    ),  # the stop-loss on the wrong side of a limit entry
    (
        {"order_class": "bracket", "take_profit": {"limit_price": "150.01"}, "stop_loss": SL},
        "take_profit.limit_price",
    ),  # a market entry pays the ask (150.02): a take-profit at or below it is wrong
    (
        {"order_class": "oto", "stop_loss": {"stop_price": "150.05"}},
        "stop_loss.stop_price",
    ),  # a long's stop above the ask of its market entry
    (
        {
            "order_class": "bracket",
            "take_profit": TP,
            "stop_loss": {"stop_price": "145.00", "limit_price": "146.00"},
        },
        "stop_loss.limit_price",
    ),
    (
        {"order_class": "bracket", "stop_price": "149.00", "take_profit": TP, "stop_loss": SL},
        "order_type",
    ),
    ({"order_class": "oto", "take_profit": TP, "stop_loss": SL}, "take_profit"),
    ({"order_class": "oto"}, "take_profit"),
    ({"take_profit": TP}, "take_profit"),
    ({"order_class": "twap"}, "order_class"),
    (
        {"order_class": "bracket", "time_in_force": "ioc", "take_profit": TP, "stop_loss": SL},
        "time_in_force",
    ),
    (
        {"order_class": "oco", "side": "sell", "limit_price": "155.00", "take_profit": TP},
        "limit_price",
    ),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
async def test_a_malformed_structure_is_refused_naming_the_field_and_creates_nothing(
    api: Api, body: dict[str, Any], field: str
):
    before = await api.counts()
    client_order_id = fresh_id()

    answer = await api.place(client_order_id=client_order_id, **body)

    details = assert_envelope(answer, 422, "VALIDATION_ERROR")["details"]
    assert details["field"] == field, details
    assert await api.counts() == before
    assert not await api.workflow_exists(client_order_id)


async def test_the_take_profit_and_stop_loss_options_place_a_bracket_and_an_oco(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    creds = ["--credentials", str(credentials), "--json"]
    status, out, err = await _trading(
        capsys, "order", "place", "AAPL", "10", "buy", "--tif", "gtc",
        "--take-profit", "155.00", "--stop-loss", "145.00/144.50", *creds,
    )  # fmt: skip
    assert status == 0, err
    bracket = json.loads(out)
    assert bracket["order_class"] == "bracket" and bracket["status"] == "accepted"
    legs = await _legs(api, bracket["order_id"], 2)
    stop = next(leg for leg in legs if leg["client_order_id"].endswith("-sl1"))
    assert (stop["order_type"], stop["stop_price"], stop["limit_price"]) == (
        "stop_limit",
        "145.00",
        "144.50",
    )

    status, out, err = await _trading(
        capsys, "order", "place", "AAPL", "5", "buy", "--take-profit", "140.00",
        "--stop-loss", "160.00", "--oco", *creds,
    )  # fmt: skip
    assert status == 1 and "side" in err  # the position is long: its exits sell
    status, out, err = await _trading(
        capsys, "order", "place", "AAPL", "5", "buy", "--take-profit", "140.00", *creds,
    )  # fmt: skip
    assert status == 1 and "take_profit" in err  # an OTO's take-profit above the entry


async def _trading(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(commands.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err
