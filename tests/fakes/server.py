"""Wire-level fakes of the vendors' HTTP and websocket APIs, served on 127.0.0.1 for tests.

Each fake is a small Starlette app run by uvicorn on an ephemeral port inside the test's
event loop. Tests drive it (fills, quotes, dropped sockets) and script failures with
`Fault`s: the next request to a route answers a status, after a delay, optionally after
carrying the request out (the ambiguous case: accepted, then the answer is lost).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

UNSET: Any = object()


@dataclass
class Fault:
    """What the next request to a route gets instead of a normal answer."""

    status: int | None = None  # answer this HTTP status with the vendor's error body
    delay: float = 0.0  # wait this long before answering (a client's timeout gives up first)
    accept: bool = False  # carry the request out first (e.g. the order is placed)
    body: Any = UNSET  # answer 200 with exactly this JSON (malformed answers)
    reset_in: float = 1.0  # for 429: X-RateLimit-Reset this many seconds from now


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    route: str
    at: float = field(default_factory=time.time)


class Faults:
    def __init__(self) -> None:
        self._queued: dict[str, deque[Fault]] = defaultdict(deque)

    def add(self, route: str, *faults: Fault) -> None:
        self._queued[route].extend(faults)

    def take(self, route: str) -> Fault | None:
        queue = self._queued.get(route)
        return queue.popleft() if queue else None


def dumps(value: Any) -> str:
    """JSON in which a Decimal is written as a number, digit for digit (as vendors do)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    return json.dumps(value)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(value), status, headers=headers, media_type="application/json")


async def recorded(request: Request, route: str) -> Recorded:
    raw = await request.body()
    try:
        body = json.loads(raw, parse_float=Decimal) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    return Recorded(request.method, request.url.path, dict(request.query_params), body, route)


async def apply_fault(
    fault: Fault | None,
    normal: Callable[[], Awaitable[Response]],
    error: Callable[[Fault], Response],
) -> Response:
    """Answer a request under `fault`: the normal answer, an error, a delay, or a given body."""
    if fault is None:
        return await normal()
    answer = await normal() if fault.accept else None
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.body is not UNSET:
        return json_response(fault.body)
    if fault.status is not None:
        return error(fault)
    return answer if answer is not None else await normal()


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 on a free port; yields "127.0.0.1:port"."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the fake server stopped before it started")
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class FakeServer:
    """A fake served as `async with`: `self.app` on a free loopback port; sets `base_url`
    (http://127.0.0.1:port) and `stream_url` (ws://127.0.0.1:port + `stream_path`)."""

    stream_path = "/"
    app: ASGIApp
    base_url = ""
    stream_url = ""
    _server: Any = None

    async def __aenter__(self) -> Self:
        self._server = serve(self.app)
        address = await self._server.__aenter__()
        self.base_url = f"http://{address}"
        self.stream_url = f"ws://{address}{self.stream_path}"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._server.__aexit__(kind, error, trace)
