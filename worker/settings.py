"""Settings of every process (worker, API, stack), read from the environment."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.commissions import CommissionModel, model_from_config
from workflows.contracts import TASK_QUEUE, OrderWorkflowOptions


class Settings(BaseSettings):
    """One settings object for the whole system; every field is an environment variable of
    the same name in upper case (e.g. TEMPORAL_ADDRESS, DATABASE_URL)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".trading")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_api_key: str | None = None
    task_queue: str = TASK_QUEUE
    max_concurrent_activities: int = Field(default=100, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)

    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)  # `trading up` only
    temporal_ui_url: str | None = None  # links in operator output; default: the local UI

    # HTTP API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    # PostgreSQL: unset means the embedded server under data_dir
    database_url: str | None = None
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
    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_base_url: str = "https://paper-api.alpaca.markets"
    alpaca_stream_url: str | None = None  # default: the base URL's wss://.../stream
    alpaca_timeout_seconds: float = Field(default=10.0, gt=0)
    alpaca_rate_limit_max_wait_seconds: float = Field(default=10.0, ge=0)
    polygon_api_key: str | None = None
    polygon_base_url: str = "https://api.polygon.io"
    polygon_stream_url: str = "wss://socket.polygon.io/stocks"
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
