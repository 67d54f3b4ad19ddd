"""API settings: the master key (generated in development, required in production) and
rate limits from the environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bootstrap.settings import TRADING_RATE_LIMITS, ApiSettings


def test_development_generates_a_private_master_key_once(tmp_path: Path):
    settings = ApiSettings(environment="development", data_dir=tmp_path, api_master_key=None)

    first = settings.master_key()
    again = ApiSettings(environment="development", data_dir=tmp_path).master_key()

    assert first == again and len(first) == 64
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600


def test_a_set_master_key_is_used_as_is(tmp_path: Path):
    key = "k" * 40
    settings = ApiSettings(data_dir=tmp_path, api_master_key=key)

    assert settings.master_key() == key.encode()
    assert not (tmp_path / "master.key").exists()
    assert key not in repr(settings)


@pytest.mark.parametrize("key", [None, "changethis", "short-but-set"])
def test_production_refuses_a_missing_or_placeholder_master_key(tmp_path: Path, key: str | None):
    with pytest.raises(ValidationError, match="API_MASTER_KEY"):
        ApiSettings(environment="production", data_dir=tmp_path, api_master_key=key)


def test_production_accepts_a_real_master_key(tmp_path: Path):
    settings = ApiSettings(environment="production", api_master_key="0123456789abcdef" * 4)
    assert settings.master_key()


def test_rate_limits_default_to_the_seeds_and_merge_overrides(monkeypatch: pytest.MonkeyPatch):
    override = {"place_order": {"max_requests": 1000, "window_seconds": 1}}
    monkeypatch.setenv("API_RATE_LIMITS", json.dumps(override))

    limits = ApiSettings().rate_limits()

    assert limits["place_order"].max_requests == 1000
    assert limits["place_order"].burst_allowance == 0
    assert limits["get_market_data"] == TRADING_RATE_LIMITS["get_market_data"]
    assert TRADING_RATE_LIMITS["place_order"].max_requests == 10


def test_an_unknown_route_class_is_refused():
    with pytest.raises(ValidationError, match="unknown route classes"):
        ApiSettings(api_rate_limits={"place_orders": {"max_requests": 1, "window_seconds": 1}})


def test_defaults(monkeypatch: pytest.MonkeyPatch):
    for name in [name for name in os.environ if name.upper().startswith("API_")]:
        monkeypatch.delenv(name)
    settings = ApiSettings()
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.api_clock_skew_seconds == 30
    assert settings.api_max_body_bytes == 16 * 1024
