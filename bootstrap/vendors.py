"""Choosing the broker and market data by configuration: vendors when their keys are set.

The paper venue and the simulated feed stay the default. Malformed URLs are refused when the
settings are built; `validate_vendor_settings` runs at start and refuses what only the
combination of settings makes wrong (one key of a pair, live trading without real market
data), so a half-configured vendor stops the process with a clear message instead of
failing at the first order.
"""

from __future__ import annotations

import logging

from activities.brokers.alpaca_rest import (
    LIVE_URL,
    AlpacaBroker,
    normalize_base_url,
    stream_url_for,
)
from activities.brokers.alpaca_stream import AlpacaTradeStream, Hook
from activities.market_data.polygon import PolygonMarketData
from bootstrap.settings import Settings, secret
from contracts.ports import Broker, Deliver, MarketData

log = logging.getLogger(__name__)


class VendorConfigError(ValueError):
    """The vendor settings cannot work; the message names the setting and the fix."""


def validate_vendor_settings(settings: Settings) -> None:
    """Refuse, with a clear message, vendor settings that cannot work."""
    alpaca_key, alpaca_secret = secret(settings.alpaca_api_key), secret(settings.alpaca_secret_key)
    if (alpaca_key is None) != (alpaca_secret is None):
        present = "ALPACA_API_KEY" if alpaca_key else "ALPACA_SECRET_KEY"
        raise VendorConfigError(
            f"only {present} is set: set both ALPACA_API_KEY and ALPACA_SECRET_KEY to trade "
            "at Alpaca, or neither to use the paper venue"
        )
    for name, value in (
        ("ALPACA_API_KEY", alpaca_key),
        ("ALPACA_SECRET_KEY", alpaca_secret),
        ("POLYGON_API_KEY", secret(settings.polygon_api_key)),
    ):
        if value is not None and any(character.isspace() for character in value):
            raise VendorConfigError(f"{name} contains whitespace; paste the key alone")
    if alpaca_key is not None and normalize_base_url(settings.alpaca_base_url) == LIVE_URL:
        log.warning("ALPACA_BASE_URL is Alpaca's LIVE trading API: orders use real money")
    if secret(settings.polygon_api_key) is None and alpaca_key is not None:
        if normalize_base_url(settings.alpaca_base_url) == LIVE_URL:
            raise VendorConfigError(
                "live trading at Alpaca needs real market data: set POLYGON_API_KEY (risk "
                "would otherwise price real-money orders with the simulated feed)"
            )
        log.warning(
            "Alpaca paper trading with the simulated feed: risk prices orders with "
            "simulated quotes; set POLYGON_API_KEY for real ones"
        )


def build_broker(settings: Settings, default: Broker) -> Broker:
    """Alpaca when its keys are set, else `default` (the paper venue)."""
    key, secret_key = secret(settings.alpaca_api_key), secret(settings.alpaca_secret_key)
    if key is None or secret_key is None:
        return default
    return AlpacaBroker(
        key,
        secret_key,
        settings.alpaca_base_url,
        timeout_seconds=settings.alpaca_timeout_seconds,
        max_rate_limit_wait_seconds=settings.alpaca_rate_limit_max_wait_seconds,
    )


def build_trade_stream(
    settings: Settings, deliver: Deliver, on_reconnect: Hook
) -> AlpacaTradeStream | None:
    """Alpaca's trade_updates stream when Alpaca is the broker (one per account), else None."""
    key, secret_key = secret(settings.alpaca_api_key), secret(settings.alpaca_secret_key)
    if key is None or secret_key is None:
        return None
    url = settings.alpaca_stream_url or stream_url_for(settings.alpaca_base_url)
    return AlpacaTradeStream(key, secret_key, deliver, on_reconnect, url=url)


def build_market_data(settings: Settings, default: MarketData) -> MarketData:
    """Polygon when its key is set, else `default` (the simulated feed)."""
    key = secret(settings.polygon_api_key)
    if key is None:
        return default
    return PolygonMarketData(
        key,
        base_url=settings.polygon_base_url,
        stream_url=settings.polygon_stream_url,
        timeout_seconds=settings.polygon_timeout_seconds,
        cache_ttl_seconds=settings.polygon_cache_ttl_seconds,
        universe=default.symbols(),
    )
