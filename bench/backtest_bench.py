"""Backtest speed: a 9-year daily backtest of one symbol with about 100 round trips
(GOOG 2004-08-19 .. 2013-03-01, 2148 bars, the data backtesting.py ships; sma_crossover
fast=8 slow=20 with shorts: 95 round trips), run through the real workflows exactly as
`trading backtest` runs it (a throwaway PostgreSQL, the time-skipping Temporal server, the
strategy workflow and one OrderWorkflow per order), beside the same backtest in
backtesting.py 0.6.6, measured in the same run.

    .venv/bin/python bench/backtest_bench.py [--repeat 1]

Prints the wall time of each (ours: from the command's start, servers included, and the
workflow part alone), their ratio, and checks the goal: ours under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import warnings
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.backtest.data import read_csv  # noqa: E402
from bootstrap.backtest import BacktestSpec, run_backtest  # noqa: E402
from domain.commissions import PercentageOfNotional  # noqa: E402

FAST, SLOW, COMMISSION = 8, 20, "0.002"


def reference() -> tuple[float, int, float]:
    import backtesting
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import GOOG, SMA

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(SMA, self.data.Close, FAST)
            self.slow = self.I(SMA, self.data.Close, SLOW)

        def next(self):
            if crossover(self.fast, self.slow):
                self.position.close()
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()
                self.sell()

    del backtesting
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(GOOG, SmaCross, cash=10000, commission=float(COMMISSION)).run()
    return time.perf_counter() - began, int(stats["# Trades"]), float(stats["Equity Final [$]"])


def ours() -> tuple[float, float, int, str]:
    import backtesting

    data = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
    began = time.perf_counter()
    spec = BacktestSpec(
        strategy="sma_crossover",
        bars={"GOOG": read_csv(data, "GOOG")},
        params={"fast": str(FAST), "slow": str(SLOW)},
        cash=Decimal(10000),
        commission=PercentageOfNotional(rate=Decimal(COMMISSION)),
        commission_text=COMMISSION,
    )
    first_bar: list[float] = []

    def progress(done: int, total: int) -> None:
        if not first_bar:
            first_bar.append(time.perf_counter())

    report = asyncio.run(run_backtest(spec, progress))
    total = time.perf_counter() - began
    workflows = total - (first_bar[0] - began) if first_bar else total
    stats = report["statistics"]
    return total, workflows, int(stats["trades"]), stats["equity_final"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        ref_seconds, ref_trades, ref_equity = reference()
        total, workflows, trades, equity = ours()
        print(
            f"backtesting.py 0.6.6: {ref_seconds:6.2f} s  ({ref_trades} trades, "
            f"final equity {ref_equity:.2f})"
        )
        print(
            f"trading backtest:     {total:6.2f} s  ({trades} trades, final equity {equity}); "
            f"workflow part {workflows:.2f} s"
        )
        print(
            f"ratio ours / backtesting.py: {total / ref_seconds:.0f}x; "
            f"goal < 60 s: {'met' if total < 60 else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
