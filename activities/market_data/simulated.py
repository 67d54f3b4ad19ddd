"""The seeded simulated market data feed, the default source of quotes, bars and closes.

It is a `contracts.ports.MarketData`, like every source: `get_quote`, `get_bars`,
`get_price_series` (daily closes for the risk analytics), `ready` and `symbols`.

**The simulated price is a pure function of (seed, symbol, instant).** There is no state to
advance: the API, the worker and the paper venue's matching loop, in different processes,
see the same quote at the same instant, and a test can ask for the quote at any datetime.
The mid is

    mid(t) = reference * (1 + volatility * sum over octaves of amplitude * noise(t))

where each octave is *value noise* over time buckets of its span (1 s, 10 s, 1 min, 10 min,
1 h, 1 day, 1 week, 30 days, 365 days): a hash of (seed, key, span, bucket) gives a value in
[-1, 1) at every bucket boundary, linearly interpolated in between. Amplitudes grow with the
span (0.5 basis points at 1 s up to 5 % at a year), so the path wanders like a random walk at
every scale, from tick-by-tick jitter to yearly trends, and one price costs O(octaves) hashes.
Each octave mixes a market factor (the same noise for every symbol) with the symbol's own,
in a per-symbol proportion, so index ETFs track each other and single names have a beta.
The interpolated noise never leaves [-1, 1], so the excursion is bounded by construction:
at most `MAX_EXCURSION` (under 19 % for the most volatile name) either side of the
reference, so never near zero. The arithmetic is integers and Decimal only (money is
Decimal end to end), in a fixed Decimal context, so no float and no caller's context can
make two processes disagree.

Things the simulation does not model, on purpose: prices move around the clock, weekends
included (the default session mode is always open); daily bars and daily closes are UTC
days; bar volumes are hashed per bar, so they do not add up across timeframes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext
from functools import lru_cache
from hashlib import blake2b
from types import MappingProxyType

from domain.errors import ValidationError
from domain.market import Bar, Quote, SymbolNotFoundError, Timeframe
from domain.orders import validate_symbol
from domain.values import SUB_PENNY_TICK, round_to_tick, tick_size_for, to_decimal

MAX_LIMIT = 1000
ROUND_LOT = 100


# Reference prices: the centre the simulated prices wander around, roughly where these names
# traded in late 2025. Liquid US large caps, index ETFs and a few cheaper names.
DEFAULT_UNIVERSE: Mapping[str, Decimal] = MappingProxyType(
    {
        "AAPL": Decimal("230.00"),
        "MSFT": Decimal("430.00"),
        "GOOGL": Decimal("180.00"),
        "AMZN": Decimal("210.00"),
        "NVDA": Decimal("180.00"),
        "TSLA": Decimal("330.00"),
        "META": Decimal("700.00"),
        "NFLX": Decimal("110.00"),
        "AMD": Decimal("160.00"),
        "INTC": Decimal("22.00"),
        "JPM": Decimal("300.00"),
        "BAC": Decimal("47.00"),
        "V": Decimal("340.00"),
        "BRK.B": Decimal("490.00"),
        "JNJ": Decimal("170.00"),
        "PFE": Decimal("25.00"),
        "XOM": Decimal("115.00"),
        "KO": Decimal("70.00"),
        "PEP": Decimal("150.00"),
        "T": Decimal("27.00"),
        "F": Decimal("11.00"),
        "SPY": Decimal("650.00"),
        "QQQ": Decimal("580.00"),
        "IWM": Decimal("240.00"),
        "DIA": Decimal("460.00"),
    }
)


@dataclass(frozen=True)
class _Profile:
    """How a name moves: percentages, so that the price arithmetic stays in integers."""

    volatility_pct: int  # scales every octave; 100 is a typical large cap
    market_pct: int  # share of each move taken from the common market factor, 0..100


_DEFAULT_PROFILE = _Profile(volatility_pct=100, market_pct=50)
_PROFILES: Mapping[str, _Profile] = MappingProxyType(
    {
        "SPY": _Profile(50, 100),
        "DIA": _Profile(50, 95),
        "QQQ": _Profile(65, 90),
        "IWM": _Profile(75, 85),
        "KO": _Profile(50, 40),
        "PEP": _Profile(55, 40),
        "JNJ": _Profile(55, 35),
        "BRK.B": _Profile(55, 70),
        "T": _Profile(60, 35),
        "V": _Profile(70, 60),
        "PFE": _Profile(70, 35),
        "MSFT": _Profile(75, 65),
        "AAPL": _Profile(80, 65),
        "JPM": _Profile(80, 60),
        "XOM": _Profile(80, 40),
        "BAC": _Profile(85, 60),
        "GOOGL": _Profile(90, 60),
        "F": _Profile(90, 45),
        "AMZN": _Profile(95, 60),
        "META": _Profile(100, 60),
        "NFLX": _Profile(100, 45),
        "INTC": _Profile(100, 45),
        "NVDA": _Profile(120, 60),
        "AMD": _Profile(120, 55),
        "TSLA": _Profile(120, 65),
    }
)

_MICROS = 1_000_000
_SECOND = _MICROS
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
# (span in microseconds, amplitude in parts per million of the reference price). Amplitudes
# grow with the span, as a random walk's spread does, but slower than its square root at the
# long end so that the sum stays bounded.
_OCTAVES: tuple[tuple[int, int], ...] = (
    (_SECOND, 50),
    (10 * _SECOND, 150),
    (_MINUTE, 400),
    (10 * _MINUTE, 1_200),
    (_HOUR, 5_000),
    (_DAY, 30_000),
    (7 * _DAY, 30_000),
    (30 * _DAY, 40_000),
    (365 * _DAY, 50_000),
)
_NOISE_ONE = 1 << 63  # hashed noise is an integer in [-2^63, 2^63): a value in [-1, 1)
# ppm * market/own percent * volatility percent * noise scale
_EXCURSION_DENOMINATOR = Decimal(_MICROS * 100 * 100 * _NOISE_ONE)
MAX_EXCURSION = Decimal(
    sum(amplitude for _, amplitude in _OCTAVES)
    * max(profile.volatility_pct for profile in [_DEFAULT_PROFILE, *_PROFILES.values()])
) / Decimal(_MICROS * 100)
if MAX_EXCURSION > Decimal("0.25"):  # pragma: no cover - a guard on the tables above
    raise RuntimeError(f"simulated prices could wander {MAX_EXCURSION:%} from reference")

_MARKET_KEY = "^MARKET"  # cannot collide with a symbol: symbols never contain "^"
# Fixed, so that a caller who changed the thread's decimal context cannot change a price.
_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAR_SAMPLES = 4  # intervals per bar at which high and low are sampled
_CHEAP = Decimal(50)


def _hash(seed: int, key: str, span: int, bucket: int) -> int:
    """The noise of `key` at one bucket boundary of the octave `span`: in [-2^63, 2^63)."""
    digest = blake2b(f"{seed}|{key}|{span}|{bucket}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") - _NOISE_ONE


@lru_cache(maxsize=1 << 16)
def _knot(seed: int, symbol: str, span: int, bucket: int) -> int:
    """A symbol's noise at a bucket boundary: its market and own noise mixed by its profile.

    Pure, so the cache changes nothing but the cost: the slow octaves' knots are shared by
    every instant in their bucket, and a thousand bars revisit them thousands of times.
    """
    profile = _PROFILES.get(symbol, _DEFAULT_PROFILE)
    market = _hash(seed, _MARKET_KEY, span, bucket) if profile.market_pct else 0
    own = _hash(seed, symbol, span, bucket) if profile.market_pct < 100 else 0
    return profile.market_pct * market + (100 - profile.market_pct) * own


def _draws(seed: int, symbol: str, purpose: str, bucket: int) -> tuple[int, int, int, int]:
    """Four independent non-negative integers for the per-second details of a quote or bar."""
    digest = blake2b(f"{seed}|{symbol}|{purpose}|{bucket}".encode(), digest_size=16).digest()
    return (
        int.from_bytes(digest[0:4], "big"),
        int.from_bytes(digest[4:8], "big"),
        int.from_bytes(digest[8:12], "big"),
        int.from_bytes(digest[12:16], "big"),
    )


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _floor_tick(price: Decimal) -> Decimal:
    return price.quantize(tick_size_for(price), rounding=ROUND_FLOOR)


def _ceil_tick(price: Decimal) -> Decimal:
    return price.quantize(tick_size_for(price), rounding=ROUND_CEILING)


def _aware(at: datetime, field: str) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValidationError(field, f"{field} must be a timezone-aware datetime, got {at!r}")
    return at.astimezone(UTC)


def _count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValidationError(field, f"{field} must be an integer from 1 to {MAX_LIMIT}")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


class SimulatedFeed:
    """Seeded simulated quotes and bars: a pure function of (seed, symbol, instant)."""

    def __init__(
        self,
        seed: int = 7,
        universe: Mapping[str, Decimal] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValidationError("seed", f"seed must be an integer, got {seed!r}")
        references = DEFAULT_UNIVERSE if universe is None else universe
        if not references:
            raise ValidationError("universe", "the universe must hold at least one symbol")
        checked: dict[str, Decimal] = {}
        for symbol, reference in references.items():
            price = to_decimal(reference, "reference price")
            if price <= 0:
                raise ValidationError("reference price", f"{symbol}: must be positive")
            checked[validate_symbol(symbol)] = price
        self.seed = seed
        self._references: Mapping[str, Decimal] = MappingProxyType(checked)
        self._clock = clock or _now

    def __repr__(self) -> str:
        return f"SimulatedFeed(seed={self.seed}, symbols={len(self._references)})"

    def symbols(self) -> list[str]:
        return sorted(self._references)

    def _reference(self, symbol: str) -> Decimal:
        # Upper-case only, as everywhere else: "aapl" is refused, not quietly upper-cased.
        reference = self._references.get(symbol) if isinstance(symbol, str) else None
        if reference is None:
            raise SymbolNotFoundError(symbol)
        return reference

    def _mid(self, symbol: str, reference: Decimal, micros: int) -> Decimal:
        total = 0
        for span, amplitude in _OCTAVES:
            # Value noise: the knots at both ends of the bucket, interpolated linearly.
            bucket, offset = divmod(micros, span)
            start = _knot(self.seed, symbol, span, bucket)
            end = _knot(self.seed, symbol, span, bucket + 1)
            total += amplitude * ((start * (span - offset) + end * offset) // span)
        volatility = _PROFILES.get(symbol, _DEFAULT_PROFILE).volatility_pct
        return reference * (1 + Decimal(total * volatility) / _EXCURSION_DENOMINATOR)

    def mid(self, symbol: str, at: datetime | None = None) -> Decimal:
        """The unrounded mid price at `at` (default: now), the centre of the quote."""
        reference = self._reference(symbol)
        at = self._clock() if at is None else at
        with localcontext(_CONTEXT):
            return self._mid(symbol, reference, _micros(_aware(at, "at")))

    def quote(self, symbol: str, at: datetime | None = None) -> Quote:
        """Top of book at `at` (default: now): a spread of 1-5 ticks around the mid."""
        reference = self._reference(symbol)
        at = _aware(self._clock() if at is None else at, "at")
        micros = _micros(at)
        jitter, bid_lots, ask_lots, last_draw = _draws(
            self.seed, symbol, "quote", micros // _SECOND
        )
        volatility = _PROFILES.get(symbol, _DEFAULT_PROFILE).volatility_pct
        with localcontext(_CONTEXT):
            mid = self._mid(symbol, reference, micros)
            tick = tick_size_for(mid)
            # Spread in ticks: 1, plus 0-1 hashed per second, plus one or two for a volatile
            # name (its makers carry more risk per share) and one under $50 (a stand-in for
            # the thinner books of smaller names).
            ticks = 1 + jitter % 2 + (mid < _CHEAP)
            ticks += (volatility > 70) + (volatility > 100)
            bid = max(_floor_tick(mid - ticks * tick / 2), SUB_PENNY_TICK)
            ask = _ceil_tick(bid + ticks * tick)
            last = min(_floor_tick(bid + (last_draw % (ticks + 1)) * tick), ask)
        return Quote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            bid_size=Decimal(ROUND_LOT * (1 + bid_lots % 20)),
            ask_size=Decimal(ROUND_LOT * (1 + ask_lots % 20)),
            last=last,
            timestamp=at,
        )

    def bars(
        self, symbol: str, timeframe: Timeframe, limit: int, end: datetime | None = None
    ) -> list[Bar]:
        """`limit` bars, oldest first, the last one the (partial) bar containing `end`.

        Bars are aligned to the epoch (daily bars to UTC midnight) and contiguous: each
        bar's close is the price at the next bar's open.
        """
        reference = self._reference(symbol)
        timeframe = Timeframe(timeframe)
        _count(limit, "limit")
        stop = _micros(_aware(self._clock() if end is None else end, "end"))
        span = timeframe.seconds * _SECOND
        last_start = stop - stop % span
        result: list[Bar] = []
        prices: dict[int, Decimal] = {}  # a bar's close is the next bar's open: price it once

        def price(micros: int) -> Decimal:
            if micros not in prices:
                prices[micros] = round_to_tick(self._mid(symbol, reference, micros))
            return prices[micros]

        with localcontext(_CONTEXT):
            for start in range(last_start - (limit - 1) * span, last_start + 1, span):
                close_at = min(start + span, stop)
                step = close_at - start
                samples = [price(start + i * step // _BAR_SAMPLES) for i in range(_BAR_SAMPLES + 1)]
                (lots, *_) = _draws(self.seed, symbol, f"volume{span}", start // span)
                # Per-minute volume averages 20,000 shares; a partial bar has traded part of it.
                full = ROUND_LOT * (1 + lots % 400) * (span // _MINUTE)
                volume = full * (close_at - start) // span // ROUND_LOT * ROUND_LOT
                result.append(
                    Bar(
                        symbol=symbol,
                        timeframe=timeframe,
                        start=_instant(start),
                        open=samples[0],
                        high=max(samples),
                        low=min(samples),
                        close=samples[-1],
                        volume=Decimal(volume),
                    )
                )
        return result

    def price_series(self, symbol: str, days: int, end: datetime | None = None) -> list[Decimal]:
        """Daily closes, oldest first: the price at each of the last `days` UTC midnights.

        Anchored to midnights rather than to now, so series asked for one symbol after
        another line up exactly (the analytics require aligned series).
        """
        reference = self._reference(symbol)
        _count(days, "days")
        stop = _micros(_aware(self._clock() if end is None else end, "end"))
        last_midnight = stop - stop % _DAY
        with localcontext(_CONTEXT):
            return [
                round_to_tick(self._mid(symbol, reference, last_midnight - back * _DAY))
                for back in range(days - 1, -1, -1)
            ]

    async def get_quote(self, symbol: str) -> Quote:
        return self.quote(symbol)

    async def get_bars(
        self, symbol: str, timeframe: Timeframe, limit: int, end: datetime | None = None
    ) -> list[Bar]:
        # Up to a thousand bars is tens of milliseconds of hashing: keep the event loop free.
        return await asyncio.to_thread(self.bars, symbol, timeframe, limit, end)

    async def get_price_series(self, symbol: str, days: int) -> list[Decimal]:
        return await asyncio.to_thread(self.price_series, symbol, days)

    async def ready(self) -> bool:
        return True
