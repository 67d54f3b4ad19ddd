"""The broker-fault campaign at scale: N seeded schedules (default 10,000) of orders and
faults on the time-skipping server, real PostgreSQL, the paper venue and its outbox relay,
every one checked against the invariants of tests/faults/invariants.py.

    .venv/bin/python bench/fault_campaign.py [--runs 10000] [--first 0] [--width 24]
                                             [--chunk 500] [--processes N]

Prints schedules, orders, faults scheduled and injected by kind, divergences and time,
and for each diverging seed the one-line command that reproduces it. The schedules run
in chunks, each on fresh time-skipping servers and databases, so a long campaign never
accumulates a history the test server slows down on; each chunk is dealt over
`--processes` processes (default: one per core, at most four). Exit status 1 if any schedule
diverged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.campaign import (  # noqa: E402
    DEFAULT_WIDTH,
    CampaignReport,
    default_processes,
    quiet_activity_failures,
    reproduce_command,
    run_in_processes,
)
from tests.fixtures.postgres import start_throwaway_server, stop_throwaway_server  # noqa: E402


async def main(runs: int, first: int, width: int, chunk: int, processes: int) -> int:
    server = await start_throwaway_server()
    try:
        with quiet_activity_failures():
            return await campaign(server.url, runs, first, width, chunk, processes)
    finally:
        await stop_throwaway_server(server)


async def campaign(
    server_url: str, runs: int, first: int, width: int, chunk: int, processes: int
) -> int:
    began = time.monotonic()
    total = CampaignReport(processes=processes)
    effects: Counter[str] = Counter()
    seeds = list(range(first, first + runs))
    for start in range(0, len(seeds), chunk):
        part = seeds[start : start + chunk]
        report = await run_in_processes(server_url, part, processes=processes, width=width)
        total.results.update(report.results)
        total.steps += report.steps
        total.sleep_seconds.extend(report.sleep_seconds)
        effects.update(report.effects())
        failed = len(total.failed())
        print(
            f"{len(total.results):>6} schedules, {total.orders} orders, "
            f"{sum(len(r.divergences) for r in total.results.values())} divergences in "
            f"{failed} schedule(s), {time.monotonic() - began:.0f} s",
            flush=True,
        )
    total.wall_seconds = time.monotonic() - began
    total.shared_effects = effects  # every effect, shared or per schedule, summed
    for result in total.results.values():
        result.effects = Counter()  # already counted in `effects`
    print()
    print(total.summary())
    print(f"schedules per second: {len(total.results) / total.wall_seconds:.2f}")
    for result in total.failed():
        print(f"seed {result.seed}: {reproduce_command(result.seed)}")
    return 1 if total.failed() else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--processes", type=int, default=default_processes())
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(main(args.runs, args.first, args.width, args.chunk, args.processes)))
