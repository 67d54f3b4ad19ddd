"""The API's availability under abuse and outages, measured against a running stack.

    .venv/bin/python bench/abuse.py [--slow 10000] [--flood 50] [--freeze 10] [--seconds 15]
    .venv/bin/python bench/abuse.py --data-dir .trading     # attack a stack already up

Without --data-dir it runs `trading up` in a temporary DATA_DIR on free ports (rate limits
raised so that the probe itself is never limited). A probe sends a signed GET
/api/v1/portfolio and a GET /health every 50 ms from 127.0.0.1 and records latencies;
the attacks run one after the other, each beside the probe, and each is compared with the
idle baseline measured first in the same run:

1. slow clients: `--slow` connections that send half a request line and headers and
   never finish, each re-opened as soon as the API closes it (from 127.0.0.2);
2. unsigned flood: `--flood` concurrent clients sending requests with an unknown key as
   fast as they are answered (from 127.0.0.3, so the probe's address is not the one the
   address guard blocks);
3. PostgreSQL frozen (SIGSTOP of the postmaster and its backends) for `--freeze` seconds:
   how long /ready, GET /portfolio and POST /orders take to answer, and with what.

Reported: p50/p95/p99 of the signed GET and of /health per phase, answers by status,
connections held and closed by the API, the API's memory (PSS) before and after, and how
much its log grew. Numbers, not assertions: this is a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stack_bench import rate_limits, trading_up, up_env  # noqa: E402  (bench/)

from activities.store.postgres import free_port  # noqa: E402
from api.signing import signed_headers  # noqa: E402
from tests.fixtures import pg_outage  # noqa: E402

PROBE_EVERY = 0.05
HALF_REQUEST = b"GET /api/v1/portfolio HTTP/1.1\r\nHost: api\r\nX-API-Key: slow\r\n"


def pss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:7.1f}  p95 {cuts[94] * 1000:7.1f}  p99 {cuts[98] * 1000:7.1f} ms"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94] if len(values) > 1 else 0


@dataclass
class Probe:
    signed: list[float] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


class Target:
    def __init__(self, data: Path) -> None:
        self.data = data
        credentials = json.loads((data / "credentials.json").read_text())
        self.url: str = credentials["api_url"]
        self.key: str = credentials["api_key"]
        self.secret: str = credentials["api_secret"]
        self.log = data / "logs" / "api.log"

    def api_pid(self) -> int:
        return int(json.loads((self.data / "stack.json").read_text())["api"])

    def headers(self, method: str, target: str, body: bytes = b"") -> dict[str, str]:
        return signed_headers(self.key, self.secret, method, target, body, int(time.time()))

    def postmaster(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return pg_outage.postmaster_pid(self.data / "pgdata")
        return None


async def probe(target: Target, seconds: float) -> Probe:
    """Signed GET /portfolio and GET /health every PROBE_EVERY seconds, one at a time."""
    result = Probe()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=target.url, timeout=10) as http:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                answer = await http.get(
                    "/api/v1/portfolio", headers=target.headers("GET", "/api/v1/portfolio")
                )
                result.signed.append(time.perf_counter() - began)
                result.statuses[f"signed {answer.status_code}"] += 1
            except httpx.HTTPError as err:
                result.statuses[f"signed {type(err).__name__}"] += 1
            began = time.perf_counter()
            try:
                answer = await http.get("/health")
                result.health.append(time.perf_counter() - began)
                result.statuses[f"health {answer.status_code}"] += 1
            except httpx.HTTPError as err:
                result.statuses[f"health {type(err).__name__}"] += 1
            await asyncio.sleep(PROBE_EVERY)
    return result


def report(name: str, result: Probe, baseline: Probe | None) -> None:
    print(f"  {name}")
    print(f"    signed GET /portfolio  {percentiles(result.signed)}")
    print(f"    GET /health            {percentiles(result.health)}")
    if baseline is not None and result.signed and baseline.signed:
        ratio = p95(result.signed) / max(p95(baseline.signed), 1e-9)
        print(f"    signed p95 vs idle     {ratio:.2f}x")
    print(f"    probe answers          {dict(sorted(result.statuses.items()))}")


async def slow_clients(
    target: Target, count: int, reopen: bool, stop: asyncio.Event
) -> dict[str, int]:
    """`count` half-sent requests from 127.0.0.2; with `reopen`, each is opened again as
    soon as the API closes it (a harsher attacker: constant connection churn)."""
    host, port = target.url.removeprefix("http://").split(":")
    stats = Counter[str]()
    held = 0

    async def closed_by_peer(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass

    async def one() -> None:
        nonlocal held
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    host, int(port), local_addr=("127.0.0.2", 0)
                )
            except OSError:
                stats["connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            stats["opened"] += 1
            held += 1
            closed = asyncio.ensure_future(closed_by_peer(reader))
            stopping = asyncio.ensure_future(stop.wait())
            try:
                writer.write(HALF_REQUEST)
                await writer.drain()
                await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    stats["closed by the API"] += 1
            except OSError:
                stats["closed by the API"] += 1
            finally:
                held -= 1
                closed.cancel()
                stopping.cancel()
                writer.close()
            if not reopen:
                await stop.wait()

    async def peak() -> None:
        while not stop.is_set():
            stats["open at most"] = max(stats["open at most"], held)
            await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.gather(*tasks, peak(), return_exceptions=True)
    stats["still open at the end"] = held
    return dict(stats)


async def unsigned_flood(target: Target, clients: int, stop: asyncio.Event) -> dict[str, int]:
    statuses = Counter[str]()
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")

    async def one(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            headers = {
                "X-API-Key": f"unknown-{uuid.uuid4().hex[:12]}",
                "X-Timestamp": str(int(time.time())),
                "X-Signature": "0" * 64,
            }
            try:
                answer = await http.get("/api/v1/portfolio", headers=headers)
                statuses[str(answer.status_code)] += 1
            except httpx.HTTPError as err:
                statuses[type(err).__name__] += 1

    async with httpx.AsyncClient(
        base_url=target.url,
        transport=transport,
        timeout=10,
        limits=httpx.Limits(max_connections=clients),
    ) as http:
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return dict(statuses)


async def attack(
    target: Target, name: str, seconds: float, argv: list[str], baseline: Probe
) -> None:
    """Run an attacker in its own process (so that its work does not slow the probe's event
    loop) for the probe's time plus a build-up, beside the probe."""
    build_up = min(5.0, seconds / 3)
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--attacker",
        *argv,
        "--url",
        target.url,
        "--seconds",
        str(build_up + seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(build_up)
    result = await probe(target, seconds)
    out, _ = await attacker.communicate()
    report(name, result, baseline)
    print(f"    attacker               {out.decode().strip()}")


async def run_attacker(kind: str, count: int, url: str, seconds: float) -> None:
    target = Target.__new__(Target)
    target.url = url
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    if kind == "flood":
        stats = await unsigned_flood(target, count, stop)
    else:
        stats = await slow_clients(target, count, kind == "reopen", stop)
    print(json.dumps(stats))


async def freeze(target: Target, seconds: float) -> None:
    postmaster = target.postmaster()
    if postmaster is None:
        print("  PostgreSQL frozen: skipped (not the embedded server of this data dir)")
        return
    paused: list[int] = []
    pg_outage.freeze(postmaster, paused.append, passes=1)
    answers: dict[str, list[tuple[int | str, float]]] = {"ready": [], "portfolio": [], "order": []}
    try:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=target.url, timeout=seconds + 30) as http:

            async def timed(kind: str, call: Any) -> None:
                began = time.perf_counter()
                try:
                    status: int | str = (await call).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                answers[kind].append((status, time.perf_counter() - began))

            while time.monotonic() < deadline:
                body = json.dumps(
                    {
                        "symbol": "AAPL",
                        "side": "buy",
                        "quantity": "1",
                        "order_type": "market",
                        "client_order_id": str(uuid.uuid4()),
                    }
                ).encode()
                order_headers = target.headers("POST", "/api/v1/orders", body)
                order_headers["Content-Type"] = "application/json"
                await asyncio.gather(
                    timed("ready", http.get("/ready")),
                    timed(
                        "portfolio",
                        http.get(
                            "/api/v1/portfolio", headers=target.headers("GET", "/api/v1/portfolio")
                        ),
                    ),
                    timed(
                        "order", http.post("/api/v1/orders", content=body, headers=order_headers)
                    ),
                )
                await asyncio.sleep(0.5)
    finally:
        pg_outage.send(reversed(paused), signal.SIGCONT)
    print(f"  PostgreSQL frozen {seconds:.0f} s (requests sent every 0.5 s while frozen)")
    for kind, results in answers.items():
        statuses = Counter(str(status) for status, _ in results)
        slowest = max((elapsed for _, elapsed in results), default=0.0)
        median = statistics.median([elapsed for _, elapsed in results]) if results else 0.0
        print(
            f"    {kind:<10} answers {dict(statuses)}"
            f"  median {median:.2f} s  slowest {slowest:.2f} s"
        )
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=target.url, timeout=10) as http:
        while True:
            answer = await http.get(
                "/api/v1/portfolio", headers=target.headers("GET", "/api/v1/portfolio")
            )
            if answer.status_code == 200 or time.monotonic() - began > 60:
                break
            await asyncio.sleep(0.1)
    print(f"    thawed -> GET /portfolio 200 again in {time.monotonic() - began:.2f} s")


