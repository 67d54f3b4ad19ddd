"""report.html: one self-contained file (bokeh with its JavaScript inline, no CDN): the
equity curve against buy-and-hold, the drawdown, the trades on the price, and the
statistics table."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any

from activities.backtest.report import summary_rows
from domain.market import Bar


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def write_html(report: dict[str, Any], bars: dict[str, list[Bar]], path: Path) -> None:
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, Div  # type: ignore[attr-defined]
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    times = [_time(point["time"]) for point in report["equity"]]
    equity = [float(point["equity"]) for point in report["equity"]]
    drawdown = [float(point["drawdown_pct"]) for point in report["equity"]]
    symbol = report["symbols"][0]
    closes = [float(bar.close) for bar in bars[symbol]]
    start_equity = equity[0]
    hold = [start_equity * close / closes[0] for close in closes]

    width = 1100
    equity_fig = figure(
        title="Equity vs buy and hold", x_axis_type="datetime", width=width, height=300
    )
    equity_fig.line(times, equity, legend_label="strategy", line_width=2)
    equity_fig.line(
        times, hold, legend_label=f"buy and hold {symbol}", color="gray", line_dash="dashed"
    )
    equity_fig.legend.location = "top_left"

    dd_fig = figure(
        title="Drawdown [%]",
        x_axis_type="datetime",
        width=width,
        height=160,
        x_range=equity_fig.x_range,
    )
    dd_fig.varea(x=times, y1=drawdown, y2=[0.0] * len(times), color="firebrick", alpha=0.4)

    price_fig = figure(
        title=f"{symbol}: trades on the close",
        x_axis_type="datetime",
        width=width,
        height=300,
        x_range=equity_fig.x_range,
    )
    price_fig.line(times, closes, color="black", line_width=1)
    for side, marker, color in (
        ("long", "triangle", "green"),
        ("short", "inverted_triangle", "red"),
    ):
        chosen = [t for t in report["trades"] if t["symbol"] == symbol and t["side"] == side]
        source = ColumnDataSource(
            {
                "x": [_time(t["entry_time"]) for t in chosen],
                "y": [float(t["entry_price"]) for t in chosen],
            }
        )
        price_fig.scatter(
            "x",
            "y",
            source=source,
            marker=marker,
            size=9,
            color=color,
            legend_label=f"{side} entry",
        )
    exits = [t for t in report["trades"] if t["symbol"] == symbol and not t["open"]]
    price_fig.scatter(
        [_time(t["exit_time"]) for t in exits],
        [float(t["exit_price"]) for t in exits],
        marker="x",
        size=8,
        color="blue",
        legend_label="exit",
    )
    price_fig.legend.location = "top_left"

    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in summary_rows(report)
    )
    params = ", ".join(f"{k}={v}" for k, v in report["params"].items()) or "defaults"
    header = Div(
        text=(
            f"<h2>Backtest: {html.escape(report['strategy'])} ({html.escape(params)}) on "
            f"{html.escape(', '.join(report['symbols']))}</h2>"
            f"<table style='border-collapse:collapse'>{rows}</table>"
        ),
        width=width,
    )
    document = column(header, equity_fig, dd_fig, price_fig)
    text = file_html(document, INLINE, title=f"Backtest {report['strategy']}")
    path.write_text(text, encoding="utf-8")
