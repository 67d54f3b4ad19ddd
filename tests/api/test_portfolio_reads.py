"""GET /portfolio and /positions read the portfolio in one statement (api.queries.
load_portfolio): it must load exactly what PortfolioRepository.get loads, digit for digit,
with open, closed and protected positions and open reservations."""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

import pytest

from activities.store.repositories import NotFoundError, PortfolioRepository
from api import queries
from domain.orders import OrderStatus
from tests.api.conftest import Api
from tests.workflows.harness import terminal

pytestmark = pytest.mark.integration


async def filled(api: Api, **body: str) -> None:
    placed = await api.place(**body)
    assert placed.status_code == 201, placed.text
    await api.stack.wait_for(UUID(placed.json()["order_id"]), terminal(OrderStatus.FILLED))


async def test_one_statement_loads_what_the_repository_loads(api: Api):
    await filled(api, symbol="AAPL", quantity="10")
    await filled(api, symbol="MSFT", quantity="3")
    await filled(api, symbol="MSFT", quantity="3", side="sell")  # a closed position stays
    await api.pool.execute(
        "UPDATE positions SET stop_loss_price = 140.5, take_profit_price = 170.25 "
        "WHERE portfolio_id = $1 AND symbol = 'AAPL'",
        api.stack.portfolio.id,
    )
    resting = await api.place(order_type="limit", limit_price="100.00", quantity="5")
    assert resting.status_code == 201, resting.text
    portfolio_id = api.stack.portfolio.id

    loaded = await queries.load_portfolio(api.pool, portfolio_id)
    async with api.pool.acquire() as conn:
        expected = await PortfolioRepository(conn).get(portfolio_id)

    assert loaded == expected
    assert set(loaded.positions) == {"AAPL", "MSFT"}
    assert loaded.positions["MSFT"].is_closed()
    assert loaded.positions["AAPL"].stop_loss_price == Decimal("140.50")
    assert len(loaded.reservations) == 1
    reservation = next(iter(loaded.reservations.values()))
    assert (reservation.symbol, reservation.quantity) == ("AAPL", Decimal("5"))


async def test_a_portfolio_without_children_and_a_missing_one(api: Api):
    other = await api.other_portfolio()
    loaded = await queries.load_portfolio(api.pool, other.portfolio_id)
    assert loaded.positions == {} and loaded.reservations == {}
    assert loaded.cash == Decimal("100000.00")
    with pytest.raises(NotFoundError):
        await queries.load_portfolio(api.pool, uuid.uuid4())
