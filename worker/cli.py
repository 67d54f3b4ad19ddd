"""The `trading` command line: stack, worker, API, migrations and operator commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

NOT_YET = {
    "up": "the one-command stack (issue 6)",
    "worker": "the Temporal worker (issue 4)",
    "api": "the signed HTTP API (issue 5)",
}


def _not_yet_available(args: argparse.Namespace) -> int:
    print(
        f"trading {args.command}: not yet available: {NOT_YET[args.command]} has not landed. "
        "See README.md for what works today (`make test`, `trading migrate`).",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trading", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, what in NOT_YET.items():
        sub = commands.add_parser(name, help=f"run {what}")
        sub.set_defaults(handler=_not_yet_available)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
