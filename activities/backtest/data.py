"""Bars for a backtest: a CSV file (Yahoo's export format), checked line by line.

Columns: `Date` or `Timestamp` (an empty first header, as pandas writes its index, counts
as the date), `Open`, `High`, `Low`, `Close`, `Volume`; header case-insensitive; ISO dates
or timestamps (a date alone is midnight UTC, a timestamp without an offset is UTC); rows in
strictly increasing time. Anything else raises `BacktestInputError` with one line naming
the file, the line and the problem. Prices keep their digits up to 8 decimals (the store's
price scale); more are rounded half-even to 8.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

from domain.errors import ValidationError
from domain.market import Bar, Timeframe

PRICE_SCALE = Decimal("0.00000001")
REQUIRED = ("open", "high", "low", "close", "volume")


class BacktestInputError(ValueError):
    """Bad backtest input: the message is one line for the user."""


def _time(text: str) -> datetime:
    value = text.strip()
    if len(value) == 10:
        day = date.fromisoformat(value)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _number(text: str) -> Decimal:
    value = Decimal(text.strip())
    if not value.is_finite():
        raise InvalidOperation(text)
    return value


def read_csv(path: Path, symbol: str, timeframe: Timeframe = Timeframe.DAY_1) -> list[Bar]:
    """The bars of `path`, oldest first; BacktestInputError on anything malformed."""
    name = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise BacktestInputError(f"{name}: cannot read: {err.strerror or err}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise BacktestInputError(f"{name}: empty file")
        columns = [column.strip().lower() for column in header]
        if columns and columns[0] == "":
            columns[0] = "date"
        time_column = next((c for c in ("date", "timestamp") if c in columns), None)
        missing = [c for c in REQUIRED if c not in columns]
        if time_column is None or missing:
            wanted = ([] if time_column else ["Date or Timestamp"]) + [c.title() for c in missing]
            raise BacktestInputError(f"{name}: missing column(s): {', '.join(wanted)}")
        index = {c: columns.index(c) for c in (time_column, *REQUIRED)}
        bars: list[Bar] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(columns):
                raise BacktestInputError(f"{name}:{line}: expected {len(columns)} fields")
            try:
                start = _time(row[index[time_column]])
            except ValueError:
                raise BacktestInputError(
                    f"{name}:{line}: not an ISO date or timestamp: {row[index[time_column]]!r}"
                ) from None
            values: dict[str, Decimal] = {}
            for column in REQUIRED:
                try:
                    values[column] = _number(row[index[column]])
                except (InvalidOperation, ValueError):
                    raise BacktestInputError(
                        f"{name}:{line}: {column.title()} is not a number: {row[index[column]]!r}"
                    ) from None
            if bars and start <= bars[-1].start:
                problem = "duplicate" if start == bars[-1].start else "out of order"
                raise BacktestInputError(
                    f"{name}:{line}: {problem} date {row[index[time_column]].strip()} "
                    "(rows must be in strictly increasing time)"
                )
            try:
                bars.append(
                    Bar(
                        symbol=symbol,
                        timeframe=timeframe,
                        start=start,
                        open=_price(values["open"]),
                        high=_price(values["high"]),
                        low=_price(values["low"]),
                        close=_price(values["close"]),
                        volume=values["volume"],
                    )
                )
            except ValidationError as err:
                raise BacktestInputError(f"{name}:{line}: {err}") from None
    if not bars:
        raise BacktestInputError(f"{name}: no rows")
    return bars


def _price(value: Decimal) -> Decimal:
    return value.quantize(PRICE_SCALE, rounding=ROUND_HALF_EVEN).normalize()


def align(series: dict[str, list[Bar]]) -> dict[str, list[Bar]]:
    """Keep the bar times every symbol has, so one index walks all of them together."""
    common = set.intersection(*({bar.start for bar in bars} for bars in series.values()))
    return {symbol: [b for b in bars if b.start in common] for symbol, bars in series.items()}
