"""Cancel-all (DELETE /orders) and close-position (DELETE /positions/{symbol}) through the
API on a real worker, the real PostgreSQL and the paper venue."""

from __future__ import annotations

import asyncio
import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api import client_cli as commands
from api.signing import signed_headers
from bootstrap import control
from contracts.payloads import protection_workflow_id, workflow_id_for
from domain.orders import OrderStatus
from domain.portfolio import TradingState
from tests.api.conftest import Api, assert_envelope
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration

HISTORIES = Path(__file__).parent.parent / "workflows" / "histories" / "order_classes"


async def _filled_buy(api: Api, quantity: str) -> None:
    placed = await api.place(quantity=quantity)
    assert placed.status_code == 201, placed.text
    await api.stack.wait_for(UUID(placed.json()["order_id"]), terminal(OrderStatus.FILLED))


async def _held(api: Api, symbol: str = "AAPL") -> Decimal:
    portfolio = await api.stack.portfolio_now()
    position = portfolio.positions.get(symbol)
    return Decimal(0) if position is None else position.quantity


async def test_cancel_all_cancels_every_open_order_of_the_key_and_nothing_else(api: Api):
    resting = []
    for price in ("140.00", "141.00", "142.00"):
        answer = await api.place(order_type="limit", limit_price=price)
        assert answer.status_code == 201, answer.text
        resting.append(answer.json()["order_id"])
    await _filled_buy(api, "2")  # a closed order: not listed, untouched
    other = await api.other_portfolio()
    theirs = await api.place(other, order_type="limit", limit_price="139.00")
    assert theirs.status_code == 201

    answer = await api.caller.delete("/api/v1/orders")

    assert answer.status_code == 200, answer.text
    listed = answer.json()["orders"]
    assert [o["order_id"] for o in listed] == resting  # oldest first, only the open ones
    assert all(o["status"] == "canceled" and o["delivered"] for o in listed), listed
    for order_id in resting:
        stored = await api.stack.order(UUID(order_id))
        assert stored.status is OrderStatus.CANCELED
    portfolio = await api.stack.portfolio_now()
    assert portfolio.reserved() == 0  # every reservation released
    theirs_now = await api.stack.order(UUID(theirs.json()["order_id"]))
    assert theirs_now.status is OrderStatus.ACCEPTED or theirs_now.status.is_open
    assert not theirs_now.status.is_terminal

    again = await api.caller.delete("/api/v1/orders")
    assert again.status_code == 200
    assert again.json() == {"orders": []}


async def test_close_position_by_percentage_then_the_rest_then_nothing_left(api: Api):
    await _filled_buy(api, "10")
    assert await _held(api) == 10

    half = await api.caller.delete("/api/v1/positions/AAPL?percentage=50")

    assert half.status_code == 201, half.text
    body = half.json()
    assert (body["side"], body["order_type"], body["quantity"]) == ("sell", "market", "5")
    await api.stack.wait_for(UUID(body["order_id"]), terminal(OrderStatus.FILLED))
    assert await _held(api) == 5

    rest = await api.caller.delete("/api/v1/positions/AAPL")
    assert rest.status_code == 201, rest.text
    assert rest.json()["quantity"] == "5"
    await api.stack.wait_for(UUID(rest.json()["order_id"]), terminal(OrderStatus.FILLED))
    assert await _held(api) == 0

    gone = await api.caller.delete("/api/v1/positions/AAPL")
    assert_envelope(gone, 404, "NOT_FOUND")


async def test_close_position_by_quantity_and_a_retry_with_its_client_order_id(api: Api):
    await _filled_buy(api, "10")
    target = "/api/v1/positions/AAPL?quantity=3&client_order_id=close-once"

    first = await api.caller.delete(target)
    again = await api.caller.delete(target)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert first.json()["order_id"] == again.json()["order_id"]
    await api.stack.wait_for(UUID(first.json()["order_id"]), terminal(OrderStatus.FILLED))
    assert await _held(api) == 7


