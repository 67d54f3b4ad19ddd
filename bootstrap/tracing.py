"""OpenTelemetry tracing, optional (`pip install 'trading[otel]'`) and off by default.

With TRACING=otlp (spans to the collector the standard OTEL_EXPORTER_OTLP_* variables name)
or TRACING=console, one order is one trace from the POST to the fill: the FastAPI server
span of the request, the Temporal client's update-with-start span (its context travels in
a Temporal header), the order workflow's spans, every activity it runs and their asyncpg
statements. Temporal's `TracingInterceptor` does the Temporal part; set on the client, the
worker picks it up from the client as well.

Nothing here imports OpenTelemetry unless tracing is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio.client import Client

from bootstrap.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter


class TracingUnavailable(RuntimeError):
    """TRACING is on but the OpenTelemetry packages are not installed."""


def tracer_provider(
    settings: Settings, service: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The provider spans of this process go to, or None when tracing is off. `exporter`
    (tests: an in-memory one) replaces the one TRACING names and exports synchronously."""
    if exporter is None and settings.tracing == "off":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as err:
        raise TracingUnavailable(
            f"TRACING={settings.tracing} needs the otel extra: pip install 'trading[otel]' ({err})"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.tracing == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as err:
            raise TracingUnavailable(
                f"TRACING=otlp needs the otel extra: pip install 'trading[otel]' ({err})"
            ) from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def traced_client(client: Client, provider: TracerProvider | None) -> Client:
    """The client with Temporal's tracing interceptor (the same client when tracing is off).
    A worker built on it traces workflows and activities too."""
    if provider is None:
        return client
    from temporalio.contrib.opentelemetry import TracingInterceptor

    config = client.config()
    tracer = provider.get_tracer("trading.temporal")
    config["interceptors"] = [*config.get("interceptors", []), TracingInterceptor(tracer)]
    return Client(**config)


def instrument_api(app: FastAPI, provider: TracerProvider | None) -> None:
    """A server span per request (routes named by their template)."""
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="/metrics,/health,/ready"
    )


def instrument_asyncpg(provider: TracerProvider | None) -> Any:
    """A span per asyncpg statement, in this whole process; returns the instrumentor
    (`uninstrument()` undoes it), or None when tracing is off."""
    if provider is None:
        return None
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    return instrumentor
