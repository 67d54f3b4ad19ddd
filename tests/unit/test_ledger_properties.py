"""Property tests of the ledger: for any sequence of valid fills no cent appears or vanishes."""

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.orders import Fill, Order, OrderSide
from domain.portfolio import Portfolio
from domain.values import CENT

SYMBOLS = ["AAPL", "MSFT", "PENNY"]

quantities = st.decimals(min_value=D("0.000001"), max_value=D("5000"), places=6)
dollar_prices = st.decimals(min_value=D("1.00"), max_value=D("5000"), places=2)
penny_prices = st.decimals(min_value=D("0.0001"), max_value=D("0.9999"), places=4)
commissions = st.decimals(min_value=D("0"), max_value=D("25"), places=2)


@st.composite
def order_fills(draw: st.DrawFn) -> tuple[str, OrderSide, list[tuple[D, D, D]]]:
    """One order and the executions that (partially) fill it."""
    symbol = draw(st.sampled_from(SYMBOLS))
    side = draw(st.sampled_from(list(OrderSide)))
    prices = penny_prices if symbol == "PENNY" else dollar_prices
    fills = draw(st.lists(st.tuples(quantities, prices, commissions), min_size=1, max_size=3))
    return symbol, side, fills


@settings(max_examples=300, deadline=None)
@given(st.lists(order_fills(), min_size=1, max_size=25))
def test_cash_cost_basis_realized_pnl_and_commissions_balance_to_the_cent(orders):
    portfolio = Portfolio(initial_capital=D("100000"))
    expected_quantity = dict.fromkeys(SYMBOLS, D(0))
    for n, (symbol, side, fills) in enumerate(orders):
        total = sum((q for q, _, _ in fills), D(0))
        order = Order(symbol=symbol, quantity=total, side=side, portfolio_id=portfolio.id)
        order.submit(f"b-{n}")
        for k, (quantity, price, commission) in enumerate(fills):
            effect = portfolio.apply_fill(order, Fill(f"{n}-{k}", quantity, price, commission))
            assert effect is not None
            expected_quantity[symbol] += quantity * side.sign

            # initial capital == cash + cost basis - realized P&L + commissions, exactly.
            assert portfolio.ledger_imbalance() == 0
            assert portfolio.cash == portfolio.cash.quantize(CENT)
    for symbol, quantity in expected_quantity.items():
        position = portfolio.positions.get(symbol)
        assert (position.quantity if position else D(0)) == quantity
        if position is not None and position.is_closed():
            assert position.cost_basis == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(order_fills(), min_size=1, max_size=10))
def test_replaying_every_fill_a_second_time_changes_nothing(orders):
    portfolio = Portfolio(initial_capital=D("100000"))
    applied: list[tuple[Order, Fill]] = []
    for n, (symbol, side, fills) in enumerate(orders):
        total = sum((q for q, _, _ in fills), D(0))
        order = Order(symbol=symbol, quantity=total, side=side, portfolio_id=portfolio.id)
        order.submit(f"b-{n}")
        for k, (quantity, price, commission) in enumerate(fills):
            fill = Fill(f"{n}-{k}", quantity, price, commission)
            portfolio.apply_fill(order, fill)
            applied.append((order, fill))
    before = (portfolio.cash, {s: p.quantity for s, p in portfolio.positions.items()})
    for order, fill in applied:
        assert portfolio.apply_fill(order, fill) is None
    assert (portfolio.cash, {s: p.quantity for s, p in portfolio.positions.items()}) == before
