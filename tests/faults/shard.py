"""One process's share of a fault campaign run in several processes
(`campaign.run_in_processes`): its seeds on a stack of its own, the report pickled.

    python -m tests.faults.shard SERVER_URL OUT WIDTH SEED [SEED ...]
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from pathlib import Path

from .campaign import campaign_database, campaign_environment, quiet_activity_failures, run_campaign


async def main(server_url: str, out: Path, width: int, seeds: list[int]) -> None:
    async with campaign_database(server_url) as pool, campaign_environment() as env:
        report = await run_campaign(env, pool, seeds, width=width)
    out.write_bytes(pickle.dumps(report))


if __name__ == "__main__":
    url, out, width, *seeds = sys.argv[1:]
    with quiet_activity_failures():
        asyncio.run(main(url, Path(out), int(width), [int(seed) for seed in seeds]))
