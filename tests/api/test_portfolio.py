"""Portfolio, positions and market data answer from the store and the feed, marked now;
health, readiness and metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from domain.market import Bar, Timeframe
from domain.orders import OrderStatus
from tests.api.conftest import Api, assert_envelope
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration


async def buy(api: Api, symbol: str, quantity: str) -> None:
    placed = await api.place(symbol=symbol, quantity=quantity)
    assert placed.status_code == 201, placed.text
    await api.stack.wait_for(UUID(placed.json()["order_id"]), terminal(OrderStatus.FILLED))


async def test_a_fresh_portfolio_is_all_cash(api: Api):
    response = await api.caller.get("/api/v1/portfolio")

    assert response.status_code == 200
    body = response.json()
    assert body["cash_balance"] == body["total_value"] == body["buying_power"] == "100000.00"
    assert (body["positions_value"], body["unrealized_pnl"], body["return_percentage"]) == (
        "0.00",
        "0.00",
        "0.00",
    )
    assert body["trading_state"] == "active"
    assert body["open_positions"] == 0
    assert body["win_rate"] is None


async def test_positions_and_portfolio_are_marked_at_the_current_mid(api: Api):
    await buy(api, "AAPL", "10")  # fills at the ask, 150.02
    api.stack.feed.set_quote("AAPL", "160.00", "160.02")  # mid 160.01

    positions = (await api.caller.get("/api/v1/positions")).json()["positions"]
    portfolio = (await api.caller.get("/api/v1/portfolio")).json()

    assert len(positions) == 1
    position = positions[0]
    assert position["symbol"] == "AAPL" and position["side"] == "long"
    assert position["quantity"] == "10"
    assert position["average_entry_price"] == "150.02"
    assert position["current_market_price"] == "160.01"
    assert position["position_value"] == "1600.10"
    assert position["unrealized_pnl"] == "99.90"
    cash = Decimal("100000.00") - Decimal("1500.20") - Decimal(portfolio["commissions_paid"])
    assert Decimal(portfolio["cash_balance"]) == cash
    assert portfolio["positions_value"] == "1600.10"
    assert Decimal(portfolio["total_value"]) == cash + Decimal("1600.10")
    assert portfolio["unrealized_pnl"] == "99.90"
    assert portfolio["open_positions"] == 1
    assert portfolio["reserved"] == "0.00"


async def test_a_resting_buy_shows_as_reserved_buying_power(api: Api):
    placed = await api.place(order_type="limit", limit_price="100.00", quantity="10")
    await api.stack.wait_for(UUID(placed.json()["order_id"]), terminal(OrderStatus.SUBMITTED))

    portfolio = (await api.caller.get("/api/v1/portfolio")).json()

    assert Decimal(portfolio["reserved"]) >= Decimal("1000.00")
    assert Decimal(portfolio["buying_power"]) == Decimal("100000.00") - Decimal(
        portfolio["reserved"]
    )


async def test_another_portfolio_sees_only_its_own(api: Api):
    await buy(api, "AAPL", "1")
    stranger = await api.other_portfolio(cash="5000.00")

    assert (await stranger.get("/api/v1/positions")).json() == {"positions": []}
    assert (await stranger.get("/api/v1/portfolio")).json()["cash_balance"] == "5000.00"


async def test_the_quote_route_answers_the_feeds_quote(api: Api):
    response = await api.caller.get("/api/v1/market-data/quote/AAPL")

    assert response.status_code == 200
    body = response.json()
    assert (body["symbol"], body["bid_price"], body["ask_price"]) == ("AAPL", "150.00", "150.02")
    assert body["last_price"] == "150.01"
    assert body["bid_size"] == body["ask_size"] == "1000"


async def test_an_unknown_symbol_is_404_and_a_malformed_one_422(api: Api):
    unknown = await api.caller.get("/api/v1/market-data/quote/ZZZZ")
    malformed = await api.caller.get("/api/v1/market-data/quote/aapl")
    bars = await api.caller.get("/api/v1/market-data/bars/ZZZZ")

    assert_envelope(unknown, 404, "SYMBOL_NOT_FOUND")
    assert_envelope(bars, 404, "SYMBOL_NOT_FOUND")
    assert assert_envelope(malformed, 422, "VALIDATION_ERROR")["details"]["field"] == "symbol"


async def test_the_bars_route_honours_timeframe_and_limit(api: Api):
    start = datetime(2026, 1, 15, 14, 30, tzinfo=UTC)
    api.stack.feed.set_bars(
        "AAPL",
        [
            Bar(
                "AAPL",
                Timeframe.MINUTE_5,
                start + timedelta(minutes=5 * n),
                Decimal("150.20"),
                Decimal("150.35"),
                Decimal("150.15"),
                Decimal("150.30"),
                Decimal(50000 + n),
            )
            for n in range(4)
        ],
    )

    response = await api.caller.get("/api/v1/market-data/bars/AAPL?timeframe=5min&limit=2")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["symbol"] == "AAPL" and body["timeframe"] == "5min"
    assert [bar["volume"] for bar in body["bars"]] == ["50002", "50003"]
    assert body["bars"][0] == {
        "timestamp": "2026-01-15T14:40:00Z",
        "open": "150.20",
        "high": "150.35",
        "low": "150.15",
        "close": "150.30",
        "volume": "50002",
    }


async def test_health_and_ready(api: Api):
    health = await api.http.get("/health")
    ready = await api.http.get("/ready")

    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    components = ready.json()["components"]
    assert set(components) == {"database", "temporal", "broker", "market_data"}
    assert {c["status"] for c in components.values()} == {"up"}


async def test_metrics_count_requests_by_route_and_orders_by_outcome(api: Api):
    await api.place()
    await api.place(quantity="1000")  # refused: insufficient funds
    await api.place(symbol="ZZZZ")  # refused: unknown symbol
    await api.caller.get("/api/v1/nowhere")

    text = (await api.http.get("/metrics")).text

    assert 'api_requests_total{method="POST",route="/api/v1/orders",status="201"} 1.0' in text
    assert 'api_requests_total{method="POST",route="/api/v1/orders",status="422"} 2.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "api_request_duration_seconds_bucket" in text
    assert "api_orders_placed_total 1.0" in text
    assert 'api_orders_rejected_total{code="INSUFFICIENT_FUNDS"} 1.0' in text
    assert 'api_orders_rejected_total{code="SYMBOL_NOT_FOUND"} 1.0' in text