async def test_a_short_position_closes_with_a_buy(api: Api):
    placed = await api.place(side="sell", quantity="4")
    assert placed.status_code == 201, placed.text
    await api.stack.wait_for(UUID(placed.json()["order_id"]), terminal(OrderStatus.FILLED))
    assert await _held(api) == -4

    closing = await api.caller.delete("/api/v1/positions/AAPL")

    assert closing.status_code == 201, closing.text
    assert (closing.json()["side"], closing.json()["quantity"]) == ("buy", "4")
    await api.stack.wait_for(UUID(closing.json()["order_id"]), terminal(OrderStatus.FILLED))
    assert await _held(api) == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("quantity=1&percentage=50", "percentage"),
        ("percentage=0", "percentage"),
        ("percentage=100.5", "percentage"),
        ("percentage=1.5e1", "percentage"),
        ("quantity=11", "quantity"),
        ("quantity=0", "quantity"),
        ("quantity=0.0000001", "quantity"),
        ("quantity=abc", "quantity"),
    ],
)
async def test_a_bad_close_answers_422_with_the_field_and_creates_nothing(
    api: Api, query: str, field: str
):
    await _filled_buy(api, "10")
    before = await api.counts()

    answer = await api.caller.delete(f"/api/v1/positions/AAPL?{query}")

    error = assert_envelope(answer, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field, error
    assert await api.counts() == before


async def test_a_close_of_shares_open_sells_already_claim_answers_409(api: Api):
    await _filled_buy(api, "10")
    resting = await api.place(side="sell", quantity="6", order_type="limit", limit_price="999")
    assert resting.status_code == 201, resting.text
    before = await api.counts()

    whole = await api.caller.delete("/api/v1/positions/AAPL")

    error = assert_envelope(whole, 409, "CONFLICT")
    assert error["details"]["free"] == "4"
    assert await api.counts() == before
    part = await api.caller.delete("/api/v1/positions/AAPL?quantity=4")
    assert part.status_code == 201, part.text


async def test_a_close_without_a_position_answers_404(api: Api):
    answer = await api.caller.delete("/api/v1/positions/MSFT")
    assert_envelope(answer, 404, "NOT_FOUND")


async def _trading(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(commands.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_the_cancel_all_and_close_commands(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    creds = ["--credentials", str(credentials)]
    await _filled_buy(api, "10")
    resting = await api.place(order_type="limit", limit_price="140.00")
    assert resting.status_code == 201

    status, out, err = await _trading(capsys, "order", "cancel", *creds)
    assert status == 1 and "--all" in err
    status, out, _ = await _trading(capsys, "order", "cancel", "--all", *creds)
    assert status == 0, out
    assert resting.json()["order_id"] in out and "canceled" in out
    status, out, _ = await _trading(capsys, "order", "cancel", "--all", *creds)
    assert status == 0 and "no open orders" in out

    status, out, _ = await _trading(
        capsys, "position", "close", "AAPL", "--quantity", "4", *creds, "--json"
    )
    assert status == 0, out
    closing = json.loads(out)
    assert (closing["side"], closing["quantity"]) == ("sell", "4")
    await api.stack.wait_for(UUID(closing["order_id"]), terminal(OrderStatus.FILLED))
    status, _, err = await _trading(
        capsys, "position", "close", "AAPL", "--percentage", "0", *creds
    )
    assert status == 1 and "VALIDATION_ERROR" in err and "percentage" in err
    assert await _held(api) == 6

    status, out, _ = await _trading(
        capsys, "order", "place", "AAPL", "6", "sell", "--trail", "1.5%", "--tif", "gtc",
        "--no-wait", *creds, "--json",
    )  # fmt: skip
    assert status == 0, out
    trailing = json.loads(out)
    assert (trailing["order_type"], trailing["trail_percent"]) == ("trailing_stop", "1.5")
    status, out, _ = await _trading(capsys, "order", "cancel", "--all", *creds)
    assert status == 0 and trailing["order_id"] in out and "canceled" in out


# -- trailing stops ------------------------------------------------------------------------


async def test_a_trailing_stop_is_placed_and_read_back_with_its_trail(api: Api):
    await _filled_buy(api, "10")
    placed = await api.place(side="sell", trail_percent="1.5")  # the type follows the trail

    assert placed.status_code == 201, placed.text
    body = placed.json()
    assert (body["order_type"], body["trail_percent"], body["trail_price"]) == (
        "trailing_stop",
        "1.5",
        None,
    )
    read = await api.caller.get(f"/api/v1/orders/{body['order_id']}")
    assert read.json()["trail_percent"] == "1.5" and read.json()["status"] != "rejected"
    portfolio = await api.stack.portfolio_now()
    assert portfolio.reserved() <= Decimal("1.00")  # it reduces the long: the commission only


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"order_type": "trailing_stop", "trail_price": "0"}, "trail_price"),
        ({"order_type": "trailing_stop", "trail_price": "-1.00"}, "trail_price"),
        ({"order_type": "trailing_stop", "trail_percent": "0"}, "trail_percent"),
        ({"order_type": "trailing_stop", "trail_percent": "-2"}, "trail_percent"),
        ({"order_type": "trailing_stop", "trail_percent": "50.01"}, "trail_percent"),
        ({"order_type": "trailing_stop", "trail_percent": "1.001"}, "trail_percent"),
        ({"order_type": "trailing_stop", "trail_price": "1.001"}, "trail_price"),
        ({"order_type": "trailing_stop"}, "trail_price"),
        ({"trail_price": "1.00", "trail_percent": "1"}, "trail_price"),
        ({"order_type": "market", "trail_price": "1.00"}, "trail_price"),
        ({"order_type": "limit", "limit_price": "140.00", "trail_percent": "1"}, "trail_percent"),
        ({"trail_price": "1.00", "time_in_force": "ioc"}, "time_in_force"),
    ],
)
async def test_a_bad_trail_answers_422_with_the_field_and_creates_nothing(
    api: Api, fields: dict[str, str], field: str
):
    before = await api.counts()

    answer = await api.place(side="sell", **fields)

    error = assert_envelope(answer, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field, error
    assert await api.counts() == before


# -- execution algorithms (parents) ---------------------------------------------------------

TWAP = {"algorithm": "twap", "duration_seconds": 3600, "slices": 12}


async def _legs(api: Api, order_id: str, count: int, status: str) -> list[dict[str, str]]:
    async def check() -> list[dict[str, str]] | None:
        legs = (await api.caller.get(f"/api/v1/orders/{order_id}")).json()["legs"]
        return legs if len(legs) == count and all(x["status"] == status for x in legs) else None

    deadline = asyncio.get_running_loop().time() + 15
    while (legs := await check()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no {count} {status} legs"
        await asyncio.sleep(0.02)
    return legs


async def test_a_twap_order_shows_its_legs_and_a_cancel_cancels_them(api: Api):
    placed = await api.place(
        quantity="120", order_type="limit", limit_price="140.00", execution=TWAP
    )

    assert placed.status_code == 201, placed.text
    parent = placed.json()
    assert (parent["order_class"], parent["status"], parent["parent_order_id"]) == (
        "twap",
        "accepted",
        None,
    )
    (leg,) = await _legs(api, parent["order_id"], 1, "submitted")
    assert leg["quantity"] == "10"
    child = (await api.caller.get(f"/api/v1/orders/{leg['order_id']}")).json()
    assert child["parent_order_id"] == parent["order_id"] and child["order_class"] == "simple"

    canceled = await api.caller.delete(f"/api/v1/orders/{parent['order_id']}")

    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    await _legs(api, parent["order_id"], 1, "canceled")
    assert await _closed(api, parent["order_id"])  # no slice can follow
    portfolio = await api.stack.portfolio_now()
    assert portfolio.reserved() == 0


async def test_cancel_all_stops_a_parent_and_its_children(api: Api):
    placed = await api.place(
        quantity="120", order_type="limit", limit_price="140.00", execution=TWAP
    )
    assert placed.status_code == 201, placed.text
    parent_id = placed.json()["order_id"]
    await _legs(api, parent_id, 1, "submitted")

    answer = await api.caller.delete("/api/v1/orders")

    assert answer.status_code == 200, answer.text
    listed = {o["order_id"]: o for o in answer.json()["orders"]}
    assert parent_id in listed and len(listed) == 2
    await _legs(api, parent_id, 1, "canceled")
    stored = await api.stack.order(UUID(parent_id))
    assert stored.status is OrderStatus.CANCELED
    assert await _closed(api, parent_id)  # no slice can follow
    assert (await api.stack.portfolio_now()).reserved() == 0


async def _closed(api: Api, order_id: str) -> bool:
    """The order's workflow has completed: a parent that closed sends no more slices."""
    handle = api.stack.env.client.get_workflow_handle(workflow_id_for(UUID(order_id)))
    deadline = asyncio.get_running_loop().time() + 15
    while (await handle.describe()).status is not WorkflowExecutionStatus.COMPLETED:
        assert asyncio.get_running_loop().time() < deadline, "the parent did not close"
        await asyncio.sleep(0.02)
    return True


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"execution": TWAP | {"slices": 1}}, "execution.slices"),
        ({"execution": TWAP | {"slices": 101}}, "execution.slices"),
        ({"execution": TWAP | {"slices": "12"}}, "execution.slices"),
        ({"execution": TWAP | {"duration_seconds": 59}}, "execution.duration_seconds"),
        ({"execution": TWAP | {"algorithm": "pov"}}, "execution.algorithm"),
        ({"execution": TWAP | {"extra": 1}}, "execution.extra"),
        ({"execution": TWAP, "stop_price": "160.00"}, "execution"),
        ({"execution": TWAP, "time_in_force": "ioc"}, "time_in_force"),
    ],
)
async def test_a_bad_execution_answers_422_with_the_field_and_creates_nothing(
    api: Api, fields: dict[str, Any], field: str
):
    before = await api.counts()

    answer = await api.place(**fields)

    error = assert_envelope(answer, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field, error
    assert await api.counts() == before


async def test_halting_cancels_a_parent_and_its_children(api: Api):
    placed = await api.place(
        quantity="120", order_type="limit", limit_price="140.00", execution=TWAP
    )
    assert placed.status_code == 201, placed.text
    parent_id = placed.json()["order_id"]
    await _legs(api, parent_id, 1, "submitted")

    await control.set_trading_state(
        api.stack.env.client,
        api.pool,
        api.caller.portfolio_id,
        TradingState.HALTED,
        "kill switch test",
        task_queue=api.stack.task_queue,
    )

    await _legs(api, parent_id, 1, "canceled")
    assert await _closed(api, parent_id)  # the parent stopped: no slice follows
    stored = await api.stack.order(UUID(parent_id))
    assert stored.status is OrderStatus.CANCELED
    assert (await api.stack.portfolio_now()).reserved() == 0


# -- order events (SSE) --------------------------------------------------------------------


async def _read_events(
    api: Api, server: str, target: str, count: int, last_event_id: str | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """Read `count` events of the stream at `target` (signed like any GET), then hang up."""
    headers = signed_headers(
        api.caller.key_id, api.caller.secret, "GET", target, b"", int(time.time())
    )
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    found: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=server, timeout=20) as http:
        async with http.stream("GET", target, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if fields:
                    found.append((fields["id"], fields["event"], json.loads(fields["data"])))
                    fields = {}
                if len(found) == count:
                    break
    return found


async def test_the_event_stream_resumes_from_last_event_id_without_a_gap_or_a_repeat(
    api: Api, server: str
):
    first = await api.place(quantity="2")
    await api.stack.wait_for(UUID(first.json()["order_id"]), terminal(OrderStatus.FILLED))
    resting = await api.place(order_type="limit", limit_price="140.00")
    assert resting.status_code == 201

    head = await _read_events(api, server, "/api/v1/events?since=0", 2)

    assert [(e[1], e[2]["order_id"]) for e in head] == [
        ("new", first.json()["order_id"]),
        ("fill", first.json()["order_id"]),
    ]
    assert head[1][2]["status"] == "filled" and head[1][2]["average_fill_price"] == "150.02"
    # Meanwhile: the resting order is canceled and another order fills.
    canceled = await api.caller.delete(f"/api/v1/orders/{resting.json()['order_id']}")
    assert canceled.status_code == 200
    later = await api.place(quantity="1")
    await api.stack.wait_for(UUID(later.json()["order_id"]), terminal(OrderStatus.FILLED))

    rest = await _read_events(api, server, "/api/v1/events", 4, last_event_id=head[-1][0])

    assert [(e[1], e[2]["order_id"]) for e in rest] == [
        ("new", resting.json()["order_id"]),
        ("canceled", resting.json()["order_id"]),
        ("new", later.json()["order_id"]),
        ("fill", later.json()["order_id"]),
    ]
    ids = [int(e[0]) for e in head + rest]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    other = await api.other_portfolio()
    theirs = await api.place(other, quantity="1")
    assert theirs.status_code == 201
    stored = await api.pool.fetchval(
        "SELECT count(*) FROM order_events WHERE portfolio_id = $1", api.caller.portfolio_id
    )
    assert stored == 6  # the other portfolio's events are not in this key's stream


async def test_a_bad_last_event_id_answers_422(api: Api):
    answer = await api.caller.get("/api/v1/events", headers={"Last-Event-ID": "abc"})
    error = assert_envelope(answer, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "Last-Event-ID"


async def test_the_twap_and_watch_commands(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    creds = ["--credentials", str(credentials)]
    status, out, err = await _trading(
        capsys, "order", "place", "AAPL", "24", "buy", "--limit", "140.00", "--tif", "gtc",
        "--twap", "3600/12", "--no-wait", *creds, "--json",
    )  # fmt: skip
    assert status == 0, err
    parent = json.loads(out)
    assert parent["order_class"] == "twap" and parent["quantity"] == "24"
    await _legs(api, parent["order_id"], 1, "submitted")
    status, _, err = await _trading(
        capsys, "order", "place", "AAPL", "1", "buy", "--twap", "3600", *creds
    )
    assert status == 1 and "SECONDS/SLICES" in err

    status, out, err = await _trading(
        capsys, "order", "watch", "--limit", "1", *creds, "--last-event-id", "0"
    )

    assert status == 0, err
    first = out.splitlines()[0].split()
    assert first[1] == "new" and first[2] == parent["order_id"], out


# -- protected positions ---------------------------------------------------------------------


async def _guard_result(api: Api) -> str:
    guard = api.stack.env.client.get_workflow_handle(
        protection_workflow_id(api.caller.portfolio_id, "AAPL")
    )
    async with asyncio.timeout(20):
        result: str = await guard.result()
    return result


async def test_a_protected_position_is_closed_by_its_guard_when_the_stop_is_hit(api: Api):
    await _filled_buy(api, "10")

    answer = await api.caller.request(
        "PUT",
        "/api/v1/positions/AAPL/protection",
        json={"stop_loss_price": "145.00", "take_profit_price": "160.00"},
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["stop_loss_price"] == "145.00"
    shown = (await api.caller.get("/api/v1/positions")).json()["positions"][0]
    assert (shown["stop_loss_price"], shown["take_profit_price"]) == ("145.00", "160.00")
    api.stack.feed.set_quote("AAPL", "144.00", "144.02")  # through the stop

    assert await _guard_result(api) == "flat"
    assert await _held(api) == 0
    closing = await api.pool.fetchrow(
        "SELECT side, quantity, status FROM orders WHERE client_order_id LIKE 'guard-%'"
    )
    assert (closing["side"], closing["quantity"], closing["status"]) == ("sell", 10, "filled")
    if os.environ.get("RECORD_HISTORIES"):  # the guard's history joins the replay test
        guard = api.stack.env.client.get_workflow_handle(
            protection_workflow_id(api.caller.portfolio_id, "AAPL")
        )
        history = await guard.fetch_history()
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / "protection_stop_loss_hit.json").write_text(history.to_json())


async def test_a_guard_ends_when_its_position_is_closed_by_hand(api: Api):
    await _filled_buy(api, "10")
    answer = await api.caller.request(
        "PUT", "/api/v1/positions/AAPL/protection", json={"take_profit_price": "170.00"}
    )
    assert answer.status_code == 200, answer.text

    closed = await api.caller.delete("/api/v1/positions/AAPL")
    assert closed.status_code == 201, closed.text

    assert await _guard_result(api) == "flat"
    guard_orders = await api.pool.fetchval(
        "SELECT count(*) FROM orders WHERE client_order_id LIKE 'guard-%'"
    )
    assert guard_orders == 0 and await _held(api) == 0


async def test_halting_ends_a_guard(api: Api):
    await _filled_buy(api, "10")
    answer = await api.caller.request(
        "PUT", "/api/v1/positions/AAPL/protection", json={"stop_loss_price": "100.00"}
    )
    assert answer.status_code == 200, answer.text

    await control.set_trading_state(
        api.stack.env.client,
        api.pool,
        api.caller.portfolio_id,
        TradingState.HALTED,
        "kill switch test",
        task_queue=api.stack.task_queue,
    )

    assert await _guard_result(api) == "halted"
    assert await _held(api) == 10


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stop_loss_price": "160.00", "take_profit_price": "150.00"}, "take_profit_price"),
        ({"stop_loss_price": "150.00", "take_profit_price": "150.00"}, "take_profit_price"),
        ({}, "stop_loss_price"),
        ({"stop_loss_price": "-1.00"}, "stop_loss_price"),
        ({"stop_loss_price": "145.001"}, "stop_loss_price"),
        ({"stop_loss_price": "145.00", "check_seconds": 0}, "check_seconds"),
    ],
)
async def test_bad_protection_answers_422_with_the_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str
):
    await _filled_buy(api, "10")

    answer = await api.caller.request("PUT", "/api/v1/positions/AAPL/protection", json=body)

    error = assert_envelope(answer, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field, error
    shown = (await api.caller.get("/api/v1/positions")).json()["positions"][0]
    assert (shown["stop_loss_price"], shown["take_profit_price"]) == (None, None)
    assert not await _guard_exists(api)


async def test_protection_without_a_position_answers_404(api: Api):
    answer = await api.caller.request(
        "PUT", "/api/v1/positions/AAPL/protection", json={"stop_loss_price": "100.00"}
    )
    assert_envelope(answer, 404, "NOT_FOUND")
    assert not await _guard_exists(api)


async def _guard_exists(api: Api) -> bool:
    guard = api.stack.env.client.get_workflow_handle(
        protection_workflow_id(api.caller.portfolio_id, "AAPL")
    )
    try:
        await guard.describe()
    except RPCError as err:
        assert err.status is RPCStatusCode.NOT_FOUND
        return False
    return True
