"""API_WORKERS=2: `trading api` runs two API processes on one port and both answer.

A real `trading api` subprocess (throwaway PostgreSQL, Temporal dev server). Which process
answered a connection is read from /proc: the process holding the server side of the
connection's socket (local port API_PORT, remote port the client's). Fresh connections are
opened until each of the two processes has answered one (SO_REUSEPORT spreads them by a
hash of the addresses; the chance that 200 connections all land on one process is 2^-199).
SIGTERM to the parent then stops both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from activities.store.migrations import migrate_up
from activities.store.postgres import create_pool, free_port
from tests.api.test_hardening_outage import spawn_api, stop_process
from tests.fixtures.postgres import start_throwaway_server, stop_throwaway_server
from worker.devserver import DevServer

pytestmark = pytest.mark.integration


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def server_side_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the accepted socket 127.0.0.1:server_port <- 127.0.0.1:client_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, inode = parts[1], parts[2], int(parts[9])
        if int(local.split(":")[1], 16) == server_port and (
            int(remote.split(":")[1], 16) == client_port
        ):
            return inode
    return None


def listening_inodes(port: int) -> set[int]:
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
            inodes.add(int(parts[9]))
    return inodes


async def listeners(parent: int, port: int, count: int) -> set[int]:
    """The children of `parent` listening on `port`, once `count` of them do (each
    process binds its own socket when it is ready to serve)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        listening = listening_inodes(port)
        found = {pid for pid in children_of(parent) if socket_inodes(pid) & listening}
        if len(found) >= count:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"listening: {found}"
        await asyncio.sleep(0.1)


def answered_by(port: int, workers: set[int]) -> int:
    """Open a connection, get /health over it, and name the process holding its server
    side (while the connection is still open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        inode = server_side_inode(port, sock.getsockname()[1])
        assert inode is not None
        owners = [pid for pid in workers if inode in socket_inodes(pid)]
        assert len(owners) == 1, owners
        return owners[0]


async def test_two_api_processes_share_the_port_and_both_answer(tmp_path: Path):
    tmp_path.chmod(0o711)
    pg = await start_throwaway_server()
    temporal = DevServer(None, port=free_port(), ui_port=None, log_file=tmp_path / "temporal.log")
    process = None
    try:
        await temporal.start()
        pool = await create_pool(pg.url, 1, 2)
        try:
            await migrate_up(pool)
        finally:
            await pool.close()
        process, url, log = await spawn_api(tmp_path, pg.url, temporal.address, API_WORKERS="2")
        port = int(url.rsplit(":", 1)[1])
        workers = await listeners(process.pid, port, 2)
        assert len(workers) == 2, workers
        seen: set[int] = set()
        for _ in range(200):
            seen.add(await asyncio.to_thread(answered_by, port, workers))
            if seen == workers:
                break
        assert seen == workers

        os.killpg(process.pid, signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, log.read_text()[-3000:]
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if process is not None:
            await stop_process(process)
        await temporal.stop()
        await stop_throwaway_server(pg)
