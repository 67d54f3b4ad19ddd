"""The backtest report: trades, equity per bar and statistics, from the ledger's executions
and the bars; written as `report.json` (byte-identical for identical inputs) and a
self-contained `report.html` (bokeh, assets inline).

Conventions (the report says them too):

* Equity at bar t is cash after every execution up to bar t plus the positions at bar t's
  close. Cash moves as the ledger moves it: the notional settled to the cent (half-even)
  and the execution's commission. The final cash is checked against the ledger's.
* A trade is one opening execution and the execution that closes it (each strategy order
  opens or closes a whole position); P&L is net of both commissions. A position still
  open at the end is listed with `exit_time` null and marked at the last close.
* Returns per bar r_t = E_t / E_{t-1} - 1. Annualised volatility = sample standard
  deviation of r x sqrt(252); Sharpe = mean(r) / stdev(r) x sqrt(252) (risk-free 0);
  Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(252); CAGR = (E_end / E_0) ^
  (365.25 / calendar days) - 1; max drawdown % against the running peak of equity, and its
  duration the longest time (calendar days) from a peak to the bar equity regains it (or
  the end). Exposure time = bars ending with a position open / all bars.
* Statistics are decimals rounded half-even to 6 places, written as strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any

from domain.market import Bar
from domain.values import round_cents

ZERO = Decimal(0)
SIX = Decimal("0.000001")
TRADING_DAYS = Decimal(252)


@dataclass(frozen=True)
class Execution:
    """One fill as the ledger booked it."""

    symbol: str
    side: str  # buy | sell
    quantity: Decimal
    price: Decimal
    commission: Decimal
    executed_at: datetime
    reason: str = ""


def _q(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return str(value.quantize(SIX, rounding=ROUND_HALF_EVEN))


def _money(value: Decimal) -> str:
    return str(round_cents(value))


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def build_report(
    *,
    strategy: str,
    params: dict[str, str],
    bars: dict[str, list[Bar]],
    executions: list[Execution],
    cash: Decimal,
    settings: dict[str, str],
) -> dict[str, Any]:
    """Everything report.json holds, as JSON-ready values (decimals as strings)."""
    symbols = sorted(bars)
    timeline = [bar.start for bar in bars[symbols[0]]]
    index = {at: i for i, at in enumerate(timeline)}
    by_bar: dict[int, list[Execution]] = {}
    for execution in executions:
        by_bar.setdefault(index[execution.executed_at], []).append(execution)

    trades: list[dict[str, Any]] = []
    open_trades: dict[str, dict[str, Any]] = {}
    positions: dict[str, Decimal] = dict.fromkeys(symbols, ZERO)
    balance = cash
    equity: list[Decimal] = []
    exposed = 0
    for t in range(len(timeline)):
        for execution in by_bar.get(t, []):
            sign = 1 if execution.side == "buy" else -1
            notional = round_cents(execution.quantity * execution.price)
            balance += -sign * notional - execution.commission
            held = positions[execution.symbol]
            positions[execution.symbol] = held + sign * execution.quantity
            if held == 0:
                open_trades[execution.symbol] = {
                    "symbol": execution.symbol,
                    "side": "long" if sign > 0 else "short",
                    "size": execution.quantity,
                    "entry_bar": t,
                    "entry_time": execution.executed_at,
                    "entry_price": execution.price,
                    "entry_commission": execution.commission,
                    "reason": execution.reason,
                }
            else:
                trade = open_trades.pop(execution.symbol)
                trades.append(_closed(trade, t, execution))
        value = balance
        for symbol in symbols:
            if positions[symbol] != 0:
                value += positions[symbol] * bars[symbol][t].close
        if any(positions[s] != 0 for s in symbols):
            exposed += 1
        equity.append(value)
    last = len(timeline) - 1
    for symbol, trade in sorted(open_trades.items()):
        trades.append(_closed(trade, last, None, bars[symbol][last].close))
    trades.sort(key=lambda trade: (trade["entry_bar"], trade["symbol"]))

    statistics = _statistics(equity, timeline, trades, exposed, bars[symbols[0]])
    peak = ZERO
    curve = []
    for at, value in zip(timeline, equity, strict=True):
        peak = max(peak, value)
        curve.append(
            {
                "time": _iso(at),
                "equity": _money(value),
                "drawdown_pct": _q((value / peak - 1) * 100 if peak > 0 else ZERO),
            }
        )
    return {
        "strategy": strategy,
        "params": dict(sorted(params.items())),
        "symbols": symbols,
        "settings": dict(sorted(settings.items())),
        "statistics": statistics,
        "trades": [_trade_json(trade) for trade in trades],
        "equity": curve,
        "final_cash": _money(balance),
    }


def _closed(
    trade: dict[str, Any], bar: int, execution: Execution | None, mark: Decimal | None = None
) -> dict[str, Any]:
    sign = 1 if trade["side"] == "long" else -1
    exit_price = execution.price if execution is not None else mark
    assert exit_price is not None
    exit_commission = execution.commission if execution is not None else ZERO
    commission = trade["entry_commission"] + exit_commission
    gross = round_cents(trade["size"] * exit_price) - round_cents(
        trade["size"] * trade["entry_price"]
    )
    pnl = sign * gross - commission
    return {
        **trade,
        "exit_bar": bar if execution is not None else None,
        "exit_time": execution.executed_at if execution is not None else None,
        "exit_price": exit_price,
        "commission": commission,
        "pnl": pnl,
        "return_pct": pnl / round_cents(trade["size"] * trade["entry_price"]) * 100,
        "open": execution is None,
    }


def _trade_json(trade: dict[str, Any]) -> dict[str, Any]:
    return {
        "symbol": trade["symbol"],
        "side": trade["side"],
        "size": str(trade["size"]),
        "entry_bar": trade["entry_bar"],
        "entry_time": _iso(trade["entry_time"]),
        "entry_price": str(trade["entry_price"]),
        "exit_bar": trade["exit_bar"],
        "exit_time": None if trade["exit_time"] is None else _iso(trade["exit_time"]),
        "exit_price": str(trade["exit_price"]),
        "commission": _money(trade["commission"]),
        "pnl": _money(trade["pnl"]),
        "return_pct": _q(trade["return_pct"]),
        "open": trade["open"],
        "reason": trade["reason"],
    }


def _statistics(
    equity: list[Decimal],
    timeline: list[datetime],
    trades: list[dict[str, Any]],
    exposed: int,
    first_symbol_bars: list[Bar],
) -> dict[str, Any]:
    with localcontext() as ctx:
        ctx.prec = 34
        start, end = equity[0], equity[-1]
        returns = [b / a - 1 for a, b in zip(equity, equity[1:], strict=False) if a != 0]
        n = len(returns)
        mean = sum(returns, ZERO) / n if n else ZERO
        variance = sum(((r - mean) ** 2 for r in returns), ZERO) / (n - 1) if n > 1 else ZERO
        stdev = variance.sqrt()
        downside = (sum((min(r, ZERO) ** 2 for r in returns), ZERO) / n).sqrt() if n else ZERO
        root = TRADING_DAYS.sqrt()
        days = Decimal((timeline[-1] - timeline[0]).total_seconds()) / 86400
        cagr = (
            ((end / start) ** (Decimal("365.25") / days) - 1) * 100
            if days > 0 and end > 0
            else None
        )
        peak, peak_at, max_dd, max_duration = ZERO, timeline[0], ZERO, ZERO
        for at, value in zip(timeline, equity, strict=True):
            if value >= peak:
                peak, peak_at = value, at
            else:
                max_dd = min(max_dd, value / peak - 1)
                duration = Decimal((at - peak_at).total_seconds()) / 86400
                max_duration = max(max_duration, duration)
        closed = [t for t in trades if not t["open"]]
        wins = [t for t in closed if t["pnl"] > 0]
        gross_profit = sum((t["pnl"] for t in closed if t["pnl"] > 0), ZERO)
        gross_loss = -sum((t["pnl"] for t in closed if t["pnl"] < 0), ZERO)
        first, last = first_symbol_bars[0].close, first_symbol_bars[-1].close
        return {
            "start": _iso(timeline[0]),
            "end": _iso(timeline[-1]),
            "bars": len(timeline),
            "equity_start": _money(start),
            "equity_final": _money(end),
            "equity_peak": _money(max(equity)),
            "return_pct": _q((end / start - 1) * 100),
            "buy_and_hold_return_pct": _q((last / first - 1) * 100),
            "cagr_pct": _q(cagr),
            "volatility_ann_pct": _q(stdev * root * 100),
            "sharpe": _q(mean / stdev * root) if stdev else None,
            "sortino": _q(mean / downside * root) if downside else None,
            "max_drawdown_pct": _q(max_dd * 100),
            "max_drawdown_duration_days": _q(max_duration),
            "trades": len(closed),
            "open_trades": len(trades) - len(closed),
            "win_rate_pct": _q(Decimal(len(wins)) / len(closed) * 100) if closed else None,
            "profit_factor": _q(gross_profit / gross_loss) if gross_loss else None,
            "avg_trade_pnl": _money(sum((t["pnl"] for t in closed), ZERO) / len(closed))
            if closed
            else None,
            "avg_trade_return_pct": _q(sum((t["return_pct"] for t in closed), ZERO) / len(closed))
            if closed
            else None,
            "exposure_time_pct": _q(Decimal(exposed) / len(timeline) * 100),
            "commissions": _money(sum((t["commission"] for t in trades), ZERO)),
        }


def write_json(report: dict[str, Any], path: Path) -> None:
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    path.write_text(text, encoding="utf-8")


STAT_LABELS = {
    "start": "Start",
    "end": "End",
    "bars": "Bars",
    "equity_start": "Equity start",
    "equity_final": "Equity final",
    "equity_peak": "Equity peak",
    "return_pct": "Return [%]",
    "buy_and_hold_return_pct": "Buy & hold return [%]",
    "cagr_pct": "CAGR [%]",
    "volatility_ann_pct": "Volatility (ann.) [%]",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "max_drawdown_pct": "Max drawdown [%]",
    "max_drawdown_duration_days": "Max drawdown duration [days]",
    "trades": "Trades",
    "open_trades": "Open trades at the end",
    "win_rate_pct": "Win rate [%]",
    "profit_factor": "Profit factor",
    "avg_trade_pnl": "Average trade P&L",
    "avg_trade_return_pct": "Average trade [%]",
    "exposure_time_pct": "Exposure time [%]",
    "commissions": "Commissions",
}


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    stats = report["statistics"]
    return [
        (label, "-" if stats[key] is None else str(stats[key]))
        for key, label in STAT_LABELS.items()
    ]
