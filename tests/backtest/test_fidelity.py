"""Fidelity against backtesting.py (0.6.6, a dev dependency) on the GOOG data it ships:
the same strategy, sizing (all equity in whole shares, commission included), and fill
convention (next bar's open) give the same trades (entry and exit bars and sizes) and a
final equity within 0.1 %. The conventions that differ are listed in the README
("Strategies and backtests")."""

from __future__ import annotations

import warnings
from decimal import Decimal
from pathlib import Path

import pytest

backtesting = pytest.importorskip("backtesting")
from backtesting import Backtest, Strategy  # noqa: E402
from backtesting.lib import crossover  # noqa: E402
from backtesting.test import GOOG, SMA  # noqa: E402

from activities.backtest.data import read_csv  # noqa: E402
from bootstrap.backtest import BacktestSpec, run_backtest  # noqa: E402
from domain.commissions import PercentageOfNotional  # noqa: E402

GOOG_CSV = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
# The first thousand of its 2,148 daily bars (2004-08 to 2008-08): dozens of trades each
# way, long and short, at half the cost of every bar through the order workflows.
BARS = 1000


class SmaCross(Strategy):
    fast = 10
    slow = 30
    allow_short = True

    def init(self):
        self.sma1 = self.I(SMA, self.data.Close, self.fast)
        self.sma2 = self.I(SMA, self.data.Close, self.slow)

    def next(self):
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            if self.allow_short:
                self.sell()


class Breakout(Strategy):
    lookback = 20

    def init(self):
        pass

    def next(self):
        n = self.lookback
        if len(self.data) < n + 1:
            return
        high = self.data.High[-n - 1 : -1].max()
        low = self.data.Low[-n - 1 : -1].min()
        close = self.data.Close[-1]
        if close > high and not self.position.is_long:
            self.position.close()
            self.buy()
        elif close < low and self.position.is_long:
            self.position.close()


def reference(strategy, commission: float, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(GOOG.iloc[:BARS], strategy, cash=10000, commission=commission).run(
            **params
        )
    closed = [
        (int(row.EntryBar), int(row.ExitBar), int(row.Size)) for row in stats._trades.itertuples()
    ]
    still_open = [(int(t.entry_bar), None, int(t.size)) for t in stats._strategy.trades]
    return closed + still_open, float(stats["Equity Final [$]"])


def ours(report) -> list[tuple[int, int | None, int]]:
    out = []
    for trade in report["trades"]:
        size = int(Decimal(trade["size"])) * (1 if trade["side"] == "long" else -1)
        out.append((trade["entry_bar"], trade["exit_bar"], size))
    return out


@pytest.mark.parametrize(
    ("name", "params", "strategy", "reference_params", "commission"),
    [
        ("sma_crossover", {"fast": "10", "slow": "30"}, SmaCross, {}, "0.002"),
        (
            "sma_crossover",
            {"fast": "10", "slow": "30", "allow_short": "false"},
            SmaCross,
            {"allow_short": False},
            "0",
        ),
        ("breakout", {"lookback": "20"}, Breakout, {}, "0.001"),
    ],
)
async def test_trades_and_equity_match_backtesting_py(
    temporal_env, db_pool, name, params, strategy, reference_params, commission
):
    spec = BacktestSpec(
        strategy=name,
        bars={"GOOG": read_csv(GOOG_CSV, "GOOG")[:BARS]},
        params=params,
        cash=Decimal(10000),
        commission=PercentageOfNotional(rate=Decimal(commission)),
        commission_text=commission,
    )
    report = await run_backtest(spec, env=temporal_env, pool=db_pool)
    expected_trades, expected_equity = reference(strategy, float(commission), **reference_params)

    assert len(expected_trades) > 10
    assert ours(report) == expected_trades
    final = float(report["statistics"]["equity_final"])
    assert abs(final - expected_equity) / expected_equity < 0.001
