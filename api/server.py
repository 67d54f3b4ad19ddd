"""`trading api`: build ApiDeps as the worker builds its adapters, and serve with uvicorn
on API_HOST:API_PORT until SIGINT/SIGTERM, then finish in-flight requests and close.

Limits against slow and abusive clients (`server_config`, `GuardedH11Protocol`):

* A request must arrive in full (request line, headers and body) within
  API_REQUEST_READ_TIMEOUT_SECONDS of its first byte (or of the connection, when it sends
  nothing); otherwise its connection is closed. An idle keep-alive connection is closed
  after API_KEEPALIVE_TIMEOUT_SECONDS (uvicorn's own timer).
* At most API_MAX_CONNECTIONS_PER_CLIENT connections per client address, and
  API_MAX_CONNECTIONS in all, are open. A new connection beyond a cap evicts the oldest
  connection (of that address, or of all) still sending its request: a slow client holds
  its own slots, not other clients'; when every connection at the cap is busy with a
  request, the new one gets 503 at once and is closed. uvicorn's `limit_concurrency` is a
  backstop above the cap.
* API_WORKERS > 1 runs that many processes (`serve_processes`), each binding API_PORT
  with SO_REUSEPORT: the kernel spreads new connections among them. The limits above hold
  per process.
* The soft open-file limit is raised to the hard limit at start, and repeated log lines
  (asyncio's `accept()` out of file descriptors, uvicorn's invalid-request warnings, the
  asyncpg pool's failed refills) are collapsed into one line with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import asyncpg
import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from activities.brokers.alpaca_rest import AlpacaBroker
from activities.market_data.simulated import SimulatedFeed
from activities.venue.exchange import VENUE_LOCK_KEY
from api.app import create_app
from api.deps import ApiDeps
from bootstrap.logs import configure_logging, with_request_ids
from bootstrap.resources import CollapseRepeats, open_bounded_database, temporal_client
from bootstrap.settings import ApiSettings
from bootstrap.tracing import instrument_api, instrument_asyncpg, traced_client, tracer_provider
from bootstrap.vendors import build_broker, build_market_data, validate_vendor_settings
from contracts.ports import Broker

log = logging.getLogger("trading.api")

GRACEFUL_SHUTDOWN_SECONDS = 10


async def paper_venue_running(pool: asyncpg.Pool) -> bool:
    """Whether some worker runs the paper venue's matching loop: its leader holds a
    session-level advisory lock (a bigint key shows in pg_locks as two 32-bit halves)."""
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 AND granted)",
            VENUE_LOCK_KEY >> 32,
            VENUE_LOCK_KEY & 0xFFFFFFFF,
        )
    )


def broker_readiness(settings: ApiSettings, pool: asyncpg.Pool) -> Callable[[], Awaitable[bool]]:
    """Alpaca's account answers when Alpaca is the broker; else the paper venue runs."""
    # No default needed: with Alpaca's keys build_broker returns Alpaca, else the default,
    # and the paper venue lives in the worker, not here.
    broker = build_broker(settings, default=cast(Broker, None))
    if isinstance(broker, AlpacaBroker):
        return broker.ready
    return lambda: paper_venue_running(pool)


REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
READING = (h11.IDLE, h11.SEND_BODY)


