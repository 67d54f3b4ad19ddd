"""The client commands of `trading` (order, portfolio, positions) on the Python client, and
`trading keys` on the database. worker/cli.py adds them with `register(subparsers)`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from api.cli_output import Percent, Usd, as_json, card, cell, table

# The client (httpx) and the schemas (pydantic models) load when a command runs, not when
# `trading` builds its parser: `trading --help` and the operator commands stay fast.
if TYPE_CHECKING:
    from api.client import TradingClient
    from api.schemas import (
        CancelAllResult,
        OrderPage,
        OrderPublic,
        PortfolioPublic,
        PositionPublic,
        QuotePublic,
    )

DEFAULT_CREDENTIALS = Path(".trading/credentials.json")  # as api.client's
Command = Callable[["TradingClient", argparse.Namespace], Any]


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
    place.add_argument("symbol", type=symbol_argument, help="e.g. AAPL (any case)")
    place.add_argument("quantity", help="shares, e.g. 10 or 0.5")
    place.add_argument("side", choices=["buy", "sell"])
    place.add_argument("--limit", metavar="PRICE", help="limit price (a limit order)")
    place.add_argument("--stop", metavar="PRICE", help="stop price (a stop order)")
    algorithm = place.add_mutually_exclusive_group()
    algorithm.add_argument(
        "--twap", metavar="SECONDS/SLICES", help="work it as a TWAP parent, e.g. 3600/12"
    )
    algorithm.add_argument(
        "--vwap", metavar="SECONDS/SLICES", help="work it as a VWAP parent, e.g. 3600/12"
    )
    place.add_argument(
        "--trail",
        metavar="AMOUNT",
        help="a trailing stop that trails by AMOUNT dollars (2.00) or percent (1.5%%)",
    )
    place.add_argument(
        "--take-profit",
        metavar="PRICE",
        help="a bracket (with --stop-loss) or OTO leg: a limit order closing at PRICE",
    )
    place.add_argument(
        "--stop-loss",
        metavar="STOP[/LIMIT]",
        help="a bracket (with --take-profit) or OTO leg: a stop (or stop-limit) closing order",
    )
    place.add_argument(
        "--oco",
        action="store_true",
        help="with --take-profit and --stop-loss: two exits of a held position (SIDE exits)",
    )
    place.add_argument("--tif", choices=["day", "gtc", "ioc", "fok"], default="day")
    place.add_argument("--client-order-id", help="idempotency key (generated when absent)")
    place.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait until the order is filled, canceled, expired or rejected and show its "
        "fills (default: --wait for market, IOC and FOK orders, --no-wait otherwise)",
    )
    place.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest --wait (default 30)",
    )
    place.set_defaults(handler=client_command(_place))
    get = actions.add_parser("get", parents=[common], help="show one order")
    get.add_argument("order_id", metavar="ID")
    get.set_defaults(handler=client_command(lambda c, a: c.get_order(a.order_id)))
    cancel = actions.add_parser("cancel", parents=[common], help="cancel an order (or --all)")
    cancel.add_argument("order_id", metavar="ID", nargs="?")
    cancel.add_argument("--all", action="store_true", help="cancel every open order")
    cancel.set_defaults(handler=client_command(_cancel))
    watch = actions.add_parser("watch", parents=[common], help="follow order updates live")
    watch.add_argument("--last-event-id", metavar="ID", help="resume after this event")
    watch.add_argument("--limit", type=int, help="stop after this many events")
    watch.set_defaults(handler=client_command(_watch))
    listing = actions.add_parser("list", parents=[common], help="list orders, newest first")
    listing.add_argument("--status", action="append", help="e.g. open, filled (repeatable)")
    listing.add_argument("--symbol", type=symbol_argument)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="next page (printed under the table)")
    listing.set_defaults(handler=client_command(_list))

    portfolio = subparsers.add_parser("portfolio", parents=[common], help="show the portfolio")
    portfolio.set_defaults(handler=client_command(lambda c, a: c.get_portfolio()))
    position = subparsers.add_parser("position", help="act on one position")
    position_actions = position.add_subparsers(dest="action", required=True, metavar="ACTION")
    close = position_actions.add_parser(
        "close", parents=[common], help="close a position at market (all, or a part)"
    )
    close.add_argument("symbol", type=symbol_argument, help="e.g. AAPL")
    part = close.add_mutually_exclusive_group()
    part.add_argument("--quantity", metavar="SHARES", help="close this many shares")
    part.add_argument("--percentage", metavar="PCT", help="close this percent (0-100]")
    close.add_argument("--client-order-id", help="idempotency key (generated when absent)")
    close.set_defaults(handler=client_command(_close))
    positions = subparsers.add_parser("positions", parents=[common], help="show open positions")
    positions.set_defaults(handler=client_command(lambda c, a: c.get_positions()))
    quote = subparsers.add_parser("quote", parents=[common], help="the current quote of a symbol")
    quote.add_argument("symbol", type=symbol_argument, help="e.g. AAPL")
    quote.set_defaults(handler=client_command(lambda c, a: c.get_quote(a.symbol)))

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
        import httpx

        from api.client import TradingApiError, TradingClient

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
            where = f"api_url in {args.credentials}"
            print(f"error: cannot reach the API ({where}): {err}", file=sys.stderr)
            return 1
        if result is not None:  # None: the command printed as it went (order watch)
            print(as_json(result) if args.json else render(result))
        return 0

    return handler


def symbol_argument(text: str) -> str:
    """Symbols are upper case on the wire: `aapl` is AAPL."""
    return text.strip().upper()


def waits_by_default(args: argparse.Namespace) -> bool:
    """Market, IOC and FOK orders settle at once: wait for them unless told not to."""
    if args.wait is not None:
        return bool(args.wait)
    market = args.limit is None and args.stop is None
    for option in ("trail", "twap", "take_profit", "stop_loss"):  # order classes, when present
        if getattr(args, option, None) is not None:
            market = False
    return market or args.tif in ("ioc", "fok")


def _place(client: TradingClient, args: argparse.Namespace) -> OrderPublic:
    placed = _submit(client, args)
    if not waits_by_default(args) or placed.status.is_terminal:
        return placed
    final = client.wait_for_order(placed.order_id, timeout=args.timeout)
    if not final.status.is_terminal:
        print(
            f"still {final.status.value} after {args.timeout:g}s; "
            f"follow it with: trading order get {final.order_id}",
            file=sys.stderr,
        )
    return final


def _submit(client: TradingClient, args: argparse.Namespace) -> OrderPublic:
    return client.place_order(
        args.symbol,
        args.quantity,
        args.side,
        limit_price=args.limit,
        stop_price=args.stop,
        time_in_force=args.tif,
        client_order_id=args.client_order_id,
        trail_price=None if args.trail is None or args.trail.endswith("%") else args.trail,
        trail_percent=args.trail[:-1].strip() if args.trail and args.trail.endswith("%") else None,
        execution=_execution(args),
        order_class="oco" if getattr(args, "oco", False) else None,
        take_profit=getattr(args, "take_profit", None),
        stop_loss=_stop_loss(args)[0],
        stop_loss_limit=_stop_loss(args)[1],
    )


def _stop_loss(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """--stop-loss STOP or STOP/LIMIT (a stop-limit)."""
    text = getattr(args, "stop_loss", None)
    if text is None:
        return None, None
    stop, _, limit = text.partition("/")
    return stop.strip(), limit.strip() or None


def _execution(args: argparse.Namespace) -> dict[str, Any] | None:
    """--twap SECONDS/SLICES or --vwap SECONDS/SLICES, e.g. --twap 3600/12."""
    for algorithm in ("twap", "vwap"):
        text = getattr(args, algorithm, None)
        if text is None:
            continue
        seconds, _, slices = text.partition("/")
        if not (seconds.isdigit() and slices.isdigit()):
            raise ValueError(f"--{algorithm} takes SECONDS/SLICES, e.g. 3600/12")
        return {"algorithm": algorithm, "duration_seconds": int(seconds), "slices": int(slices)}
    return None


def _watch(client: TradingClient, args: argparse.Namespace) -> None:
    """Print order updates as they come (until interrupted, or --limit of them)."""
    for event in client.events(last_event_id=args.last_event_id, limit=args.limit):
        order = event.order
        fill = "" if order.average_fill_price is None else f" @ {order.average_fill_price:f}"
        line = (
            f"{event.id:>8}  {event.event:<12} {order.order_id}  {order.symbol} "
            f"{order.side.value} {order.filled_quantity:f}/{order.quantity:f}{fill} "
            f"{order.status.value}"
        )
        print(as_json(order) if args.json else line, flush=True)


def _cancel(client: TradingClient, args: argparse.Namespace) -> OrderPublic | CancelAllResult:
    if args.all == (args.order_id is not None):
        raise ValueError("give an order ID or --all (not both)")
    if args.all:
        return client.cancel_all_orders()
    return client.cancel_order(args.order_id)


def _close(client: TradingClient, args: argparse.Namespace) -> OrderPublic:
    return client.close_position(
        args.symbol,
        quantity=args.quantity,
        percentage=args.percentage,
        client_order_id=args.client_order_id,
    )


def _list(client: TradingClient, args: argparse.Namespace) -> OrderPage:
    return client.list_orders(args.status, args.symbol, args.limit, args.cursor)


# -- output --------------------------------------------------------------------------------


def render(result: Any) -> str:
    from api.schemas import (
        CancelAllResult,
        OrderPage,
        OrderPublic,
        PortfolioPublic,
        QuotePublic,
    )

    if isinstance(result, OrderPage):
        return _orders_table(result)
    if isinstance(result, CancelAllResult):
        if not result.orders:
            return "no open orders"
        rows = [[o.order_id, o.status, "yes" if o.delivered else "no"] for o in result.orders]
        return table(["ORDER ID", "STATUS", "DELIVERED"], rows)
    if isinstance(result, OrderPublic):
        return _order_card(result)
    if isinstance(result, PortfolioPublic):
        return _portfolio_card(result)
    if isinstance(result, QuotePublic):
        return _quote_card(result)
    if isinstance(result, list):
        return _positions_table(result)
    return as_json(result)


_card = card


def _order_card(order: OrderPublic) -> str:
    pairs: list[tuple[str, object]] = [
        ("order id", order.order_id),
        ("client order id", order.client_order_id),
        ("symbol", order.symbol),
        ("side", order.side),
        ("type", order.order_type),
        ("time in force", order.time_in_force),
        ("quantity", order.quantity),
        ("limit price", Usd(order.limit_price)),
        ("stop price", Usd(order.stop_price)),
        ("status", order.status),
        ("filled", order.filled_quantity),
        ("average fill", Usd(order.average_fill_price)),
        ("commission", Usd(order.commission)),
        ("created", order.created_at),
    ]
    if order.filled_at is not None:
        took = (order.filled_at - order.created_at).total_seconds()
        pairs.append(("filled at", order.filled_at))
        pairs.append(("fill time", f"{took:.2f} s after it was placed"))
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
            Usd(o.limit_price),
            Usd(o.stop_price),
            Usd(o.average_fill_price),
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
            ("cash", Usd(p.cash_balance)),
            ("reserved", Usd(p.reserved)),
            ("buying power", Usd(p.buying_power)),
            ("positions value", Usd(p.positions_value)),
            ("total value", Usd(p.total_value)),
            ("unrealized P&L", Usd(p.unrealized_pnl)),
            ("realized P&L", Usd(p.realized_pnl)),
            ("return", Percent(p.return_percentage)),
            ("day P&L", Usd(p.day_pnl)),
            ("commissions", Usd(p.commissions_paid)),
            ("open positions", p.open_positions),
            ("trades", p.total_trades),
            ("win rate", Percent(p.win_rate)),
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
            Usd(p.average_entry_price),
            Usd(p.current_market_price),
            Usd(p.position_value),
            Usd(p.unrealized_pnl),
            Usd(p.realized_pnl),
        ]
        for p in positions
    ]
    return table(headers, rows)


def _quote_card(q: QuotePublic) -> str:
    return _card(
        [
            ("symbol", q.symbol),
            ("bid", f"{Usd(q.bid_price)} x {cell(q.bid_size)}"),
            ("ask", f"{Usd(q.ask_price)} x {cell(q.ask_size)}"),
            ("spread", Usd(q.ask_price - q.bid_price)),
            ("last", Usd(q.last_price)),
            ("as of", q.timestamp),
        ]
    )


# -- keys (straight on the database: the API cannot create its own credentials) ---------------


def _keys_create(args: argparse.Namespace) -> int:
    from activities.store import keys as api_keys
    from bootstrap.discovery import open_pool, stack_settings
    from bootstrap.settings import ApiSettings

    async def create() -> tuple[str, str] | None:
        settings, stack = stack_settings(ApiSettings)
        async with open_pool(settings, stack, migrate=True) as pool:
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
    from bootstrap.discovery import open_pool, stack_settings
    from bootstrap.settings import ApiSettings

    async def revoke() -> bool:
        settings, stack = stack_settings(ApiSettings)
        async with open_pool(settings, stack, migrate=True) as pool:
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
