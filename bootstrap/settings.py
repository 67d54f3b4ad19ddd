"""Settings of every process (worker, API, `trading up`, operator commands), in one module.

Every field is an environment variable of the same name in upper case (TEMPORAL_ADDRESS,
DATABASE_URL, API_MASTER_KEY, ...). A setting that cannot work fails when the settings are
built, with a message that names the variable: secrets are `SecretStr` (never printed),
URLs are parsed by pydantic with the schemes each allows, and DATABASE_URL is normalised
here, once, for asyncpg.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    Field,
    SecretStr,
    TypeAdapter,
    UrlConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.store.postgres import normalize_database_url
from contracts.payloads import TASK_QUEUE, OrderWorkflowOptions
from domain.commissions import CommissionModel, model_from_config

log = logging.getLogger(__name__)

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_SCHEMES = {"http": ("https", "http"), "ws": ("wss", "ws")}


def _url_checker(kind: Literal["http", "ws"], *, root_only: bool) -> AfterValidator:
    """A URL setting kept as the text it was given, once pydantic's AnyUrl accepted it with
    one of the kind's schemes. The plain scheme (http, ws) is allowed for a loopback host
    only (local fakes and proxies): anywhere else it would send API keys in clear text."""
    secure, plain = _SCHEMES[kind]
    adapter: TypeAdapter[AnyUrl] = TypeAdapter(
        Annotated[AnyUrl, UrlConstraints(allowed_schemes=[secure, plain], host_required=True)]
    )

    def check(value: str, info: ValidationInfo) -> str:
        name = (info.field_name or "url").upper()
        try:
            url = adapter.validate_python(value)
        except PydanticValidationError as err:
            reason = err.errors()[0]["msg"]
            raise ValueError(
                f"{name}={value!r} must look like {secure}://host ({reason})"
            ) from None
        if url.scheme == plain and url.host not in _LOOPBACK:
            raise ValueError(
                f"{name}={value!r}: {plain}:// is only allowed for a loopback host; use {secure}://"
            )
        if url.query or url.fragment or url.username or url.password:
            raise ValueError(f"{name}={value!r} must not carry credentials, query or fragment")
        if root_only and (url.path or "/") not in ("/", "/v2", "/v2/"):
            raise ValueError(f"{name}={value!r} must be the API root, like {secure}://host")
        return value

    return AfterValidator(check)


def _database_url(value: str | None) -> str | None:
    return normalize_database_url(value)


HttpApiRoot = Annotated[str, _url_checker("http", root_only=True)]
HttpUrlText = Annotated[str, _url_checker("http", root_only=False)]
WebSocketUrl = Annotated[str, _url_checker("ws", root_only=False)]
DatabaseUrl = Annotated[str | None, AfterValidator(_database_url)]


class Settings(BaseSettings):
    """One settings object for the whole system; every field is an environment variable of
    the same name in upper case (e.g. TEMPORAL_ADDRESS, DATABASE_URL)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".trading")
    # Log lines as text or one JSON object each; unset: JSON in production, else text
    log_format: Literal["text", "json"] | None = None
    # OpenTelemetry traces (the otel extra): off, to OTEL_EXPORTER_OTLP_ENDPOINT, or stdout
    tracing: Literal["off", "otlp", "console"] = "off"

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    task_queue: str = TASK_QUEUE
    max_concurrent_activities: int = Field(default=100, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)

    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)  # `trading up` only
    temporal_ui_url: HttpUrlText | None = None  # links in operator output; default: local UI

    # HTTP API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    # The worker's /metrics (business, process and Temporal SDK metrics); port 0: any free
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)

    # PostgreSQL: unset means the embedded server under data_dir. A SQLAlchemy-style
    # driver suffix (postgresql+asyncpg://) is accepted and dropped.
    database_url: DatabaseUrl = None
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)

    # Order workflow
    order_poll_interval_seconds: int = Field(default=60, ge=1)
    order_max_poll_interval_seconds: int = Field(default=900, ge=1)
    order_max_history_events: int = Field(default=2000, ge=100)

    # Schedules: intraday portfolio snapshots every N minutes (N divides 60)
    snapshot_interval_minutes: int = Field(default=15, ge=1, le=60)

    # Market session: the real NYSE calendar, or always open (fills at any hour)
    market_session_mode: Literal["calendar", "always_open"] = "always_open"

    # Simulated market data and the paper venue
    feed_seed: int = 7
    venue_latency_ms: int = Field(default=50, ge=0)
    venue_tick_ms: int = Field(default=100, ge=5)
    venue_slippage_bps: Decimal = Field(default=Decimal("5"), ge=0)
    relay_interval_ms: int = Field(default=50, ge=5)
    commission: str = '{"model": "zero_commission"}'

    # Real vendors: when set, they replace the paper venue / simulated feed
    alpaca_api_key: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None
    alpaca_base_url: HttpApiRoot = "https://paper-api.alpaca.markets"
    alpaca_stream_url: WebSocketUrl | None = None  # default: the base URL's wss://.../stream
    alpaca_timeout_seconds: float = Field(default=10.0, gt=0)
    alpaca_rate_limit_max_wait_seconds: float = Field(default=10.0, ge=0)
    polygon_api_key: SecretStr | None = None
    polygon_base_url: HttpApiRoot = "https://api.polygon.io"
    polygon_stream_url: WebSocketUrl = "wss://socket.polygon.io/stocks"
    polygon_timeout_seconds: float = Field(default=10.0, gt=0)
    polygon_cache_ttl_seconds: float = Field(default=1.0, ge=0)

    @field_validator("commission")
    @classmethod
    def _commission_is_a_model(cls, value: str) -> str:
        cls.parse_commission(value)
        return value

    @model_validator(mode="after")
    def _pairs_and_pool(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        return self

    @staticmethod
    def parse_commission(value: str) -> CommissionModel:
        try:
            config: Any = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"COMMISSION is not JSON: {err}") from None
        if not isinstance(config, dict):
            raise ValueError('COMMISSION must be a JSON object like {"model": "per_share"}')
        return model_from_config(config)

    def commission_model(self) -> CommissionModel:
        return self.parse_commission(self.commission)

    def workflow_options(self) -> OrderWorkflowOptions:
        return OrderWorkflowOptions(
            poll_interval_seconds=self.order_poll_interval_seconds,
            max_poll_interval_seconds=self.order_max_poll_interval_seconds,
            max_history_events=self.order_max_history_events,
        )


