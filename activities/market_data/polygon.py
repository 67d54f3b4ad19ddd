"""Polygon market data through polygon-api-client: quotes, last trades, bars and a quote stream.

**Exact decimals.** Polygon writes prices as JSON numbers and polygon-api-client parses them
with `json.loads`, i.e. to float. Every REST call here asks the client for the raw HTTP
response (`raw=True`) and parses the body with `json.loads(..., parse_float=Decimal)`, so
187.2345 is Decimal("187.2345"), digit for digit; the stream is parsed the same way. No
float ever holds a price.

**No hidden retries, no hand-written ones.** The client retries 413/429/499/5xx three times
by default (urllib3 `Retry`); it is built with `retries=0`, so a 429 or a 5xx raises at once
(as `PolygonError`) and Temporal's retry policy decides when to ask again. The client also
never passes its own timeouts to urllib3, so they are set on its connection pool here.

**Cache.** Quotes are kept for `cache_ttl_seconds` (default 1 s) and concurrent requests for
the same symbol share one fetch, so a busy quote route spends at most one NBBO and one
last-trade request per symbol per TTL. A streamed quote refreshes the same cache.

Sizes: the REST NBBO reports shares; the websocket reports round lots (documented by
Polygon as lots of 100 shares), converted to shares here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import urllib3
from polygon import RESTClient
from polygon.exceptions import BadResponse
from urllib3.exceptions import HTTPError, MaxRetryError
from websockets.asyncio.client import ClientConnection, connect

from activities.backoff import backoff_delay, sleep_until_stopped
from activities.market_data.simulated import DEFAULT_UNIVERSE, MAX_LIMIT
from domain.errors import ValidationError
from domain.market import Bar, Quote, SymbolNotFoundError, Timeframe
from domain.orders import validate_symbol

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.polygon.io"
DEFAULT_STREAM_URL = "wss://socket.polygon.io/stocks"
ROUND_LOT = 100
MAX_BASE_AGGREGATES = 50_000  # Polygon's ceiling for `limit` on aggregates
_RANGE_MAX_PAGES = 20

# Timeframe -> (multiplier, timespan, base aggregates per bar). Polygon's `limit` counts the
# base aggregates (minutes, or days) a query reads, not the bars it returns.
_TIMEFRAMES: Mapping[Timeframe, tuple[int, str, int]] = {
    Timeframe.MINUTE_1: (1, "minute", 1),
    Timeframe.MINUTE_5: (5, "minute", 5),
    Timeframe.MINUTE_15: (15, "minute", 15),
    Timeframe.HOUR_1: (1, "hour", 60),
    Timeframe.DAY_1: (1, "day", 1),
}

OnQuote = Callable[[Quote], Awaitable[None]]


class PolygonError(Exception):
    """Polygon could not answer usefully this time (429, 5xx, timeout); Temporal retries."""


class PolygonDataError(PolygonError):
    """Polygon answered something that cannot be taken as valid (missing or malformed data)."""


class _NotFound(Exception):
    pass


@dataclass(frozen=True)
class LastTrade:
    symbol: str
    price: Decimal
    size: Decimal
    timestamp: datetime


def _symbol(symbol: str) -> str:
    # Also keeps anything but a plain ticker out of the URL path.
    try:
        return validate_symbol(symbol)
    except ValidationError:
        raise SymbolNotFoundError(symbol) from None


def _number(raw: Mapping[str, Any], field: str, where: str) -> Decimal:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PolygonDataError(f"{where}: {field} is missing or not a number: {value!r}")
    result = Decimal(value)
    if not result.is_finite():
        raise PolygonDataError(f"{where}: {field} is not finite: {value!r}")
    return result


def _price(raw: Mapping[str, Any], field: str, where: str) -> Decimal:
    value = _number(raw, field, where)
    if value <= 0:
        raise PolygonDataError(f"{where}: {field} must be positive, got {value}")
    return value


def _size(raw: Mapping[str, Any], field: str, where: str) -> Decimal:
    value = _number(raw, field, where)
    if value < 0:
        raise PolygonDataError(f"{where}: {field} must not be negative, got {value}")
    return value


def _epoch(raw: Mapping[str, Any], field: str, where: str, per_second: int) -> datetime:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PolygonDataError(f"{where}: {field} is not a timestamp: {value!r}")
    seconds, fraction = divmod(value, per_second)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(
        microseconds=fraction * 1_000_000 // per_second
    )


def _object(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolygonDataError(f"{where}: expected a JSON object, got {raw!r:.200}")
    return raw


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def _aware(at: datetime | None, name: str) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise ValidationError(name, f"{name} must be timezone-aware")
    return at


def _count(value: int, name: str, maximum: int = MAX_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValidationError(name, f"{name} must be an integer from 1 to {maximum}, got {value}")
    return value


def _quote(symbol: str, nbbo: Mapping[str, Any], last: Decimal) -> Quote:
    where = f"Polygon NBBO of {symbol}"
    try:
        return Quote(
            symbol=symbol,
            bid=_price(nbbo, "p", where),
            ask=_price(nbbo, "P", where),
            bid_size=_size(nbbo, "s", where),
            ask_size=_size(nbbo, "S", where),
            last=last,
            timestamp=_epoch(nbbo, "t", where, 1_000_000_000),
        )
    except ValidationError as err:  # a crossed book, for one
        raise PolygonDataError(f"{where} refused: {err}") from err


def _bar(symbol: str, timeframe: Timeframe, raw: object) -> Bar:
    where = f"Polygon {timeframe} bar of {symbol}"
    agg = _object(raw, where)
    try:
        return Bar(
            symbol=symbol,
            timeframe=timeframe,
            start=_epoch(agg, "t", where, 1000),
            open=_price(agg, "o", where),
            high=_price(agg, "h", where),
            low=_price(agg, "l", where),
            close=_price(agg, "c", where),
            volume=_size(agg, "v", where),
        )
    except ValidationError as err:
        raise PolygonDataError(f"{where} refused: {err}") from err


class PolygonMarketData:
    """A `MarketData` on Polygon's REST API, plus its quote websocket."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        stream_url: str = DEFAULT_STREAM_URL,
        cache_ttl_seconds: float = 1.0,
        timeout_seconds: float = 10.0,
        universe: Iterable[str] | None = None,
        ready_symbol: str = "SPY",
        ready_ttl_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stream_url = stream_url
        self._key = api_key
        self._rest = RESTClient(
            api_key=api_key,
            base=self.base_url,
            retries=0,
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            pagination=False,
        )
        # polygon-api-client builds urllib3.Timeout but never hands it to a request; and a
        # quote fetches NBBO and last trade at once, so keep more than one connection a host.
        self._rest.client.connection_pool_kw["timeout"] = urllib3.Timeout(
            connect=timeout_seconds, read=timeout_seconds
        )
        self._rest.client.connection_pool_kw["maxsize"] = 10
        self._ttl = cache_ttl_seconds
        self._clock = clock
        self._universe = sorted(universe if universe is not None else DEFAULT_UNIVERSE)
        self._ready_symbol = ready_symbol
        self._ready_ttl = ready_ttl_seconds
        self._ready: tuple[float, bool] | None = None
        self._quotes: dict[str, tuple[float, Quote]] = {}
        self._inflight: dict[str, asyncio.Future[Quote]] = {}
        self._tickers: set[str] = set()  # confirmed to exist at Polygon
        self.stream_connections = 0

    def __repr__(self) -> str:
        return f"PolygonMarketData({self.base_url})"

    def symbols(self) -> list[str]:
        """The symbols this deployment offers (Polygon itself knows thousands)."""
        return list(self._universe)

    # -- REST ---------------------------------------------------------------------------------

    def _fetch(self, call: Callable[[], Any], what: str) -> Any:
        """One request in this thread: the body as JSON with Decimal numbers."""
        try:
            response = call()
        except BadResponse as err:
            try:
                body = json.loads(str(err))
            except ValueError:
                body = None
            if isinstance(body, Mapping) and body.get("status") == "NOT_FOUND":
                raise _NotFound(what) from None
            raise PolygonError(f"{what}: Polygon refused: {str(err)[:300]}") from None
        except MaxRetryError as err:  # 429, 5xx, timeouts: urllib3 with retries=0
            raise PolygonError(f"{what}: Polygon did not answer: {err.reason}") from None
        except HTTPError as err:
            raise PolygonError(f"{what}: Polygon did not answer: {err}") from None
        try:
            return json.loads(response.data, parse_float=Decimal)
        except (ValueError, AttributeError) as err:
            raise PolygonDataError(f"{what}: Polygon's answer is not JSON: {err}") from None

    async def _get(self, call: Callable[[], Any], what: str, symbol: str) -> Mapping[str, Any]:
        try:
            body = await asyncio.to_thread(self._fetch, call, what)
        except _NotFound:
            raise SymbolNotFoundError(symbol) from None
        return _object(body, what)

    async def get_last_trade(self, symbol: str) -> LastTrade:
        """The last trade (GET /v2/last/trade/{ticker}). Read-only."""
        symbol = _symbol(symbol)
        what = f"last trade of {symbol}"
        body = await self._get(lambda: self._rest.get_last_trade(symbol, raw=True), what, symbol)
        trade = _object(body.get("results"), f"Polygon {what}")
        where = f"Polygon {what}"
        return LastTrade(
            symbol=symbol,
            price=_price(trade, "p", where),
            size=_size(trade, "s", where),
            timestamp=_epoch(trade, "t", where, 1_000_000_000),
        )

    async def _nbbo(self, symbol: str) -> Mapping[str, Any]:
        what = f"NBBO of {symbol}"
        body = await self._get(lambda: self._rest.get_last_quote(symbol, raw=True), what, symbol)
        return _object(body.get("results"), f"Polygon {what}")

    async def _fetch_quote(self, symbol: str) -> Quote:
        nbbo, trade = await asyncio.gather(self._nbbo(symbol), self.get_last_trade(symbol))
        return _quote(symbol, nbbo, trade.price)

    async def get_quote(self, symbol: str) -> Quote:
        """NBBO (GET /v2/last/nbbo/{ticker}) with the last trade as `last`, cached for the
        TTL. Read-only: running it twice reads twice (or the cache)."""
        symbol = _symbol(symbol)
        cached = self._quotes.get(symbol)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        fetch = self._inflight.get(symbol)
        if fetch is None:
            fetch = asyncio.ensure_future(self._fetch_quote(symbol))
            self._inflight[symbol] = fetch
            fetch.add_done_callback(lambda _: self._inflight.pop(symbol, None))
        quote = await asyncio.shield(fetch)
        self._remember(quote)
        return quote

    def _remember(self, quote: Quote) -> None:
        self._quotes[quote.symbol] = (self._clock() + self._ttl, quote)

    async def _aggregates(
        self,
        symbol: str,
        timeframe: Timeframe,
        start: datetime,
        end: datetime,
        sort: str,
        limit: int,
    ) -> tuple[list[Bar], bool]:
        """Bars from GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to};
        and whether Polygon says there are more (`next_url`)."""
        multiplier, timespan, _ = _TIMEFRAMES[timeframe]
        what = f"{timeframe} bars of {symbol}"
        body = await self._get(
            lambda: self._rest.get_aggs(
                symbol,
                multiplier,
                timespan,
                _millis(start),
                _millis(end),
                adjusted=True,
                sort=sort,
                limit=limit,
                raw=True,
            ),
            what,
            symbol,
        )
        results = body.get("results")
        if results is None:
            results = []
        if not isinstance(results, list):
            raise PolygonDataError(f"Polygon {what}: results is not a list: {results!r:.200}")
        bars = [_bar(symbol, timeframe, item) for item in results]
        if not bars:
            await self._require_ticker(symbol)
        return bars, bool(body.get("next_url"))

    async def _require_ticker(self, symbol: str) -> None:
        """No bars is an answer for a known ticker, and SymbolNotFoundError for an unknown one
        (GET /v3/reference/tickers/{ticker}, asked once per ticker)."""
        if symbol in self._tickers:
            return
        what = f"ticker details of {symbol}"
        body = await self._get(
            lambda: self._rest.get_ticker_details(symbol, raw=True), what, symbol
        )
        details = _object(body.get("results"), f"Polygon {what}")
        if details.get("ticker") != symbol:
            raise PolygonDataError(f"Polygon {what}: answered for {details.get('ticker')!r}")
        self._tickers.add(symbol)

    async def get_bars(
        self, symbol: str, timeframe: Timeframe, limit: int, end: datetime | None = None
    ) -> list[Bar]:
        """The last `limit` bars up to `end` (default now), oldest first. Read-only.

        Asks for the newest bars first over a window wide enough for `limit` bars across
        nights, weekends and holidays; fewer come back when the ticker traded less.
        """
        symbol = _symbol(symbol)
        timeframe = Timeframe(timeframe)
        _count(limit, "limit")
        stop = _aware(end, "end")
        _, _, per_bar = _TIMEFRAMES[timeframe]
        # Trading hours are about a quarter of the calendar for intraday bars, and trading
        # days about two thirds of it for daily bars; a week of slack covers holidays.
        spread = 2 if timeframe is Timeframe.DAY_1 else 6
        start = stop - timedelta(seconds=timeframe.seconds * limit * spread) - timedelta(days=7)
        base_limit = min(MAX_BASE_AGGREGATES, limit * per_bar)
        bars, _ = await self._aggregates(symbol, timeframe, start, stop, "desc", base_limit)
        newest = sorted(bars, key=lambda bar: bar.start, reverse=True)[:limit]
        return newest[::-1]

    async def get_bars_range(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Bar]:
        """Every bar starting in [start, end], oldest first (historical range). Read-only.

        One request reads at most 50,000 base aggregates; a longer range continues from the
        last bar received, up to 20 requests.
        """
        symbol = _symbol(symbol)
        timeframe = Timeframe(timeframe)
        begin, stop = _aware(start, "start"), _aware(end, "end")
        if begin > stop:
            raise ValidationError("start", "start must not be after end")
        result: list[Bar] = []
        for _ in range(_RANGE_MAX_PAGES):
            bars, more = await self._aggregates(
                symbol, timeframe, begin, stop, "asc", MAX_BASE_AGGREGATES
            )
            fresh = [bar for bar in bars if not result or bar.start > result[-1].start]
            result.extend(sorted(fresh, key=lambda bar: bar.start))
            if not more or not fresh:
                return result
            begin = result[-1].start + timedelta(milliseconds=1)
        raise PolygonError(
            f"{timeframe} bars of {symbol} from {start} to {end}: more than "
            f"{_RANGE_MAX_PAGES} pages; ask for a shorter range"
        )

    async def get_price_series(self, symbol: str, days: int) -> list[Decimal]:
        """Daily closes of the last `days` trading days, oldest first, for VaR, beta and
        correlation. Read-only.

        Trading days, not calendar days: series of different symbols line up on the dates
        the market was open.
        """
        bars = await self.get_bars(symbol, Timeframe.DAY_1, _count(days, "days"))
        return [bar.close for bar in bars]

    async def ready(self) -> bool:
        """True when Polygon answers a quote; remembered for a few seconds."""
        now = self._clock()
        if self._ready is not None and self._ready[0] > now:
            return self._ready[1]
        try:
            await self.get_quote(self._ready_symbol)
            ok = True
        except Exception as err:  # readiness reports any failure as "not ready"
            log.warning("Polygon is not ready: %s", err)
            ok = False
        self._ready = (now + self._ready_ttl, ok)
        return ok

    # -- websocket ----------------------------------------------------------------------------

    async def stream_quotes(
        self,
        symbols: Sequence[str],
        on_quote: OnQuote,
        stop: asyncio.Event | None = None,
        *,
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 30.0,
        stable_after_seconds: float = 30.0,
    ) -> None:
        """Call `on_quote` with every NBBO update of `symbols` until `stop` is set (or the
        task is cancelled), reconnecting with jittered backoff whenever the socket fails.

        Subscribes to quotes (Q.*) and trades (T.*): a Quote carries the last trade price,
        seeded from the REST last trade. A quote arriving before any trade price is known is
        skipped. Each quote also refreshes the REST quote cache.
        """
        wanted = [_symbol(symbol) for symbol in symbols]
        stop = stop or asyncio.Event()
        last: dict[str, Decimal] = {}
        for symbol in wanted:
            try:
                last[symbol] = (await self.get_last_trade(symbol)).price
            except (PolygonError, SymbolNotFoundError) as err:
                log.warning("no last trade for %s yet (%s); waiting for one", symbol, err)
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            since: float | None = None
            try:
                async with connect(self.stream_url, open_timeout=10, close_timeout=2) as ws:
                    await self._stream_handshake(ws, wanted)
                    since = loop.time()
                    self.stream_connections += 1
                    await self._stream(ws, stop, last, on_quote)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure of this connection: reconnect
                log.warning("Polygon quote stream failed (%s); reconnecting", err)
            if stop.is_set():
                return
            if since is not None and loop.time() - since > stable_after_seconds:
                failures = 0
            failures += 1
            delay = backoff_delay(failures, backoff_base_seconds, backoff_cap_seconds)
            await sleep_until_stopped(stop, delay)

    async def _stream_handshake(self, ws: ClientConnection, symbols: list[str]) -> None:
        async with asyncio.timeout(10):
            await ws.send(json.dumps({"action": "auth", "params": self._key}))
            while True:
                statuses = [event.get("status") for event in _events(await ws.recv())]
                if "auth_failed" in statuses:
                    raise PolygonError("Polygon refused the stream API key")
                if "auth_success" in statuses:
                    break
        topics = ",".join(f"{kind}.{symbol}" for symbol in symbols for kind in ("Q", "T"))
        await ws.send(json.dumps({"action": "subscribe", "params": topics}))

    async def _stream(
        self,
        ws: ClientConnection,
        stop: asyncio.Event,
        last: dict[str, Decimal],
        on_quote: OnQuote,
    ) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(ws.recv())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    return
                try:
                    events = _events(receiving.result())
                except PolygonDataError as err:
                    log.error("Polygon stream frame refused: %s", err)
                    continue
                for event in events:
                    quote = self._stream_event(event, last)
                    if quote is not None:
                        self._remember(quote)
                        await on_quote(quote)
        finally:
            stopping.cancel()

    def _stream_event(self, event: Mapping[str, Any], last: dict[str, Decimal]) -> Quote | None:
        kind = event.get("ev")
        symbol = event.get("sym")
        try:
            if kind == "T" and isinstance(symbol, str):
                last[symbol] = _price(event, "p", f"Polygon trade of {symbol}")
            elif kind == "Q" and isinstance(symbol, str):
                if symbol not in last:
                    return None
                where = f"Polygon streamed quote of {symbol}"
                return Quote(
                    symbol=symbol,
                    bid=_price(event, "bp", where),
                    ask=_price(event, "ap", where),
                    bid_size=_size(event, "bs", where) * ROUND_LOT,
                    ask_size=_size(event, "as", where) * ROUND_LOT,
                    last=last[symbol],
                    timestamp=_epoch(event, "t", where, 1000),
                )
            elif kind == "status":
                log.info("Polygon stream: %s %s", event.get("status"), event.get("message"))
            else:
                log.debug("Polygon stream event ignored: %s", kind)
        except (PolygonDataError, ValidationError) as err:
            log.error("malformed Polygon stream event refused: %s", err)
        return None


def _events(frame: str | bytes) -> list[Mapping[str, Any]]:
    """A stream frame: a JSON array of events (a lone object is taken as one event)."""
    try:
        message = json.loads(frame, parse_float=Decimal)
    except ValueError as err:
        raise PolygonDataError(f"Polygon stream frame is not JSON: {frame!r:.200}") from err
    items = message if isinstance(message, list) else [message]
    return [item for item in items if isinstance(item, Mapping)]
