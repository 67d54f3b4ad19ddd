"""Market data values: quotes and bars, as every feed (simulated or Polygon) reports them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from domain.errors import DomainError, ErrorCode, ValidationError
from domain.orders import OrderSide, validate_symbol
from domain.values import to_decimal


class SymbolNotFoundError(DomainError):
    code = ErrorCode.SYMBOL_NOT_FOUND

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        super().__init__(f"unknown symbol {symbol!r}")


class Timeframe(StrEnum):
    MINUTE_1 = "1min"
    MINUTE_5 = "5min"
    MINUTE_15 = "15min"
    HOUR_1 = "1hour"
    DAY_1 = "1day"

    @property
    def seconds(self) -> int:
        return {"1min": 60, "5min": 300, "15min": 900, "1hour": 3600, "1day": 86400}[self.value]


@dataclass(frozen=True)
class Quote:
    """Top of book: best bid and ask with their sizes, and the last trade."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal
    timestamp: datetime

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        for name in ("bid", "ask", "last"):
            value = to_decimal(getattr(self, name), name)
            if value <= 0:
                raise ValidationError(name, f"{name} must be positive, got {value}")
            object.__setattr__(self, name, value)
        for name in ("bid_size", "ask_size"):
            value = to_decimal(getattr(self, name), name)
            if value < 0:
                raise ValidationError(name, f"{name} must not be negative, got {value}")
            object.__setattr__(self, name, value)
        if self.bid > self.ask:
            raise ValidationError("bid", f"crossed quote: bid {self.bid} > ask {self.ask}")
        if self.timestamp.tzinfo is None:
            raise ValidationError("timestamp", "timestamp must be timezone-aware")

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    def far_touch(self, side: OrderSide) -> Decimal:
        """What a marketable order pays: the ask for a buy, the bid for a sell."""
        return self.ask if side is OrderSide.BUY else self.bid

    def displayed_size(self, side: OrderSide) -> Decimal:
        return self.ask_size if side is OrderSide.BUY else self.bid_size


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar starting at `start`."""

    symbol: str
    timeframe: Timeframe
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        for name in ("open", "high", "low", "close"):
            value = to_decimal(getattr(self, name), name)
            if value <= 0:
                raise ValidationError(name, f"{name} must be positive, got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "volume", to_decimal(self.volume, "volume"))
        if self.volume < 0:
            raise ValidationError("volume", "volume must not be negative")
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValidationError("high", "bar high/low must bound its open and close")
        if self.start.tzinfo is None:
            raise ValidationError("start", "start must be timezone-aware")