def secret(value: SecretStr | None) -> str | None:
    """The secret's text without surrounding blanks, or None when unset or blank."""
    if value is None:
        return None
    text = value.get_secret_value().strip()
    return text or None


# -- the API's own settings -----------------------------------------------------------------


class RateLimitRule(BaseModel):
    """A token bucket: `max_requests` per `window_seconds` on average, and up to
    `max_requests + burst_allowance` at once after a quiet spell."""

    max_requests: int = Field(ge=1)
    window_seconds: int = Field(ge=1)
    burst_allowance: int = Field(default=0, ge=0)


# The seed document's trading limits, per API key and route class. `get_positions` covers
# every read of account state (orders, portfolio, positions).
TRADING_RATE_LIMITS: dict[str, RateLimitRule] = {
    "place_order": RateLimitRule(max_requests=10, window_seconds=60, burst_allowance=2),
    "cancel_order": RateLimitRule(max_requests=20, window_seconds=60, burst_allowance=5),
    "get_positions": RateLimitRule(max_requests=60, window_seconds=60, burst_allowance=10),
    "get_market_data": RateLimitRule(max_requests=100, window_seconds=60, burst_allowance=20),
}

MASTER_KEY_FILE = "master.key"
MIN_MASTER_KEY_LENGTH = 32
PLACEHOLDERS = frozenset(
    {"", "changethis", "changeme", "change-me", "change_me", "secret", "master", "placeholder"}
)


