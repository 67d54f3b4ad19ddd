"""The client commands of `trading` (order, portfolio, positions) on the Python client, and
`trading keys` on the database. worker/cli.py adds them with `register(subparsers)`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from pydantic import BaseModel

from api.client import DEFAULT_CREDENTIALS, TradingApiError, TradingClient
from api.schemas import OrderPage, OrderPublic, PortfolioPublic, PositionPublic

Command = Callable[[TradingClient, argparse.Namespace], Any]


def register(subparsers: Any) -> None:
    """Add `order`, `portfolio`, `positions` and `keys` to the `trading` command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--credentials",
        type=Path,
        default=DEFAULT_CREDENTIALS,
        help=f"credentials file (default {DEFAULT_CREDENTIALS})",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    order = subparsers.add_parser("order", help="place, get, cancel and list orders")
    actions = order.add_subparsers(dest="action", required=True, metavar="ACTION")
    place = actions.add_parser("place", parents=[common], help="place an order")
    place.add_argument("symbol", help="e.g. AAPL")
    place.add_argument("quantity", help="shares, e.g. 10 or 0.5")
    place.add_argument("side", choices=["buy", "sell"])
    place.add_argument("--limit", metavar="PRICE", help="limit price (a limit order)")
    place.add_argument("--stop", metavar="PRICE", help="stop price (a stop order)")
    place.add_argument("--tif", choices=["day", "gtc", "ioc", "fok"], default="day")
    place.add_argument("--client-order-id", help="idempotency key (generated when absent)")
    place.set_defaults(handler=client_command(_place))
    get = actions.add_parser("get", parents=[common], help="show one order")
    get.add_argument("order_id", metavar="ID")
    get.set_defaults(handler=client_command(lambda c, a: c.get_order(a.order_id)))
    cancel = actions.add_parser("cancel", parents=[common], help="cancel an order")
    cancel.add_argument("order_id", metavar="ID")
    cancel.set_defaults(handler=client_command(lambda c, a: c.cancel_order(a.order_id)))
    listing = actions.add_parser("list", parents=[common], help="list orders, newest first")
    listing.add_argument("--status", action="append", help="e.g. open, filled (repeatable)")
    listing.add_argument("--symbol")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="next page (printed under the table)")
    listing.set_defaults(handler=client_command(_list))

    portfolio = subparsers.add_parser("portfolio", parents=[common], help="show the portfolio")
    portfolio.set_defaults(handler=client_command(lambda c, a: c.get_portfolio()))
    positions = subparsers.add_parser("positions", parents=[common], help="show open positions")
    positions.set_defaults(handler=client_command(lambda c, a: c.get_positions()))

    keys = subparsers.add_parser("keys", help="create or revoke API keys (on the database)")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = key_actions.add_parser("create", help="create a key; prints its secret once")
    create.add_argument("--portfolio", type=UUID, required=True, metavar="ID")
    create.add_argument("--label")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=_keys_create)
    revoke = key_actions.add_parser("revoke", help="revoke a key from now on")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=_keys_revoke)


