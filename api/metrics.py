"""Prometheus metrics of one API application (its own registry, so tests can build many),
with the process_* metrics of the process serving it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

# Seconds; from a loopback read (~1 ms) to a slow order decision.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self.requests = Counter(
            "api_requests",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "api_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.orders_placed = Counter(
            "api_orders_placed", "Orders accepted by risk through the API", registry=self.registry
        )
        self.orders_rejected = Counter(
            "api_orders_rejected",
            "Orders refused (by risk, or before: unknown symbol), by reason code",
            ["code"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "api_authentication_failures",
            "Requests refused with 401, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "api_rate_limited",
            "Requests refused with 429, by route class",
            ["route_class"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