class ApiSettings(Settings):
    """Settings of `trading api`: every field an environment variable of the same name in
    upper case (API_HOST, API_MASTER_KEY, API_RATE_LIMITS as JSON, ...)."""

    # The server secret every API key's secret is derived from. Unset in development: one
    # is generated into <data_dir>/master.key (mode 0600) on first use. Required (and not
    # a placeholder) in production.
    api_master_key: SecretStr | None = None
    # A signed request's timestamp may be this far from the server's clock, either way.
    api_clock_skew_seconds: int = Field(default=30, ge=1, le=900)
    api_max_body_bytes: int = Field(default=16 * 1024, ge=256)
    # How long POST /orders and DELETE wait for the workflow's answer before 503.
    api_decision_timeout_seconds: int = Field(default=15, ge=1)
    # The longest a request waits on PostgreSQL for each of: a connection from the pool (or
    # a new one), one statement, the release; past it the request answers 503.
    api_dependency_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Slow clients: an idle keep-alive connection, or a request whose headers and body do
    # not arrive in full, is closed after this long. Beyond API_MAX_CONNECTIONS open
    # connections (API_MAX_CONNECTIONS_PER_CLIENT from one address) a new one evicts the
    # oldest still sending its request, or is answered 503 when all are busy.
    api_request_read_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    api_keepalive_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    api_max_connections: int = Field(default=1000, ge=10)
    api_max_connections_per_client: int = Field(default=100, ge=1)
    # API processes serving API_PORT together (SO_REUSEPORT: the kernel spreads connections).
    api_workers: int = Field(default=1, ge=1, le=64)
    # Partial overrides are merged over TRADING_RATE_LIMITS, e.g.
    # API_RATE_LIMITS='{"place_order": {"max_requests": 1000, "window_seconds": 1}}'
    api_rate_limits: dict[str, RateLimitRule] = Field(default_factory=dict)

    @field_validator("api_rate_limits")
    @classmethod
    def _known_route_classes(cls, value: dict[str, RateLimitRule]) -> dict[str, RateLimitRule]:
        unknown = set(value) - set(TRADING_RATE_LIMITS)
        if unknown:
            known = ", ".join(sorted(TRADING_RATE_LIMITS))
            raise ValueError(f"API_RATE_LIMITS names unknown route classes {unknown}: use {known}")
        return value

    @model_validator(mode="after")
    def _master_key_in_production(self) -> ApiSettings:
        if self.environment == "production" and _weak(self.api_master_key):
            raise ValueError(
                "API_MASTER_KEY must be set to a random value of at least "
                f"{MIN_MASTER_KEY_LENGTH} characters in production (e.g. `openssl rand -hex 32`)"
            )
        return self

    def rate_limits(self) -> dict[str, RateLimitRule]:
        return {**TRADING_RATE_LIMITS, **self.api_rate_limits}

    def master_key(self) -> bytes:
        """The master key: the setting, or in development the generated key file."""
        if self.api_master_key is not None and self.api_master_key.get_secret_value():
            if _weak(self.api_master_key):
                log.warning("API_MASTER_KEY is short or a placeholder; fine only for development")
            return self.api_master_key.get_secret_value().encode("utf-8")
        return load_or_create_master_key(self.data_dir / MASTER_KEY_FILE)


def _weak(value: SecretStr | None) -> bool:
    secret = "" if value is None else value.get_secret_value()
    return secret.strip().lower() in PLACEHOLDERS or len(secret) < MIN_MASTER_KEY_LENGTH


def load_or_create_master_key(path: Path) -> bytes:
    """Read the development master key, creating it (0600, exclusively) on first use.

    O_EXCL makes the first of several processes starting at once the one that writes it;
    the others read what it wrote.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_master_key(path)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    log.info("generated a development API master key in %s", path)
    return key.encode("utf-8")


def _read_master_key(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    key = ""
    for _ in range(50):  # another process may have created it and not written it yet
        key = path.read_text().strip()
        if key:
            break
        time.sleep(0.02)
    if len(key) < MIN_MASTER_KEY_LENGTH:
        raise ValueError(f"{path} holds no usable master key; delete it to generate one")
    return key.encode("utf-8")