@dataclass
class _Guard:
    """The server's shared view of its connections (one per uvicorn server)."""

    reading: dict[GuardedH11Protocol, None] = field(default_factory=dict)  # oldest first
    by_client: dict[str, dict[GuardedH11Protocol, None]] = field(default_factory=dict)
    closed_slow: int = 0  # closed for a request that did not arrive in time, or evicted
    refused: int = 0  # refused at a cap with every connection busy


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request and connection caps
    (per client address, and in all) that evict the oldest connection still sending its
    request (see the module docstring). `guarded_protocol` makes a subclass with the
    settings' values."""

    max_connections: ClassVar[int] = 1000
    max_per_client: ClassVar[int] = 100
    read_timeout: ClassVar[float] = 10.0
    _read_timer: asyncio.TimerHandle | None = None
    _address = "-"
    _counted = False

    @property
    def guard(self) -> _Guard:
        state = self.server_state
        guard: _Guard | None = getattr(state, "trading_guard", None)
        if guard is None:
            guard = _Guard()
            state.trading_guard = guard  # type: ignore[attr-defined]
        return guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        self._address = self.client[0] if self.client else "-"
        mine = guard.by_client.setdefault(self._address, {})
        mine[self] = None
        self._counted = True
        if len(mine) > self.max_per_client and not self._evict(
            mine, "API_MAX_CONNECTIONS_PER_CLIENT"
        ):
            return
        if len(self.connections) > self.max_connections and not self._evict(
            guard.reading, "API_MAX_CONNECTIONS"
        ):
            return
        self._arm()

    def _evict(self, candidates: dict[GuardedH11Protocol, None], cap: str) -> bool:
        """Make room at a cap: close the oldest of `candidates` still reading a request, or
        refuse this connection when none is (False)."""
        for other in candidates:
            if other is not self and other._read_timer is not None:
                other._expire()
                return True
        self.guard.refused += 1
        _SLOW_LOG.warning("a cap (%s) is full of busy connections: refusing new ones", cap)
        self.transport.write(REFUSED)
        self._close()
        return False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Armed while a request is being read; off while the app runs and while the
        connection idles between requests (then uvicorn's keep-alive timer runs)."""
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state in READING and (
            self.conn.their_state is h11.SEND_BODY or self.conn.trailing_data[0]
        ):
            self._arm()
        else:
            self._disarm()

    def _arm(self) -> None:
        if self._read_timer is None and not self.transport.is_closing():
            self._read_timer = self.loop.call_later(self.read_timeout, self._expire)
            self.guard.reading[self] = None

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
            self.guard.reading.pop(self, None)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            mine = self.guard.by_client.get(self._address)
            if mine is not None:
                mine.pop(self, None)
                if not mine:
                    del self.guard.by_client[self._address]

    def _close(self) -> None:
        """Close now and stop counting it at once (connection_lost comes a loop later)."""
        self._disarm()
        self._uncount()
        self.connections.discard(self)
        self.transport.close()

    def _expire(self) -> None:
        if not self.transport.is_closing():
            self.guard.closed_slow += 1
            _SLOW_LOG.warning(
                "closing connections whose request did not arrive within %.0f s "
                "(or evicted at a connection cap)",
                self.read_timeout,
            )
        self._close()


_SLOW_LOG = logging.getLogger("trading.api.connections")


def guarded_protocol(
    max_connections: int, max_per_client: int, read_timeout: float
) -> type[GuardedH11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "max_connections": max_connections,
            "max_per_client": max_per_client,
            "read_timeout": read_timeout,
        },
    )


