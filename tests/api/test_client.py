"""The Python client and the order commands against the API served by uvicorn on a free
loopback port (the sync client and the commands run in a thread: the server shares this
test's event loop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from api import client as api_client
from api import client_cli as commands
from api.client import AsyncTradingClient, TradingClient
from domain.orders import OrderStatus
from tests.api.conftest import MASTER_KEY, Api
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(api: Api, server: str) -> AsyncIterator[AsyncTradingClient]:
    async with AsyncTradingClient(server, api.caller.key_id, api.caller.secret) as client:
        yield client


async def test_the_client_places_reads_lists_and_cancels(api: Api, client: AsyncTradingClient):
    placed = await client.place_order("AAPL", "5", "buy", limit_price="100.00", time_in_force="gtc")
    assert placed.status is OrderStatus.ACCEPTED
    assert placed.limit_price is not None and f"{placed.limit_price:f}" == "100.00"
    await api.stack.wait_for(placed.order_id, terminal(OrderStatus.SUBMITTED))

    fetched = await client.get_order(placed.order_id)
    page = await client.list_orders(status="open", symbol="AAPL")
    canceled = await client.cancel_order(placed.order_id)

    assert fetched.order_id == placed.order_id
    assert [order.order_id for order in page.orders] == [placed.order_id]
    assert canceled.status is OrderStatus.CANCELED


async def test_the_client_reads_portfolio_positions_and_market_data(
    api: Api, client: AsyncTradingClient
):
    placed = await client.place_order("MSFT", 2, "buy", time_in_force="gtc")
    await api.stack.wait_for(placed.order_id, terminal(OrderStatus.FILLED))

    portfolio = await client.get_portfolio()
    positions = await client.get_positions()
    quote = await client.get_quote("MSFT")
    bars = await client.get_bars("MSFT", "1min", 10)

    assert portfolio.id == api.caller.portfolio_id and portfolio.open_positions == 1
    assert [(p.symbol, p.quantity) for p in positions] == [("MSFT", 2)]
    assert (quote.bid_price, quote.ask_price) == (Decimal("400.00"), Decimal("400.10"))
    assert bars.symbol == "MSFT" and bars.bars == []
    assert (await client.health()).status == "ok"
    assert (await client.ready()).status == "ready"


async def test_the_client_raises_one_typed_error_per_code(api: Api, client: AsyncTradingClient):
    with pytest.raises(api_client.SymbolNotFoundError) as unknown:
        await client.place_order("ZZZZ", "1", "buy")
    with pytest.raises(api_client.InsufficientFundsError) as funds:
        await client.place_order("AAPL", "100000", "buy")
    with pytest.raises(api_client.ValidationError) as invalid:
        await client.place_order("AAPL", "-1", "buy")
    with pytest.raises(api_client.NotFoundError):
        await client.get_order(uuid4())
    with pytest.raises(api_client.AuthenticationError):
        async with AsyncTradingClient(client.api_url, api.caller.key_id, "0" * 64) as wrong:
            await wrong.get_portfolio()

    assert unknown.value.status == 422 and unknown.value.details["field"] == "symbol"
    assert funds.value.request_id and "order_id" in funds.value.details
    assert invalid.value.details["field"] == "quantity"


async def test_a_rate_limited_call_raises_with_retry_after(api: Api, client: AsyncTradingClient):
    api.app.state.limiter.rules["get_market_data"] = api_client_rule(1)
    await client.get_quote("AAPL")
    with pytest.raises(api_client.RateLimitExceededError) as limited:
        await client.get_quote("AAPL")
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1


async def test_an_unavailable_dependency_raises_service_unavailable_with_retry_after(
    api: Api, client: AsyncTradingClient
):
    api.stack.feed.set_bars("IBM", [])  # known symbol, no quote scripted: the feed raises

    with pytest.raises(api_client.ServiceUnavailableError) as unavailable:
        await client.get_quote("IBM")

    assert unavailable.value.status == 503
    assert unavailable.value.retry_after == 1


def api_client_rule(per_minute: int):  # type: ignore[no-untyped-def]
    from bootstrap.settings import RateLimitRule

    return RateLimitRule(max_requests=per_minute, window_seconds=60)


async def test_the_sync_client_from_the_credentials_file(api: Api, credentials: Path):
    def run() -> tuple[UUID, OrderStatus]:
        with TradingClient.from_credentials(credentials) as client:
            placed = client.place_order("AAPL", "1", "buy", time_in_force="gtc")
            return placed.order_id, client.get_order(placed.order_id).status

    order_id, status = await asyncio.to_thread(run)

    assert status in (OrderStatus.ACCEPTED, OrderStatus.SUBMITTED, OrderStatus.FILLED)
    await api.stack.wait_for(order_id, terminal(OrderStatus.FILLED))
    assert credentials.stat().st_mode & 0o777 == 0o600


async def trading(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = await asyncio.to_thread(commands.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_the_order_commands_end_to_end(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    creds = ["--credentials", str(credentials)]
    status, out, _ = await trading(
        capsys, "order", "place", "AAPL", "3", "buy", "--limit", "100.00", "--tif", "gtc", *creds
    )
    assert status == 0, out
    assert "status           accepted" in out and "limit price      $100.00" in out

    status, out, _ = await trading(capsys, "order", "list", "--status", "open", *creds, "--json")
    order_id = json.loads(out)["orders"][0]["order_id"]
    await api.stack.wait_for(UUID(order_id), terminal(OrderStatus.SUBMITTED))

    status, out, _ = await trading(capsys, "order", "list", *creds)
    header, row = out.splitlines()[:2]
    assert header.split() == [
        "ORDER", "ID", "CREATED", "SYMBOL", "SIDE", "TYPE", "QTY", "FILLED", "LIMIT", "STOP",
        "AVG", "FILL", "STATUS",
    ]  # fmt: skip
    assert row.startswith(order_id) and row.rstrip().endswith("submitted")
    assert header.index("QTY") + len("QTY") == row.index(" 3 ") + 2  # numbers right-aligned

    status, out, _ = await trading(capsys, "order", "get", order_id, *creds)
    assert status == 0 and order_id in out
    status, out, _ = await trading(capsys, "order", "cancel", order_id, *creds)
    assert status == 0 and "canceled" in out
    status, out, err = await trading(capsys, "order", "cancel", order_id, *creds)
    assert status == 1 and "CONFLICT" in err

    status, out, _ = await trading(capsys, "portfolio", *creds)
    assert status == 0 and "buying power" in out and "$100,000.00" in out
    status, out, _ = await trading(capsys, "positions", *creds, "--json")
    assert status == 0 and json.loads(out) == []


async def test_an_order_command_error_exits_1_with_the_code(
    credentials: Path, capsys: pytest.CaptureFixture[str]
):
    status, _, err = await trading(
        capsys, "order", "place", "ZZZZ", "1", "buy", "--credentials", str(credentials)
    )
    assert status == 1
    assert "SYMBOL_NOT_FOUND" in err and "field: symbol" in err

    status, _, err = await trading(capsys, "portfolio", "--credentials", "/nonexistent.json")
    assert status == 1 and "no credentials" in err


async def test_keys_create_prints_a_working_key_once(
    api: Api,
    server: str,
    pg_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
):
    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    monkeypatch.setenv("API_MASTER_KEY", MASTER_KEY.decode())
    portfolio = str(api.caller.portfolio_id)

    status, out, _ = await trading(capsys, "keys", "create", "--portfolio", portfolio, "--json")

    assert status == 0, out
    created = json.loads(out)
    async with AsyncTradingClient(server, created["api_key"], created["api_secret"]) as client:
        assert (await client.get_portfolio()).id == api.caller.portfolio_id
    status, _, err = await trading(capsys, "keys", "create", "--portfolio", str(uuid4()))
    assert status == 1 and "no portfolio" in err
    status, out, _ = await trading(capsys, "keys", "revoke", created["api_key"])
    assert status == 0
    async with AsyncTradingClient(server, created["api_key"], created["api_secret"]) as client:
        with pytest.raises(api_client.AuthenticationError):
            await client.get_portfolio()
