"""The worker's `/metrics` on WORKER_METRICS_PORT: business metrics, process metrics and the
Temporal SDK's own metrics, in one exposition on one port.

The SDK's metrics come from its Rust core, which can only serve them itself
(`temporalio.runtime.PrometheusConfig` starts an HTTP exporter). The worker runs that
exporter on a free loopback port nobody else is told about, and every scrape of the
worker's endpoint reads it (bounded by a timeout) and re-exposes its families beside ours:
Prometheus scrapes one target per worker, and the SDK port is never reachable from outside
the host. The alternative, the SDK's `MetricBuffer`, would mean re-implementing counter,
gauge and histogram aggregation for every SDK metric in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

import asyncpg
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities import metrics
from bootstrap.settings import Settings

log = logging.getLogger("trading.worker.metrics")

SDK_READ_TIMEOUT_SECONDS = 2.0
SDK_READ_FAILURES = Counter(
    "trading_metrics_sdk_read_failures",
    "Scrapes that could not read the Temporal SDK's metrics in time (served without them)",
    registry=metrics.REGISTRY,
)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sdk_runtime(port: int) -> Runtime:
    """A Temporal runtime whose core serves its metrics on 127.0.0.1:`port`: durations in
    seconds, names with unit and `_total` suffixes
    (temporal_workflow_task_schedule_to_start_latency_seconds_bucket)."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{port}",
                counters_total_suffix=True,
                unit_suffix=True,
                durations_as_seconds=True,
            )
        )
    )


def install_sdk_runtime(attempts: int = 3) -> str | None:
    """Make a runtime with the SDK's Prometheus exporter on a free loopback port the default
    (call before the first Temporal client); its metrics URL, or None when no port could be
    bound (the worker then runs without the SDK's metrics, and says so)."""
    for _ in range(attempts):
        port = free_loopback_port()
        try:
            runtime = sdk_runtime(port)
        except ValueError as err:  # the port was taken between the probe and the bind
            log.warning("Temporal SDK metrics on 127.0.0.1:%d: %s", port, err)
            continue
        Runtime.set_default(runtime, error_if_already_set=False)
        return f"http://127.0.0.1:{port}/metrics"
    log.error("Temporal SDK metrics are off: no free loopback port could be bound")
    return None


class TemporalSdkMetrics(Collector):
    """The SDK exporter's families, read on each scrape; nothing when it does not answer in
    SDK_READ_TIMEOUT_SECONDS (counted in trading_metrics_sdk_read_failures_total)."""

    def __init__(self, url: str, timeout: float = SDK_READ_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout

    def describe(self) -> Iterable[Metric]:
        return []  # not known before the first scrape

    def collect(self) -> Iterable[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as response:  # noqa: S310
                text = response.read().decode("utf-8")
        except OSError as err:
            SDK_READ_FAILURES.inc()
            log.warning("metrics: the Temporal SDK's metrics were not read (%s)", err)
            return iter(())
        return text_string_to_metric_families(text)


def worker_registry(
    pool: asyncpg.Pool | None,
    loop: asyncio.AbstractEventLoop | None,
    sdk_url: str | None,
    store_timeout: float = 2.0,
) -> CollectorRegistry:
    """What the worker's /metrics serves: business metrics, the store gauges (with a pool),
    process_* metrics and the SDK's metrics (with its URL)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(metrics.REGISTRY)
    ProcessCollector(registry=registry)
    if pool is not None and loop is not None:
        registry.register(metrics.StoreGauges(pool, loop, timeout=store_timeout))
    if sdk_url is not None:
        registry.register(TemporalSdkMetrics(sdk_url))
    return registry


class MetricsServer:
    """prometheus-client's HTTP server on its own thread (so a scrape never waits for the
    event loop to be free, only for the bounded store read)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        self._server, self._thread = start_http_server(
            self.requested_port, addr=self.host, registry=self.registry
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None


@contextlib.contextmanager
def serve_worker_metrics(
    settings: Settings, pool: asyncpg.Pool, sdk_url: str | None
) -> Iterator[MetricsServer | None]:
    """Serve the worker's /metrics while the block runs. A port already in use is one error
    line naming WORKER_METRICS_PORT, and the worker runs on without /metrics: an orders
    worker must not stop for its metrics (WORKER_METRICS_PORT=0 picks a free port)."""
    registry = worker_registry(pool, asyncio.get_running_loop(), sdk_url)
    server = MetricsServer(registry, settings.worker_metrics_host, settings.worker_metrics_port)
    try:
        server.start()
    except OSError as err:
        log.error(
            "worker metrics are off: WORKER_METRICS_PORT=%d on %s cannot be bound (%s)",
            settings.worker_metrics_port,
            settings.worker_metrics_host,
            err,
        )
        yield None
        return
    log.info("worker metrics on %s", server.url)
    try:
        yield server
    finally:
        server.stop()