def server_config(app: FastAPI, settings: ApiSettings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration with the API's limits (a test serves with the same)."""
    values: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "lifespan": "off",
        "log_config": None,  # keep the process's logging (worker.cli configures it)
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "server_header": False,
        "http": guarded_protocol(
            settings.api_max_connections,
            settings.api_max_connections_per_client,
            settings.api_request_read_timeout_seconds,
        ),
        "timeout_keep_alive": max(1, round(settings.api_keepalive_timeout_seconds)),
        # uvicorn answers 503 beyond this many connections or requests in progress: a
        # backstop above the cap, which the protocol holds by evicting or refusing first.
        "limit_concurrency": settings.api_max_connections
        + max(10, settings.api_max_connections // 10),
        "backlog": 1024,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
    return uvicorn.Config(app, **(values | overrides))


class RefusalsInAccessLog(logging.Filter):
    """The access log keeps every request except repeated refusals (401, 429) from one
    client address: those are one line per `every` seconds with a count, so that a flood
    of unsigned requests does not fill the disk."""

    REFUSALS = frozenset({401, 429})

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self._seen: dict[tuple[str, int], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5 or args[4] not in self.REFUSALS:
            return True
        client = str(args[0]).rsplit(":", 1)[0]
        key = (client, int(args[4]))
        now = time.monotonic()
        last, held = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.every:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more {key[1]} to {client} not logged)"
            record.args = None
        return True


def quiet_repeats() -> None:
    """Collapse the log lines an attack or an outage repeats (once per process)."""
    for name in ("uvicorn.error", "asyncio", "trading.api.connections"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, CollapseRepeats) for f in logger.filters):
            logger.addFilter(CollapseRepeats(first_traceback=True))
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RefusalsInAccessLog) for f in access.filters):
        access.addFilter(RefusalsInAccessLog())


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def collapse_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports `accept()` failing for want of file descriptors (EMFILE) through
    the loop's exception handler, with a traceback, each time it retries: keep the first
    and then one line a minute with a count."""
    seen: dict[str, tuple[float, int]] = {}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "unhandled error"))
        error = context.get("exception")
        key = f"{message}:{type(error).__name__}"
        now = time.monotonic()
        last, held = seen.get(key, (float("-inf"), 0))
        if now - last < 60:
            seen[key] = (last, held + 1)
            return
        seen[key] = (now, 0)
        if held:
            log.error(
                "%s: %r (%d more like it in the last %.0f s)", message, error, held, now - last
            )
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a captured SIGTERM after serving, which would end the process
        # before the pool (and an embedded PostgreSQL started here) are closed; serve()
        # installs its own handlers instead.
        yield


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port with SO_REUSEPORT: each of API_WORKERS processes
    binds its own, and the kernel spreads new connections among them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(settings: ApiSettings, *, reuse_port: bool = False) -> None:
    validate_vendor_settings(settings)
    configure_logging(settings)
    tracing = tracer_provider(settings, "trading-api")  # None unless TRACING is set
    instrument_asyncpg(tracing)
    master_key = settings.master_key()
    raise_open_file_limit()
    quiet_repeats()
    collapse_loop_errors(asyncio.get_running_loop())
    async with open_bounded_database(
        settings,
        settings.api_dependency_timeout_seconds,
        migrate=True,
        application_name="trading-api",
    ) as pool:
        client = with_request_ids(await temporal_client(settings))  # request id to workflows
        client = traced_client(client, tracing)
        deps = ApiDeps(
            pool=pool,
            temporal=client,
            market_data=build_market_data(settings, SimulatedFeed(seed=settings.feed_seed)),
            broker_ready=broker_readiness(settings, pool),
            settings=settings,
            master_key=master_key,
        )
        app = create_app(deps)
        instrument_api(app, tracing)
        server = _Server(server_config(app, settings))

        def stop() -> None:
            if server.should_exit:
                server.force_exit = True  # a second Ctrl-C: stop waiting for requests
            server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        log.info("API on http://%s:%s", settings.api_host, settings.api_port)
        if reuse_port:
            sock = shared_socket(settings.api_host, settings.api_port)
            try:
                await server.serve(sockets=[sock])
            finally:
                sock.close()
        else:
            await server.serve()
        log.info("API stopped")


def _basic_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def _serve_one(settings: ApiSettings) -> None:
    """One of API_WORKERS processes: its own session (the parent forwards SIGINT/SIGTERM
    once, so a terminal's Ctrl-C or a killpg of the parent's group is not a second,
    forcing, signal), and SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    _basic_logging()
    asyncio.run(serve(settings, reuse_port=True))


def serve_processes(settings: ApiSettings) -> int:
    """API_WORKERS processes on one port (SO_REUSEPORT), each with its own pool, Temporal
    client and event loop. SIGINT/SIGTERM is passed on to them and waited for. When one
    exits by itself the others are stopped and this process exits 1, so that a supervisor
    (`trading up`) starts the whole API again rather than running it short of a process."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_serve_one, args=(settings,), name=f"trading-api-{n}")
        for n in range(settings.api_workers)
    ]
    stopping = False

    def forward() -> None:
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)  # a second one forces the exit

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        forward()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for process in processes:
            process.start()
        if stopping:  # signalled while starting them
            forward()
        log.info("API: %d processes on port %s", len(processes), settings.api_port)
        multiprocessing.connection.wait([process.sentinel for process in processes])
        if not stopping:
            failed = next(p for p in processes if p.exitcode is not None)
            log.error(
                "API process %s exited with %s; stopping the others", failed.name, failed.exitcode
            )
            forward()
        for process in processes:
            process.join(GRACEFUL_SHUTDOWN_SECONDS + 10)
            if process.exitcode is None:
                process.kill()
                process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else 1


def main(settings: ApiSettings | None = None) -> int:
    _basic_logging()
    settings = settings or ApiSettings()
    if settings.api_workers > 1:
        return serve_processes(settings)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
