"""compose.yaml, its Dockerfile and Prometheus files, checked against the code they start.

It cannot run here (no container engine), so these tests read it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from bootstrap.settings import Settings
from worker.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = ("worker", "api")  # the services that run this project's image
# Which service publishes which container port.
PORTS = {7233: "temporal", 8080: "temporal-ui", 8000: "api", 9090: "prometheus", 3000: "grafana"}


def settings_fields(service: str) -> set[str]:
    fields = set(Settings.model_fields)
    if service == "api":
        try:
            from bootstrap.settings import ApiSettings
        except ImportError:  # the API's own settings have not landed
            return fields
        fields |= set(ApiSettings.model_fields)
    return fields


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def command(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def test_the_stack_has_every_component():
    assert set(SERVICES) == {
        *("postgresql", "temporal", "temporal-ui", "worker", "api", "prometheus", "grafana")
    }
    assert SERVICES["temporal"]["environment"]["DB"] == "postgres12"  # Temporal on PostgreSQL
    assert SERVICES["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(name):
    test = SERVICES[name].get("healthcheck", {}).get("test")
    assert test and test != ["NONE"], f"{name} has no healthcheck"
    for dependency, condition in (SERVICES[name].get("depends_on") or {}).items():
        assert dependency in SERVICES
        assert condition == {"condition": "service_healthy"}


def test_every_published_port_is_on_the_service_that_listens_on_it():
    published = {}
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            container = int(str(mapping).rsplit(":", 1)[-1])
            published[container] = name
    assert published == PORTS
    assert environment("api")["API_PORT"] == "8000"


@pytest.mark.parametrize("name", OURS)
def test_every_variable_our_services_read_is_a_setting(name):
    fields = settings_fields(name)
    unknown = {var for var in environment(name) if var.lower() not in fields}
    assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
    assert environment(name)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert environment(name)["DATABASE_URL"].endswith("@postgresql:5432/trading")


@pytest.mark.parametrize("name", OURS)
def test_our_services_run_real_trading_commands(name):
    service = SERVICES[name]
    assert service["build"] == "."
    parser = build_parser()
    parser.parse_args(command(service["command"]))
    health = command(service["healthcheck"]["test"])
    if health[:2] == ["CMD", "trading"]:
        parser.parse_args(health[2:])


def test_every_file_compose_mounts_exists_in_the_repository():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_the_image_installs_the_project_and_runs_the_trading_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["trading"]' in dockerfile
    assert 'trading = "worker.cli:main"' in (ROOT / "pyproject.toml").read_text()
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is missing"
            assert path not in ignored, f".dockerignore hides {path} from the Dockerfile"


def test_prometheus_scrapes_the_api_and_loads_the_alert_rules():
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    mounts = {str(v).split(":")[1] for v in SERVICES["prometheus"]["volumes"]}
    assert set(config["rule_files"]) <= mounts
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets["trading-api"] == "api:" + environment("api")["API_PORT"]
    worker = environment("worker")
    assert targets["trading-worker"] == "worker:" + worker["WORKER_METRICS_PORT"]
    assert worker["WORKER_METRICS_HOST"] == "0.0.0.0"  # reachable on the compose network
    metrics_port = SERVICES["temporal"]["environment"]["PROMETHEUS_ENDPOINT"].rsplit(":", 1)[1]
    assert targets["temporal"] == f"temporal:{metrics_port}"


def test_every_alert_is_on_a_metric_the_api_exports():
    rules = [
        rule
        for group in yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    assert rules and all({"alert", "expr", "for"} <= set(rule) for rule in rules)
    try:
        from api.metrics import Metrics
    except ImportError:
        pytest.skip("the API's metrics have not landed")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    for rule in rules:
        for metric in re.findall(r"\b(api_[a-z_]+)", rule["expr"]):
            assert metric in exported, f"alert {rule['alert']} reads {metric}, never exported"
