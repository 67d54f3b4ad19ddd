"""/api/v1/market-data: quotes and bars from the configured market data source."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api.deps import Deps, rate_limited
from api.errors import ApiError, error_responses, unavailable
from api.routes import API_V1
from api.schemas import SYMBOL_REGEX, BarList, BarPublic, QuotePublic
from domain.errors import ErrorCode
from domain.market import SymbolNotFoundError, Timeframe

log = logging.getLogger("trading.api.market_data")

router = APIRouter(
    prefix=f"{API_V1}/market-data",
    tags=["market data"],
    dependencies=[Depends(rate_limited("get_market_data"))],
    responses=error_responses(404),
)

SymbolPath = Annotated[str, Path(pattern=SYMBOL_REGEX, examples=["AAPL"])]


def _unknown(symbol: str) -> ApiError:
    return ApiError(404, ErrorCode.SYMBOL_NOT_FOUND, f"unknown symbol {symbol}")


def _unavailable(symbol: str, err: Exception) -> ApiError:
    log.warning("market data for %s failed: %s", symbol, type(err).__name__)
    return unavailable("market data is unavailable; retry later")


@router.get("/quote/{symbol}", response_model=QuotePublic, summary="Top of book")
async def get_quote(symbol: SymbolPath, deps: Deps) -> QuotePublic:
    try:
        quote = await deps.market_data.get_quote(symbol)
    except SymbolNotFoundError:
        raise _unknown(symbol) from None
    except Exception as err:
        raise _unavailable(symbol, err) from None
    return QuotePublic(
        symbol=quote.symbol,
        bid_price=quote.bid,
        ask_price=quote.ask,
        bid_size=quote.bid_size,
        ask_size=quote.ask_size,
        last_price=quote.last,
        timestamp=quote.timestamp,
    )


@router.get("/bars/{symbol}", response_model=BarList, summary="Historical bars, oldest first")
async def get_bars(
    symbol: SymbolPath,
    deps: Deps,
    timeframe: Timeframe = Timeframe.MINUTE_1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> BarList:
    try:
        bars = await deps.market_data.get_bars(symbol, timeframe, limit)
    except SymbolNotFoundError:
        raise _unknown(symbol) from None
    except Exception as err:
        raise _unavailable(symbol, err) from None
    return BarList(
        symbol=symbol,
        timeframe=timeframe,
        bars=[
            BarPublic(
                timestamp=bar.start,
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                volume=bar.volume,
            )
            for bar in bars
        ],
    )
