"""The broker-fault campaign at scale: N seeded schedules (default 10,000) of orders and
faults on the time-skipping server, real PostgreSQL, the paper venue and its outbox relay,
every one checked against the invariants of tests/faults/invariants.py.

    .venv/bin/python bench/fault_campaign.py [--runs 10000] [--first 0] [--width 24]
                                             [--chunk 500]

Prints schedules, orders, faults scheduled and injected by kind, divergences and time,
and for each diverging seed the one-line command that reproduces it. The schedules run
in chunks, each on a fresh time-skipping server and database, so a long campaign never
accumulates a history the test server slows down on. Exit status 1 if any schedule
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
    campaign_infrastructure,
    reproduce_command,
    run_campaign,
)


async def main(runs: int, first: int, width: int, chunk: int) -> int:
    began = time.monotonic()
    total = CampaignReport()
    effects: Counter[str] = Counter()
    seeds = list(range(first, first + runs))
    for start in range(0, len(seeds), chunk):
        part = seeds[start : start + chunk]
        async with campaign_infrastructure() as (env, pool):
            report = await run_campaign(env, pool, part, width=width)
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(main(args.runs, args.first, args.width, args.chunk)))