async def rate_limit_cost(data: Path, rounds: int = 2000) -> None:
    """The price of the shared (PostgreSQL) rate limit: one `api_take_token` per request,
    beside a bare `SELECT 1` on the same connection, sequential medians."""
    import asyncpg

    url = json.loads((data / "credentials.json").read_text()).get("database_url")
    if not url:
        print("  shared rate limit cost: skipped (no database_url in credentials.json)")
        return
    conn = await asyncpg.connect(url)
    try:
        timings: dict[str, list[float]] = {"SELECT 1": [], "api_take_token": []}
        bucket = f"bench-{uuid.uuid4()}"
        for _ in range(rounds):
            for name, query, query_args in (
                ("SELECT 1", "SELECT 1", ()),
                (
                    "api_take_token",
                    "SELECT api_take_token($1, $2, $3, $4)",
                    (bucket, "b", 1e9, 1e9),
                ),
            ):
                began = time.perf_counter()
                await conn.fetchval(query, *query_args)
                timings[name].append(time.perf_counter() - began)
        await conn.execute("DELETE FROM api_rate_buckets WHERE bucket = $1", bucket)
    finally:
        await conn.close()
    medians = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
    print(
        f"  shared rate limit: api_take_token median {medians['api_take_token']:.0f} us "
        f"beside SELECT 1 {medians['SELECT 1']:.0f} us ({rounds} sequential each)"
    )


