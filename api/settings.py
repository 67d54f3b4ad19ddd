"""Settings of the API process: worker.settings.Settings plus the API's own (API_* variables)."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from worker.settings import Settings

log = logging.getLogger(__name__)


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
