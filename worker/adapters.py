"""Choosing the broker and market data by configuration: vendors when their keys are set.

The paper venue and the simulated feed stay the default. `validate_vendor_settings` runs
at start, so a half-configured vendor (one key of a pair, a malformed URL) stops the process
with a clear message instead of failing at the first order.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from activities.alpaca import (
    LIVE_URL,
    AlpacaBroker,
    AlpacaTradeStream,
    Hook,
    normalize_base_url,
    stream_url_for,
)
from activities.market_data import MarketDataSource
from activities.orders import Broker
from activities.outbox import Deliver
from activities.polygon import PolygonMarketData
from worker.settings import Settings

log = logging.getLogger(__name__)

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class VendorConfigError(ValueError):
    """The vendor settings cannot work; the message names the setting and the fix."""


def _key(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _check_url(name: str, url: str, schemes: tuple[str, str], *, allow_path: bool) -> None:
    """A URL with one of (secure, loopback-only) schemes, a host, and no query or fragment.

    The plain scheme (http/ws) is allowed only for a loopback host (local fakes and
    proxies): anywhere else it would send the API keys in clear text.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError as err:
        raise VendorConfigError(f"{name}={url!r} is not a valid URL: {err}") from None
    secure, plain = schemes
    if parts.scheme not in schemes or not host:
        raise VendorConfigError(f"{name}={url!r} must look like {secure}://host")
    if parts.scheme == plain and host not in _LOOPBACK:
        raise VendorConfigError(
            f"{name}={url!r}: {plain}:// is only allowed for a loopback host; use {secure}://"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise VendorConfigError(f"{name}={url!r} must not carry credentials, query or fragment")
    if not allow_path and parts.path not in ("", "/", "/v2", "/v2/"):
        raise VendorConfigError(f"{name}={url!r} must be the API root, like {secure}://host")


def validate_vendor_settings(settings: Settings) -> None:
    """Refuse, with a clear message, vendor settings that cannot work."""
    alpaca_key, alpaca_secret = _key(settings.alpaca_api_key), _key(settings.alpaca_secret_key)
    if (alpaca_key is None) != (alpaca_secret is None):
        present = "ALPACA_API_KEY" if alpaca_key else "ALPACA_SECRET_KEY"
        raise VendorConfigError(
            f"only {present} is set: set both ALPACA_API_KEY and ALPACA_SECRET_KEY to trade "
            "at Alpaca, or neither to use the paper venue"
        )
    for name, value in (
        ("ALPACA_API_KEY", alpaca_key),
        ("ALPACA_SECRET_KEY", alpaca_secret),
        ("POLYGON_API_KEY", _key(settings.polygon_api_key)),
    ):
        if value is not None and any(character.isspace() for character in value):
            raise VendorConfigError(f"{name} contains whitespace; paste the key alone")
    if alpaca_key is not None:
        _check_url("ALPACA_BASE_URL", settings.alpaca_base_url, ("https", "http"), allow_path=False)
        stream = settings.alpaca_stream_url
        if stream is not None:
            _check_url("ALPACA_STREAM_URL", stream, ("wss", "ws"), allow_path=True)
        if normalize_base_url(settings.alpaca_base_url) == LIVE_URL:
            log.warning("ALPACA_BASE_URL is Alpaca's LIVE trading API: orders use real money")
    if _key(settings.polygon_api_key) is not None:
        _check_url(
            "POLYGON_BASE_URL",
            settings.polygon_base_url,
            ("https", "http"),
            allow_path=False,
        )
        _check_url(
            "POLYGON_STREAM_URL",
            settings.polygon_stream_url,
            ("wss", "ws"),
            allow_path=True,
        )
    elif alpaca_key is not None:
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
    key, secret = _key(settings.alpaca_api_key), _key(settings.alpaca_secret_key)
    if key is None or secret is None:
        return default
    return AlpacaBroker(
        key,
        secret,
        settings.alpaca_base_url,
        timeout_seconds=settings.alpaca_timeout_seconds,
        max_rate_limit_wait_seconds=settings.alpaca_rate_limit_max_wait_seconds,
    )


def build_trade_stream(
    settings: Settings, deliver: Deliver, on_reconnect: Hook
) -> AlpacaTradeStream | None:
    """Alpaca's trade_updates stream when Alpaca is the broker (one per account), else None."""
    key, secret = _key(settings.alpaca_api_key), _key(settings.alpaca_secret_key)
    if key is None or secret is None:
        return None
    url = settings.alpaca_stream_url or stream_url_for(settings.alpaca_base_url)
    return AlpacaTradeStream(key, secret, deliver, on_reconnect, url=url)


def build_market_data(settings: Settings, default: MarketDataSource) -> MarketDataSource:
    """Polygon when its key is set, else `default` (the simulated feed)."""
    key = _key(settings.polygon_api_key)
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