async def run(args: argparse.Namespace, data: Path) -> None:
    target = Target(data)
    log_before = target.log.stat().st_size if target.log.exists() else 0
    memory_before = pss_mib(target.api_pid())
    print(f"API {target.url}, pid {target.api_pid()}, {memory_before:.0f} MiB PSS before")
    await rate_limit_cost(data)
    baseline = await probe(target, args.seconds)
    report("idle (baseline)", baseline, None)
    if args.slow:
        for kind, how in (("hold", "held"), ("reopen", "re-opened as soon as closed")):
            await attack(
                target,
                f"{args.slow} slow clients (half-sent requests, {how})",
                args.seconds,
                [kind, "--count", str(args.slow)],
                baseline,
            )
            print(f"    API memory             {pss_mib(target.api_pid()):.0f} MiB PSS")
    if args.flood:
        await attack(
            target,
            f"unsigned flood ({args.flood} concurrent clients, unknown keys)",
            args.seconds,
            ["flood", "--count", str(args.flood)],
            baseline,
        )
    if args.freeze:
        await freeze(target, args.freeze)
    after = await probe(target, min(args.seconds, 5))
    report("after the attacks", after, baseline)
    grew = (target.log.stat().st_size if target.log.exists() else 0) - log_before
    print(f"API memory {memory_before:.0f} MiB PSS before, {pss_mib(target.api_pid()):.0f} after")
    print(f"API log grew by {grew / 1024:.0f} KiB during the run ({target.log})")


async def with_own_stack(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
        Path(tmp).chmod(0o711)
        data = Path(tmp) / "state"
        env = up_env(
            data,
            free_port(),
            WORKER_METRICS_PORT=str(free_port()),
            API_RATE_LIMITS=rate_limits(100000, "place_order", "get_positions"),
        )
        async with trading_up(
            env, poll_every=0.2, stop_timeout=90, ready_within=120, request_timeout=3
        ):
            await run(args, data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="attack the stack `trading up` runs there")
    parser.add_argument("--slow", type=int, default=10_000, help="slow connections (0: skip)")
    parser.add_argument("--flood", type=int, default=50, help="unsigned clients (0: skip)")
    parser.add_argument("--freeze", type=float, default=10, help="seconds PostgreSQL is frozen")
    parser.add_argument("--seconds", type=float, default=15, help="probe time per phase")
    parser.add_argument("--attacker", choices=["hold", "reopen", "flood"], help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.attacker:
        asyncio.run(run_attacker(args.attacker, args.count, args.url, args.seconds))
        return
    if args.slow + 200 > hard:
        parser.error(f"--slow {args.slow} needs more file descriptors than {hard}")
    if args.data_dir:
        asyncio.run(run(args, args.data_dir.resolve()))
    else:
        asyncio.run(with_own_stack(args))


if __name__ == "__main__":
    main()