def client_command(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run `command` with a client from the credentials file; print its result or the
    error (exit status 1)."""

    def handler(args: argparse.Namespace) -> int:
        try:
            with TradingClient.from_credentials(args.credentials) as client:
                result = command(client, args)
        except TradingApiError as err:
            print(f"error: {err.code}: {err.message}", file=sys.stderr)
            for name, value in err.details.items():
                if name != "errors":
                    print(f"  {name}: {value}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except httpx.HTTPError as err:
            print(f"error: cannot reach the API: {err}", file=sys.stderr)
            return 1
        print(as_json(result) if args.json else render(result))
        return 0

    return handler


def _place(client: TradingClient, args: argparse.Namespace) -> OrderPublic:
    return client.place_order(
        args.symbol,
        args.quantity,
        args.side,
        limit_price=args.limit,
        stop_price=args.stop,
        time_in_force=args.tif,
        client_order_id=args.client_order_id,
    )


def _list(client: TradingClient, args: argparse.Namespace) -> OrderPage:
    return client.list_orders(args.status, args.symbol, args.limit, args.cursor)


# -- output --------------------------------------------------------------------------------


def as_json(result: Any) -> str:
    if isinstance(result, list):
        return json.dumps([item.model_dump(mode="json") for item in result], indent=2)
    assert isinstance(result, BaseModel)
    return json.dumps(result.model_dump(mode="json"), indent=2)


def render(result: Any) -> str:
    if isinstance(result, OrderPage):
        return _orders_table(result)
    if isinstance(result, OrderPublic):
        return _order_card(result)
    if isinstance(result, PortfolioPublic):
        return _portfolio_card(result)
    if isinstance(result, list):
        return _positions_table(result)
    return as_json(result)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(getattr(value, "value", value))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns: numbers to the right, text to the left."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], Decimal | int) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _card(pairs: Sequence[tuple[str, object]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {_cell(value)}" for name, value in pairs)


def _order_card(order: OrderPublic) -> str:
    pairs: list[tuple[str, object]] = [
        ("order id", order.order_id),
        ("client order id", order.client_order_id),
        ("symbol", order.symbol),
        ("side", order.side),
        ("type", order.order_type),
        ("time in force", order.time_in_force),
        ("quantity", order.quantity),
        ("limit price", order.limit_price),
        ("stop price", order.stop_price),
        ("status", order.status),
        ("filled", order.filled_quantity),
        ("average fill", order.average_fill_price),
        ("commission", order.commission),
        ("created", order.created_at),
    ]
    if order.reject_reason:
        pairs.append(("reason", f"{order.reject_code or ''} {order.reject_reason}".strip()))
    message = getattr(order, "message", None)
    return _card(pairs) + (f"\n\n{message}" if message else "")


def _orders_table(page: OrderPage) -> str:
    headers = ["ORDER ID", "CREATED", "SYMBOL", "SIDE", "TYPE", "QTY", "FILLED"]
    headers += ["LIMIT", "STOP", "AVG FILL", "STATUS"]
    rows = [
        [
            o.order_id,
            o.created_at,
            o.symbol,
            o.side,
            o.order_type,
            o.quantity,
            o.filled_quantity,
            o.limit_price,
            o.stop_price,
            o.average_fill_price,
            o.status,
        ]
        for o in page.orders
    ]
    text = table(headers, rows) if rows else "no orders"
    if page.next_cursor:
        text += f"\n\nmore: trading order list --cursor {page.next_cursor}"
    return text


def _portfolio_card(p: PortfolioPublic) -> str:
    return _card(
        [
            ("portfolio", f"{p.name} ({p.id})"),
            ("trading state", p.trading_state),
            ("cash", p.cash_balance),
            ("reserved", p.reserved),
            ("buying power", p.buying_power),
            ("positions value", p.positions_value),
            ("total value", p.total_value),
            ("unrealized P&L", p.unrealized_pnl),
            ("realized P&L", p.realized_pnl),
            ("return %", p.return_percentage),
            ("day P&L", p.day_pnl),
            ("commissions", p.commissions_paid),
            ("open positions", p.open_positions),
            ("trades", p.total_trades),
            ("win rate %", p.win_rate),
        ]
    )


def _positions_table(positions: list[PositionPublic]) -> str:
    if not positions:
        return "no open positions"
    headers = ["SYMBOL", "SIDE", "QTY", "AVG ENTRY", "MARK", "VALUE", "UNREALIZED", "REALIZED"]
    rows = [
        [
            p.symbol,
            p.side,
            p.quantity,
            p.average_entry_price,
            p.current_market_price,
            p.position_value,
            p.unrealized_pnl,
            p.realized_pnl,
        ]
        for p in positions
    ]
    return table(headers, rows)


# -- keys (straight on the database: the API cannot create its own credentials) ---------------


def _keys_create(args: argparse.Namespace) -> int:
    from activities.store import keys as api_keys
    from bootstrap.resources import open_database
    from bootstrap.settings import ApiSettings

    async def create() -> tuple[str, str] | None:
        settings = ApiSettings()
        async with open_database(settings, migrate=True) as pool:
            exists = await pool.fetchval(
                "SELECT true FROM portfolios WHERE id = $1", args.portfolio
            )
            if not exists:
                return None
            return await api_keys.create_key(
                pool, args.portfolio, settings.master_key(), args.label
            )

    created = asyncio.run(create())
    if created is None:
        print(f"error: no portfolio {args.portfolio}", file=sys.stderr)
        return 1
    key_id, secret = created
    if args.json:
        print(
            json.dumps(
                {"api_key": key_id, "api_secret": secret, "portfolio_id": str(args.portfolio)}
            )
        )
    else:
        print(f"API key for portfolio {args.portfolio} (the secret is shown only now):")
        print(_card([("api_key", key_id), ("api_secret", secret)]))
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from activities.store import keys as api_keys
    from bootstrap.resources import open_database
    from bootstrap.settings import ApiSettings

    async def revoke() -> bool:
        async with open_database(ApiSettings(), migrate=True) as pool:
            return await api_keys.revoke_key(pool, args.key_id)

    if not asyncio.run(revoke()):
        print(f"error: no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """These commands alone (`python -m api.client_cli order list`); `trading` has them too."""
    parser = argparse.ArgumentParser(prog="trading", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
