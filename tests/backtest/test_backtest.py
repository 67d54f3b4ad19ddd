"""Backtests end to end through `trading backtest`: CSV in, report out, the trades checked
by hand; identical inputs give a byte-identical report.json; bad input is one line on
stderr and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.cli import main

# Closes 10, 9, 8, 7, 12: SMA2 crosses above SMA3 after bar 4 -> buy at bar 5's open 12.5.
# Closes ..., 13, 14, 8: SMA2 crosses below SMA3 after bar 7 -> at bar 8's open 9: sell the
# 80 shares (the long loses 80 x (9 - 12.5) = -280), then short 720 / 9 = 80 shares.
ROWS = [
    ("2024-01-01", "10", "10"),
    ("2024-01-02", "10", "9"),
    ("2024-01-03", "9", "8"),
    ("2024-01-04", "8", "7"),
    ("2024-01-05", "7", "12"),
    ("2024-01-08", "12.5", "13"),
    ("2024-01-09", "13", "14"),
    ("2024-01-10", "14", "8"),
    ("2024-01-11", "9", "7"),
    ("2024-01-12", "7", "6"),
]


def csv_text(rows=ROWS) -> str:
    lines = ["Date,Open,High,Low,Close,Volume"]
    for day, open_, close in rows:
        high = max(float(open_), float(close)) + 1
        low = min(float(open_), float(close)) - 1
        lines.append(f"{day},{open_},{high},{low},{close},1000")
    return "\n".join(lines) + "\n"


def backtest(tmp_path: Path, out: str, *extra: str, data: str | None = None) -> int:
    path = tmp_path / "TEST.csv"
    path.write_text(data if data is not None else csv_text())
    return main(
        [
            "backtest",
            "sma_crossover",
            "--data",
            str(path),
            "--cash",
            "1000",
            "--param",
            "fast=2",
            "--param",
            "slow=3",
            "--out",
            str(tmp_path / out),
            *extra,
        ]
    )


def test_a_short_backtest_trades_as_worked_out_by_hand(tmp_path, capsys):
    assert backtest(tmp_path, "one") == 0
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    trades = report["trades"]
    assert [
        (t["side"], t["size"], t["entry_bar"], t["entry_price"], t["exit_bar"], t["exit_price"])
        for t in trades
    ] == [("long", "80", 5, "12.5", 8, "9"), ("short", "80", 8, "9", None, "6")]
    assert trades[0]["pnl"] == "-280.00" and trades[0]["entry_time"] == "2024-01-08T00:00:00Z"
    assert trades[1]["open"] is True and trades[1]["pnl"] == "240.00"
    equity = [point["equity"] for point in report["equity"]]
    # flat until bar 5; long 80 marked at 13, 14, 8; short 80 from 9: cash 1440 - 80 x close
    assert equity == ["1000.00"] * 5 + ["1040.00", "1120.00", "640.00", "880.00", "960.00"]
    stats = report["statistics"]
    assert stats["equity_final"] == "960.00" and stats["return_pct"] == "-4.000000"
    assert stats["trades"] == 1 and stats["win_rate_pct"] == "0.000000"
    assert stats["buy_and_hold_return_pct"] == "-40.000000"
    assert stats["exposure_time_pct"] == "50.000000"
    html = (tmp_path / "one" / "report.html").read_text()
    assert "Bokeh" in html and "<script" in html and "cdn.bokeh.org" not in html
    printed = capsys.readouterr().out
    assert "Return [%]" in printed and "-4.000000" in printed


def test_identical_inputs_give_a_byte_identical_report(tmp_path):
    assert backtest(tmp_path, "a", "--commission", "0.002") == 0
    assert backtest(tmp_path, "b", "--commission", "0.002") == 0
    first = (tmp_path / "a" / "report.json").read_bytes()
    assert first == (tmp_path / "b" / "report.json").read_bytes()
    assert json.loads(first)["statistics"]["commissions"] != "0.00"


BAD_CSV = {
    "missing column": (csv_text().replace(",Volume", "").replace(",1000\n", "\n"), "Volume"),
    "unsorted": (csv_text(ROWS[:3] + [("2023-12-31", "9", "9")] + ROWS[3:]), "out of order"),
    "duplicate": (csv_text(ROWS[:3] + [ROWS[2]] + ROWS[3:]), "duplicate date"),
    "non-numeric": (csv_text().replace("2024-01-03,9,", "2024-01-03,nine,"), "not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_a_bad_csv_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    data, message = BAD_CSV[case]
    assert backtest(tmp_path, "out", data=data) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_strategy"], "unknown strategy 'no_such_strategy'"),
        (["sma_crossover", "--param", "slowness=3"], "no parameter 'slowness'"),
        (
            ["sma_crossover", "--param", "slow=30"],
            "not enough bars: sma_crossover needs at least 32",
        ),
        (
            ["sma_crossover", "--symbols", "AAPL", "--start", "2024-02-01", "--end", "2024-01-01"],
            "--start 2024-02-01 is after --end 2024-01-01",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    data = tmp_path / "TEST.csv"
    data.write_text(csv_text())
    uses_data = "--symbols" not in argv
    args = ["backtest", *argv, "--out", str(tmp_path / "out")]
    if uses_data:
        args += ["--data", str(data)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


class BuyOnTheSecondBar:
    """A user strategy, named by its dotted path: long after bar 1, flat after bar 6."""

    name = "buy_on_the_second_bar"

    @classmethod
    def from_params(cls, params):
        if params:
            raise ValueError(f"no parameters, got {sorted(params)}")
        return cls()

    @property
    def history(self) -> int:
        return 2

    def decide(self, state):
        from domain.strategies import Exposure, Target

        seen = state.bars[-1].start.day
        if seen == 2 and state.position == 0:
            return Target(Exposure.LONG, "day two")
        if seen == 9 and state.position > 0:
            return Target(Exposure.FLAT, "day nine")
        return None


def test_a_user_strategy_by_dotted_path(tmp_path):
    path = tmp_path / "TEST.csv"
    path.write_text(csv_text())
    name = f"{__name__}:BuyOnTheSecondBar"
    assert main(["backtest", name, "--data", str(path), "--out", str(tmp_path / "u")]) == 0
    report = json.loads((tmp_path / "u" / "report.json").read_text())
    # decided after 2024-01-02 -> bought at 2024-01-03's open 9: 10000 / 9 = 1111 shares;
    # decided after 2024-01-09 -> sold at 2024-01-10's open 14
    (trade,) = report["trades"]
    assert (trade["entry_time"], trade["entry_price"], trade["size"]) == (
        "2024-01-03T00:00:00Z",
        "9",
        "1111",
    )
    assert (trade["exit_time"], trade["exit_price"], trade["reason"]) == (
        "2024-01-10T00:00:00Z",
        "14",
        "day two",
    )
    assert trade["pnl"] == "5555.00"
