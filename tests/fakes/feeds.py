"""ScriptedFeed: a market data test double whose every quote, bar and close the test sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal

from activities.market_data.simulated import _aware, _count, _now
from domain.errors import ValidationError
from domain.market import Bar, Quote, SymbolNotFoundError, Timeframe
from domain.orders import validate_symbol
from domain.values import round_to_tick, to_decimal


class ScriptedFeed:
    """Market data for tests: every quote, bar and close is set explicitly by the test.

    A symbol is known once anything is set for it; asking about any other symbol raises
    SymbolNotFoundError, as a real feed would. Bars and closes that were never set come
    back as empty lists; a quote that was never set for a known symbol is a LookupError.
    """

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or _now
        self._quotes: dict[str, Quote] = {}
        self._bars: dict[str, list[Bar]] = {}
        self._closes: dict[str, list[Decimal]] = {}

    def set_quote(
        self,
        symbol: str,
        bid: Decimal | int | str,
        ask: Decimal | int | str,
        bid_size: Decimal | int | str = 1000,
        ask_size: Decimal | int | str = 1000,
        last: Decimal | int | str | None = None,
    ) -> Quote:
        """Make this the quote from now on; `last` defaults to the mid on the tick grid."""
        bid_price, ask_price = to_decimal(bid, "bid"), to_decimal(ask, "ask")
        quote = Quote(
            symbol=symbol,
            bid=bid_price,
            ask=ask_price,
            bid_size=to_decimal(bid_size, "bid_size"),
            ask_size=to_decimal(ask_size, "ask_size"),
            last=round_to_tick((bid_price + ask_price) / 2)
            if last is None
            else to_decimal(last, "last"),
            timestamp=_aware(self._clock(), "clock"),
        )
        self._quotes[symbol] = quote
        return quote

    def set_bars(self, symbol: str, bars: Sequence[Bar]) -> None:
        validate_symbol(symbol)
        if any(bar.symbol != symbol for bar in bars):
            raise ValidationError("symbol", f"every bar must be for {symbol}")
        self._bars[symbol] = sorted(bars, key=lambda bar: bar.start)

    def set_price_series(self, symbol: str, closes: Sequence[Decimal | int | str]) -> None:
        validate_symbol(symbol)
        self._closes[symbol] = [to_decimal(close, "close") for close in closes]

    def symbols(self) -> list[str]:
        return sorted({*self._quotes, *self._bars, *self._closes})

    def _known(self, symbol: str) -> None:
        if symbol not in self._quotes and symbol not in self._bars and symbol not in self._closes:
            raise SymbolNotFoundError(symbol)

    def quote(self, symbol: str) -> Quote:
        self._known(symbol)
        if symbol not in self._quotes:
            raise LookupError(f"no quote scripted for {symbol}")
        return self._quotes[symbol]

    async def get_quote(self, symbol: str) -> Quote:
        return self.quote(symbol)

    async def get_bars(
        self, symbol: str, timeframe: Timeframe, limit: int, end: datetime | None = None
    ) -> list[Bar]:
        self._known(symbol)
        _count(limit, "limit")
        bars = [bar for bar in self._bars.get(symbol, []) if bar.timeframe == timeframe]
        if end is not None:
            end = _aware(end, "end")
            bars = [bar for bar in bars if bar.start <= end]
        return bars[-limit:]

    async def get_price_series(self, symbol: str, days: int) -> list[Decimal]:
        self._known(symbol)
        _count(days, "days")
        return self._closes.get(symbol, [])[-days:]

    async def ready(self) -> bool:
        return True
