"""Slow clients cannot exhaust the API (issue 13, item 1): the uvicorn configuration of
`trading api` (api/server.server_config) on loopback, with bounded counts.

* Half-sent requests (headers without their end, a body shorter than its Content-Length,
  a connection that sends nothing) are closed by the server once the read deadline
  passes, and while they are held /health keeps answering: a new connection beyond the
  cap evicts the oldest one still sending. One client address holds at most its share.
* A process out of file descriptors (accept() fails with EMFILE) logs it once with a
  count, not once per attempt, and answers again once the held connections are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from activities.store.postgres import free_port
from api.server import RefusalsInAccessLog, server_config
from bootstrap.settings import ApiSettings
from tests.api.conftest import Api

HALF_SENT = [
    b"GET /health HTTP/1.1\r\nHost: api\r\n",  # headers never end
    b'POST /api/v1/orders HTTP/1.1\r\nHost: api\r\nContent-Length: 100\r\n\r\n{"sym',
    b"",  # connects, sends nothing
    b"GET /hea",  # not even a request line
]


async def serve(app: object, settings: ApiSettings) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    port = free_port()
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=port))  # type: ignore[arg-type]
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    return server, task


@pytest.fixture
async def guarded(api: Api) -> AsyncIterator[str]:
    """The test app behind the API's uvicorn limits: 40 connections, 2 s to send a request."""
    settings = ApiSettings(
        environment="test", api_max_connections=40, api_request_read_timeout_seconds=2.0
    )
    server, task = await serve(api.app, settings)
    try:
        yield f"127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await task


async def hold(
    address: str, payload: bytes, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.split(":")
    local = None if source is None else (source, 0)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=local)
    if payload:
        writer.write(payload)
        await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection (EOF or reset), within 30 s."""
    try:
        async with asyncio.timeout(30):
            while await reader.read(4096):
                pass
    except (ConnectionError, TimeoutError) as err:
        return not isinstance(err, TimeoutError)
    return True


async def test_half_sent_requests_are_closed_and_health_keeps_answering(guarded: str) -> None:
    held = [await hold(guarded, HALF_SENT[n % len(HALF_SENT)]) for n in range(120)]
    try:
        async with httpx.AsyncClient(base_url=f"http://{guarded}", timeout=10) as http:
            # 120 half-sent requests against a cap of 40: new connections evicted old ones,
            # and a real request still gets its answer, several times over.
            for _ in range(5):
                assert (await http.get("/health")).json() == {"status": "ok"}
        closed = await asyncio.gather(*(closed_by_server(reader) for reader, _ in held))
        assert all(closed), f"{closed.count(False)} of {len(closed)} held connections stayed open"
        async with httpx.AsyncClient(base_url=f"http://{guarded}", timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
    finally:
        for _, writer in held:
            writer.close()


async def test_one_address_holds_at_most_its_own_share_of_connections(api: Api) -> None:
    """Per-address cap 10 (global 1000): 60 half-sent requests from 127.0.0.2 keep at most
    10 open at any time; 127.0.0.1 is not affected."""
    settings = ApiSettings(environment="test", api_max_connections_per_client=10)
    server, task = await serve(api.app, settings)
    address = f"127.0.0.1:{server.config.port}"
    held = []
    try:
        for _ in range(60):
            held.append(await hold(address, HALF_SENT[0], source="127.0.0.2"))
            by_client = server.server_state.trading_guard.by_client  # type: ignore[attr-defined]
            assert len(by_client.get("127.0.0.2", ())) <= 10
        closed = await asyncio.gather(*(closed_by_server(reader) for reader, _ in held[:50]))
        assert all(closed), f"{closed.count(False)} evicted connections stayed open"
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
    finally:
        for _, writer in held:
            writer.close()
        server.should_exit = True
        await task


async def test_a_slow_complete_request_is_served(guarded: str) -> None:
    """A request that arrives in pieces, but in full before the deadline, is answered."""
    reader, writer = await hold(guarded, b"GET /health HTTP/1.1\r\n")
    try:
        writer.write(b"Host: api\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    finally:
        writer.close()


SERVER_OUT_OF_FILES = textwrap.dedent(
    """
    import asyncio, logging, resource, sys
    from api.server import _Server, collapse_loop_errors, quiet_repeats, server_config
    from bootstrap.settings import ApiSettings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # soft and hard: cannot be raised

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        quiet_repeats()
        collapse_loop_errors(asyncio.get_running_loop())
        settings = ApiSettings(
            api_max_connections=1000, api_request_read_timeout_seconds=2.0
        )
        config = server_config(app, settings, host="127.0.0.1", port=int(sys.argv[1]))
        await _Server(config).serve()

    asyncio.run(main())
    """
)


async def test_accept_out_of_file_descriptors_is_logged_once_and_recovers(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER_OUT_OF_FILES, str(port)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
            # 150 half-sent requests against 64 descriptors: accept() runs out for a while.
            for _ in range(150):
                held.append(await hold(f"127.0.0.1:{port}", HALF_SENT[0]))
            closed = await asyncio.gather(*(closed_by_server(reader) for reader, _ in held))
            # The kernel's backlog held the connections accept() could not take; each is
            # accepted, then closed by the read deadline, as descriptors free up.
            assert all(closed), f"{closed.count(False)} connections stayed open"
            assert process.poll() is None, log.read_text()
            assert (await http.get("/health")).status_code == 200
    finally:
        for _, writer in held:
            writer.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
    text = log.read_text()
    assert "out of system resource" in text, text  # the attack did exhaust descriptors
    assert text.count("out of system resource") <= 2, text
    assert text.count("Traceback") <= 1, text


def test_repeated_refusals_take_one_access_log_line_per_address_and_status() -> None:
    refusals = RefusalsInAccessLog(every=3600)

    def record(address: str, status: int) -> logging.LogRecord:
        args = (f"{address}:40000", "GET", "/api/v1/portfolio", "1.1", status)
        return logging.LogRecord(
            "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None
        )

    flood = [refusals.filter(record("192.0.2.1", 401)) for _ in range(1000)]

    assert flood.count(True) == 1
    assert refusals.filter(record("192.0.2.2", 401))  # another address
    assert refusals.filter(record("192.0.2.1", 429))  # another status
    assert all(refusals.filter(record("192.0.2.1", 200)) for _ in range(10))  # served: all
