"""The portfolio's snapshots and its kill switch through the signed API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from domain.orders import OrderStatus
from tests.api.conftest import Api, assert_envelope
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)


async def plant_snapshot(api: Api, portfolio_id: UUID, taken_at: datetime, equity: str) -> None:
    await api.pool.execute(
        "INSERT INTO portfolio_snapshots (portfolio_id, taken_at, kind, cash, positions_value,"
        " equity, realized_pnl, unrealized_pnl, return_pct, drawdown)"
        " VALUES ($1, $2, 'intraday', $3, 0, $4, 0, 0, 0, 0)",
        portfolio_id,
        taken_at,
        Decimal(equity),
        Decimal(equity),
    )


async def test_snapshots_are_the_keys_portfolio_oldest_first_with_exact_amounts(api: Api):
    mine = api.stack.portfolio.id
    await plant_snapshot(api, mine, T0 + timedelta(minutes=15), "100000.12345678")
    await plant_snapshot(api, mine, T0, "99999.99")
    stranger = await api.other_portfolio()
    await plant_snapshot(api, stranger.portfolio_id, T0, "5.00")

    response = await api.caller.get("/api/v1/portfolio/snapshots?limit=10")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["portfolio_id"] == str(mine)
    assert [s["equity"] for s in body["snapshots"]] == ["99999.99", "100000.12345678"]
    assert body["snapshots"][0]["kind"] == "intraday"
    since = (T0 + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    later = await api.caller.get(f"/api/v1/portfolio/snapshots?since={since}")
    assert [s["equity"] for s in later.json()["snapshots"]] == ["100000.12345678"]
    assert_envelope(
        await api.caller.get("/api/v1/portfolio/snapshots?limit=0"), 422, "VALIDATION_ERROR"
    )


async def test_halt_cancels_open_orders_and_refuses_new_ones_until_resumed(api: Api):
    api.stack.feed.set_quote("AAPL", "150.00", "150.02")
    resting = await api.place(order_type="limit", limit_price="100.00", quantity="5")
    order_id = UUID(resting.json()["order_id"])
    await api.stack.wait_for(order_id, terminal(OrderStatus.SUBMITTED))

    halted = await api.caller.request(
        "PUT", "/api/v1/portfolio/trading-state", json={"state": "halted", "reason": "test"}
    )

    assert halted.status_code == 200, halted.text
    assert halted.json()["previous"] == "active" and halted.json()["state"] == "halted"
    assert halted.json()["orders_to_cancel"] == [str(order_id)]
    await api.stack.wait_for(order_id, terminal(OrderStatus.CANCELED))
    refused = await api.place(quantity="1")
    assert_envelope(refused, 422, "TRADING_HALTED")
    assert (await api.stack.portfolio_now()).reservations == {}

    resumed = await api.caller.request(
        "PUT", "/api/v1/portfolio/trading-state", json={"state": "active", "reason": "clear"}
    )
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    assert (await api.place(quantity="1")).status_code == 201


async def test_an_unknown_trading_state_is_a_validation_error_that_changes_nothing(api: Api):
    response = await api.caller.request(
        "PUT", "/api/v1/portfolio/trading-state", json={"state": "paused", "reason": "x"}
    )
    assert_envelope(response, 422, "VALIDATION_ERROR")
    assert (await api.stack.portfolio_now()).trading_state.value == "active"


@pytest.mark.parametrize("reason", ["", "   ", "\u001c", "halt\nnow"])
async def test_a_blank_or_control_character_reason_is_refused(api: Api, reason: str):
    response = await api.caller.request(
        "PUT", "/api/v1/portfolio/trading-state", json={"state": "halted", "reason": reason}
    )
    assert_envelope(response, 422, "VALIDATION_ERROR")
    assert (await api.stack.portfolio_now()).trading_state.value == "active"
