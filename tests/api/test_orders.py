"""Placing, reading, listing and canceling orders through the API on a real worker."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID, uuid4

import httpx
import pytest
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from bootstrap import control
from contracts.payloads import order_id_for, workflow_id_for
from domain.orders import OrderStatus
from tests.api.conftest import Api, Caller, assert_envelope, build_app, fresh_id
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration


async def test_place_order_answers_201_once_risk_accepted_and_never_waits_for_the_fill(api: Api):
    client_order_id = fresh_id()
    response = await api.place(client_order_id=client_order_id, quantity="10")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert (
        body["order_id"]
        == body["id"]
        == str(order_id_for(api.caller.portfolio_id, client_order_id))
    )
    assert body["quantity"] == "10" and body["filled_quantity"] == "0"
    assert body["side"] == "buy" and body["order_type"] == "market"
    order = await api.stack.wait_for(UUID(body["order_id"]), terminal(OrderStatus.FILLED))
    assert order.filled_quantity == Decimal("10")
    fetched = await api.caller.get(f"/api/v1/orders/{body['order_id']}")
    assert fetched.status_code == 200
    assert fetched.json()["status"] == "filled"
    assert fetched.json()["average_fill_price"] == "150.02"


async def test_the_seed_example_body_places_a_limit_order(api: Api):
    response = await api.caller.post(
        "/api/v1/orders",
        json={
            "symbol": "AAPL",
            "quantity": "100",
            "side": "buy",
            "order_type": "limit",
            "limit_price": "150.50",
            "time_in_force": "day",
            "reason": "breakout_strategy",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["order_type"], body["limit_price"], body["time_in_force"]) == (
        "limit",
        "150.50",
        "day",
    )
    assert body["client_order_id"]  # generated when absent


async def test_the_same_client_order_id_returns_the_existing_order_never_a_second(api: Api):
    client_order_id = fresh_id()
    first = await api.place(client_order_id=client_order_id)
    again = await api.place(client_order_id=client_order_id, reason="a retry")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["order_id"] == first.json()["order_id"]
    orders, _ = await api.counts()
    assert orders == 1


async def test_concurrent_posts_with_one_client_order_id_make_one_order_and_one_201(api: Api):
    client_order_id = fresh_id()
    # Fifty distinct requests (their reasons differ): identical ones would be replays.
    answers = await asyncio.gather(
        *(api.place(client_order_id=client_order_id, reason=f"try {n}") for n in range(50))
    )

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 49 + [201], codes
    assert len({a.json()["order_id"] for a in answers}) == 1
    orders, _ = await api.counts()
    assert orders == 1


async def test_the_same_client_order_id_with_a_different_order_answers_409(api: Api):
    client_order_id = fresh_id()
    first = await api.place(client_order_id=client_order_id)
    assert first.status_code == 201
    other = await api.place(client_order_id=client_order_id, quantity="2")

    error = assert_envelope(other, 409, "CONFLICT")
    assert error["details"]["order_id"] == first.json()["order_id"]
    orders, _ = await api.counts()
    assert orders == 1


async def test_a_client_order_id_names_different_orders_in_different_portfolios(api: Api):
    other = await api.other_portfolio()
    client_order_id = fresh_id()
    mine = await api.place(client_order_id=client_order_id)
    theirs = await api.place(other, client_order_id=client_order_id)

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["order_id"] != theirs.json()["order_id"]


async def test_a_buy_beyond_the_cash_is_refused_with_insufficient_funds(api: Api):
    client_order_id = fresh_id()
    response = await api.place(client_order_id=client_order_id, quantity="1000")

    error = assert_envelope(response, 422, "INSUFFICIENT_FUNDS")
    assert error["details"]["client_order_id"] == client_order_id
    order = await api.stack.order(UUID(error["details"]["order_id"]))
    assert order.status is OrderStatus.REJECTED  # the saga keeps the refusal and its reason
    assert (await api.counts())[1] == 0  # and nothing is reserved


async def test_a_halted_portfolio_refuses_with_trading_halted(api: Api):
    await api.pool.execute(
        "UPDATE portfolios SET trading_state = 'halted' WHERE id = $1", api.caller.portfolio_id
    )
    response = await api.place()

    error = assert_envelope(response, 422, "TRADING_HALTED")
    assert "halted" in error["message"]


async def test_a_retry_after_a_refusal_returns_the_refused_order(api: Api):
    client_order_id = fresh_id()
    refused = await api.place(client_order_id=client_order_id, quantity="1000")
    api.caller.clock_offset = 1  # a retry signs anew a second later (same second: a replay)
    again = await api.place(client_order_id=client_order_id, quantity="1000")

    assert refused.status_code == 422
    assert again.status_code == 200
    assert again.json()["status"] == "rejected"
    assert again.json()["reject_code"] == "INSUFFICIENT_FUNDS"


async def test_delete_cancels_a_resting_order_and_releases_its_reservation(api: Api):
    placed = await api.place(order_type="limit", limit_price="100.00", quantity="5")
    order_id = UUID(placed.json()["order_id"])
    await api.stack.wait_for(order_id, terminal(OrderStatus.SUBMITTED))
    assert (await api.counts())[1] == 1

    response = await api.caller.delete(f"/api/v1/orders/{order_id}")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert (await api.stack.order(order_id)).status is OrderStatus.CANCELED
    assert (await api.counts())[1] == 0


async def test_delete_of_a_terminal_order_answers_409_conflict(api: Api):
    placed = await api.place()
    order_id = UUID(placed.json()["order_id"])
    await api.stack.wait_for(order_id, terminal(OrderStatus.FILLED))

    response = await api.caller.delete(f"/api/v1/orders/{order_id}")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"]["status"] == "filled"


async def test_another_portfolios_order_answers_404_exactly_like_a_missing_one(api: Api):
    placed = await api.place(order_type="limit", limit_price="100.00")
    order_id = placed.json()["order_id"]
    stranger = await api.other_portfolio()
    missing = str(uuid4())

    for method in ("GET", "DELETE"):
        theirs = await stranger.request(method, f"/api/v1/orders/{order_id}")
        nobody = await stranger.request(method, f"/api/v1/orders/{missing}")
        mine = assert_envelope(theirs, 404, "NOT_FOUND")
        none = assert_envelope(nobody, 404, "NOT_FOUND")
        assert mine["message"].replace(order_id, "ID") == none["message"].replace(missing, "ID")
        assert mine["details"] == none["details"] == {}
    order = await api.stack.order(UUID(order_id))
    assert order.status is not OrderStatus.CANCELED  # the stranger's DELETE touched nothing


async def test_list_filters_by_status_and_symbol_newest_first(api: Api):
    resting = await api.place(order_type="limit", limit_price="100.00")
    filled = await api.place()
    other_symbol = await api.place(symbol="MSFT", order_type="limit", limit_price="300.00")
    await api.stack.wait_for(UUID(filled.json()["order_id"]), terminal(OrderStatus.FILLED))
    ids = {
        name: r.json()["order_id"]
        for name, r in (("resting", resting), ("filled", filled), ("msft", other_symbol))
    }

    async def listed(target: str) -> list[str]:
        response = await api.caller.get(target)
        assert response.status_code == 200, response.text
        return [order["order_id"] for order in response.json()["orders"]]

    assert await listed("/api/v1/orders") == [ids["msft"], ids["filled"], ids["resting"]]
    assert await listed("/api/v1/orders?status=filled") == [ids["filled"]]
    assert set(await listed("/api/v1/orders?status=open")) == {ids["resting"], ids["msft"]}
    both = {ids["filled"], ids["msft"], ids["resting"]}
    assert set(await listed("/api/v1/orders?status=filled,open")) == both
    assert set(await listed("/api/v1/orders?status=filled&status=open")) == both
    assert await listed("/api/v1/orders?symbol=MSFT") == [ids["msft"]]
    assert await listed("/api/v1/orders?status=open&symbol=AAPL") == [ids["resting"]]
    stranger = await api.other_portfolio()
    theirs = await stranger.get("/api/v1/orders")
    assert theirs.json() == {"orders": [], "next_cursor": None}


async def test_list_pages_with_a_cursor_through_every_order_once(api: Api):
    placed = [
        (await api.place(order_type="limit", limit_price="100.00")).json()["order_id"]
        for _ in range(5)
    ]
    seen: list[str] = []
    target = "/api/v1/orders?limit=2"
    pages = 0
    while True:
        page = (await api.caller.get(target)).json()
        pages += 1
        seen += [order["order_id"] for order in page["orders"]]
        if page["next_cursor"] is None:
            break
        target = f"/api/v1/orders?limit=2&cursor={page['next_cursor']}"

    assert pages == 3
    assert seen == list(reversed(placed))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=lost", "status"),
        ("symbol=aapl", "symbol"),
        ("cursor=not-a-cursor", "cursor"),
    ],
)
async def test_list_refuses_bad_parameters_with_the_field(api: Api, query: str, field: str):
    response = await api.caller.get(f"/api/v1/orders?{query}")

    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field


async def test_a_workflow_that_closed_before_risk_decided_answers_409(api: Api):
    """The order's workflow id is taken by a run that left no order (it failed, or an
    operator terminated it): REJECT_DUPLICATE refuses a second run, and the API says so."""
    client_order_id = fresh_id()
    order_id = order_id_for(api.caller.portfolio_id, client_order_id)
    handle = await api.stack.env.client.start_workflow(
        "NoSuchWorkflow", id=workflow_id_for(order_id), task_queue=f"nobody-{uuid4()}"
    )
    await handle.terminate("test")

    response = await api.place(client_order_id=client_order_id)

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"]["order_id"] == str(order_id)
    assert await api.counts() == (0, 0)


async def test_no_decision_in_time_answers_503_with_retry_after(api: Api):
    """No worker polls this task queue: the update waits, and the API gives up in time."""
    app = build_app(api.stack, task_queue=f"nobody-{uuid4()}", api_decision_timeout_seconds=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        caller = Caller(http, api.caller.key_id, api.caller.secret, api.caller.portfolio_id)
        response = await api.place(caller)

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["Retry-After"] == "1"
    assert set(error["details"]) == {"order_id", "client_order_id"}
    assert await api.counts() == (0, 0)


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (WorkflowUpdateRPCTimeoutOrCancelledError(), "on its way"),
        (RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b""), "could not be delivered"),
    ],
    ids=["not answered in time", "not delivered"],
)
async def test_a_cancel_that_does_not_get_through_answers_503_with_retry_after(
    api: Api, monkeypatch: pytest.MonkeyPatch, failure: Exception, words: str
):
    placed = await api.place(order_type="limit", limit_price="100.00")
    order_id = UUID(placed.json()["order_id"])
    await api.stack.wait_for(order_id, terminal(OrderStatus.SUBMITTED))

    async def cancel_order(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(control, "cancel_order", cancel_order)
    response = await api.caller.delete(f"/api/v1/orders/{order_id}")

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert words in error["message"]
    assert error["details"]["order_id"] == str(order_id)
    assert response.headers["Retry-After"] == "1"
    assert (await api.stack.order(order_id)).status is OrderStatus.SUBMITTED
