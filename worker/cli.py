"""The `trading` command line: stack, worker, API, migrations and operator commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence


def _up(args: argparse.Namespace) -> int:
    from worker.stack import main

    return main()


def _api(args: argparse.Namespace) -> int:
    from api.server import main

    return main()


def _worker(args: argparse.Namespace) -> int:
    from worker.main import main

    asyncio.run(main())
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from activities.store import migrations
    from bootstrap.discovery import open_pool, stack_settings
    from bootstrap.settings import Settings

    async def run() -> int:
        settings, stack = stack_settings(Settings)
        async with open_pool(settings, stack, require_existing=False) as pool:
            if args.action == "up":
                done = await migrations.migrate_up(pool, args.target)
                print("\n".join(f"applied {m.filename}" for m in done) or "up to date")
            elif args.action == "down":
                done = await migrations.migrate_down(pool, args.steps)
                print("\n".join(f"reverted {m.filename}" for m in done) or "nothing to revert")
            elif args.json:
                from api.cli_output import as_json

                print(as_json([row._asdict() for row in await migrations.status(pool)]))
            else:
                print(f"{'version':>7}  {'name':<45} {'applied at':<32} checksum")
                for row in await migrations.status(pool):
                    applied = row.applied_at.isoformat() if row.applied_at else "pending"
                    check = {True: "ok", False: "MODIFIED", None: "-"}[row.checksum_ok]
                    print(f"{row.version:>7}  {row.name:<45} {applied:<32} {check}")
        return 0

    try:
        return asyncio.run(run())
    except migrations.MigrationError as err:
        print(f"trading migrate: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trading", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up", help="run the whole stack in the foreground (Temporal, PostgreSQL, worker, API)"
    )
    up.set_defaults(handler=_up, server=True)
    api = commands.add_parser("api", help="run the signed HTTP API")
    api.set_defaults(handler=_api, server=True)
    worker = commands.add_parser(
        "worker", help="run the Temporal worker, the paper venue and the outbox relay"
    )
    worker.set_defaults(handler=_worker, server=True)

    migrate = commands.add_parser("migrate", help="apply, revert or list database migrations")
    actions = migrate.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="apply pending migrations")
    up.add_argument("--target", type=int, default=None, help="stop at this version")
    down = actions.add_parser("down", help="revert the newest applied migrations")
    down.add_argument("--steps", type=int, default=1, help="how many to revert (default 1)")
    status = actions.add_parser("status", help="list migrations and whether they are applied")
    status.add_argument("--json", action="store_true", help="print JSON")
    migrate.set_defaults(handler=_migrate)

    from api import client_cli as client_commands
    from worker import operator_cli as operator
    from worker import replay

    client_commands.register(commands)
    operator.register(commands)
    replay.register(commands)
    from worker import strategy_cli

    strategy_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Servers log what they do; a command prints its answer, and only warnings on stderr.
    quiet = logging.INFO if getattr(args, "server", False) else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    from pydantic import ValidationError  # here, not at the top: `trading --help` stays fast

    from bootstrap.discovery import Unreachable

    try:
        return int(args.handler(args))
    except Unreachable as err:  # a service that does not answer: one line naming its setting
        print(f"trading: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trading: interrupted", file=sys.stderr)
        return 130
    except ValidationError as err:  # a setting that cannot work: say which, no traceback
        for problem in err.errors():
            name = ".".join(str(part) for part in problem["loc"]).upper() or "settings"
            print(f"trading: {name}: {problem['msg']}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
