"""Operator commands of `trading`: stuck orders, the kill switch, reconciliation, health.

`register(subparsers)` adds them to the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from uuid import UUID

from api.cli_output import Usd, as_json, table
from domain.portfolio import TradingState

# Heavy imports (temporalio, asyncpg, the store, the workflows) happen inside the commands:
# `trading --help` and the commands that do not need them stay fast.
if TYPE_CHECKING:
    import asyncpg
    from temporalio.client import Client

    from activities.store.queries import StuckOrder
    from bootstrap.discovery import StackFile
    from bootstrap.settings import Settings
    from contracts.payloads import ReconciliationReport

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
STATE_COMMANDS = {
    "halt": (TradingState.HALTED, "refuse new orders and cancel every open one"),
    "reduce": (TradingState.REDUCING, "admit only orders that shrink a position"),
    "resume": (TradingState.ACTIVE, "trade normally again"),
}


def parse_duration(text: str) -> timedelta:
    """`15m`, `2h`, `1h30m`, `45s`, `1d` -> timedelta (for --older-than)."""
    value = text.strip().lower()
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(f"not a duration like 15m, 2h or 1h30m: {text!r}")
    return sum((timedelta(**{_UNITS[unit]: int(n)}) for n, unit in parts), timedelta())


def format_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def order_id_argument(text: str) -> UUID:
    """An order id, or its workflow id (`order-<id>`) as copied from the UI."""
    try:
        return UUID(text.removeprefix("order-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an order id: {text!r}") from None


def stuck_query() -> str:
    """The Temporal UI's visibility query for orders waiting on the broker."""
    from activities.store.queries import AT_BROKER

    statuses = ", ".join(f'"{s.value}"' for s in AT_BROKER)
    waiting = f'OrderStatus IN ({statuses}) OR BrokerStatus="unreachable"'
    return f'ExecutionStatus="Running" AND ({waiting})'


def workflow_url(ui_url: str, namespace: str, workflow_id: str) -> str:
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{quote(workflow_id)}"


def query_url(ui_url: str, namespace: str, query: str) -> str:
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows?query={quote(query)}"


# -- connecting to the running stack ------------------------------------------------------


@dataclasses.dataclass
class Connection:
    """What a command connected to: settings (completed from the data directory of the
    running stack), and the pool and the Temporal client when it asked for them."""

    settings: Settings
    stack: StackFile
    pool: asyncpg.Pool | None = None
    client: Client | None = None

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    @property
    def temporal(self) -> Client:
        assert self.client is not None
        return self.client


@contextlib.asynccontextmanager
async def connected(*, database: bool = True, temporal: bool = True) -> AsyncIterator[Connection]:
    """Connect as the worker does, to what the command needs. Settings the environment
    leaves unset come from the running stack (`.trading/credentials.json`); a service that
    does not answer raises `Unreachable`, one line naming its setting."""
    from bootstrap.discovery import connect_temporal, open_pool, stack_settings
    from bootstrap.settings import Settings

    settings, stack = stack_settings(Settings)
    connection = Connection(settings, stack)
    async with contextlib.AsyncExitStack() as exits:
        if database:
            # Operators read and signal; migrating is the worker's job.
            connection.pool = await exits.enter_async_context(open_pool(settings, stack))
        if temporal:
            connection.client = await connect_temporal(settings, stack)
        yield connection


def _run(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))

    return handler


def _ui_url(settings: Settings, override: str | None) -> str:
    if override:
        return override
    configured = settings.temporal_ui_url
    if configured:
        return str(configured)
    return f"http://127.0.0.1:{settings.temporal_ui_port}"


# -- commands ------------------------------------------------------------------------------


async def _stuck(args: argparse.Namespace) -> int:
    from activities.store.queries import find_stuck_orders

    async with connected(temporal=False) as c:
        orders = await find_stuck_orders(c.db, args.older_than, limit=args.limit)
    ui = _ui_url(c.settings, args.ui_url)
    namespace = c.settings.temporal_namespace
    if args.json:
        print(json.dumps([_stuck_json(o, ui, namespace) for o in orders], indent=2))
        return 0
    print(_stuck_table(orders, args.older_than, ui, namespace))
    return 0


def _stuck_json(order: StuckOrder, ui: str, namespace: str) -> dict[str, Any]:
    return {
        "order_id": str(order.order_id),
        "portfolio_id": str(order.portfolio_id),
        "symbol": order.symbol,
        "status": order.status.value,
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        "updated_at": order.updated_at.isoformat(),
        "age_seconds": int(order.age.total_seconds()),
        "broker_unreachable_since": order.broker_unreachable_since.isoformat()
        if order.broker_unreachable_since
        else None,
        "workflow_id": order.workflow_id,
        "url": workflow_url(ui, namespace, order.workflow_id),
    }


def _stuck_table(orders: list[StuckOrder], older_than: timedelta, ui: str, namespace: str) -> str:
    query = stuck_query()
    lines = []
    if not orders:
        lines.append(f"no order has waited on the broker for more than {format_age(older_than)}")
    else:
        header = f"{'ORDER ID':<36}  {'SYMBOL':<6}  {'STATUS':<16}  {'TYPE/TIF':<14}  {'AGE':>8}"
        lines.append(header)
        for o in orders:
            kind = f"{o.order_type}/{o.time_in_force}"
            lines.append(
                f"{o.order_id!s:<36}  {o.symbol:<6}  {o.status.value:<16}  {kind:<14}  "
                f"{format_age(o.age):>8}"
            )
            if o.broker_unreachable_since is not None:
                lines.append(
                    f"    broker unreachable since {o.broker_unreachable_since:%Y-%m-%d %H:%M:%S}"
                    " UTC: the order waits and retries; it is not closed"
                )
            lines.append(f"    {workflow_url(ui, namespace, o.workflow_id)}")
        lines.append("")
        lines.append("re-read one at the broker: trading orders reconcile <ORDER ID>")
    lines.append(f"in the Temporal UI, filter with: {query}")
    lines.append(f"    {query_url(ui, namespace, query)}")
    return "\n".join(lines)


async def _reconcile(args: argparse.Namespace) -> int:
    from temporalio.service import RPCError, RPCStatusCode

    from bootstrap.control import reconcile_order

    async with connected() as c:
        try:
            await reconcile_order(c.temporal, args.order_id)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            status = await c.db.fetchval("SELECT status FROM orders WHERE id = $1", args.order_id)
            known = f"it is {status}" if status else "no such order"
            print(f"order {args.order_id} has no running workflow ({known})", file=sys.stderr)
            return 1
    print(f"order {args.order_id}: asked to re-read its status at the broker")
    return 0


async def _trading_state(args: argparse.Namespace) -> int:
    from activities.store.queries import portfolio_ids
    from activities.store.repositories import NotFoundError
    from bootstrap.control import set_trading_state

    state: TradingState = args.state
    async with connected() as c:
        targets = args.portfolio or await portfolio_ids(c.db)
        if not targets:
            print("no portfolio to change", file=sys.stderr)
            return 1
        failed = 0
        for portfolio_id in targets:
            try:
                change = await set_trading_state(
                    c.temporal,
                    c.db,
                    portfolio_id,
                    state,
                    args.reason,
                    task_queue=c.settings.task_queue,
                )
            except NotFoundError as err:
                print(f"{portfolio_id}: {err}", file=sys.stderr)
                failed += 1
                continue
            line = f"{portfolio_id}: {change.previous.value} -> {change.state.value}"
            if change.orders_to_cancel:
                line += f"; canceling {len(change.orders_to_cancel)} open orders"
            print(line)
    return 1 if failed else 0


async def _show_reports(args: argparse.Namespace) -> int:
    from activities.store.queries import list_reconciliation_reports

    async with connected(temporal=False) as c:
        reports = await list_reconciliation_reports(c.db, args.last)
    if args.json:
        print(as_json([dataclasses.asdict(report) for report in reports]))
        return 0
    if not reports:
        print("no reconciliation has run yet")
    for report in reports:
        print(format_report(report))
    return 0


def format_report(report: ReconciliationReport) -> str:
    flagged = sum(not d.repaired for d in report.discrepancies)
    lines = [
        f"{report.run_at.isoformat()}  {report.status.value:<13} broker={report.broker}  "
        f"{len(report.discrepancies)} discrepancies, {flagged} flagged  ({report.report_id})"
    ]
    for d in report.discrepancies:
        what = d.symbol or "-"
        if d.order_id is not None:
            what += f" order {d.order_id}"
        outcome = "repaired" if d.repaired else "FLAGGED"
        lines.append(
            f"  {outcome:<8} {d.kind.value:<26} {what}: store {_pairs(d.expected)} / "
            f"broker {_pairs(d.actual)}" + (f"  ({d.note})" if d.note else "")
        )
    return "\n".join(lines)


def _pairs(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items()) or "-"


async def _run_reconciliation(args: argparse.Namespace) -> int:
    from contracts.payloads import ReconciliationInput
    from workflows.operations import ReconciliationWorkflow

    async with connected(database=False) as c:
        now = datetime.now(UTC).replace(microsecond=0)
        handle = await c.temporal.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(run_at=now, force=True),
            id=f"reconciliation-manual-{now.isoformat()}",
            task_queue=c.settings.task_queue,
            execution_timeout=timedelta(hours=6),
        )
        print(f"started {handle.id}; waiting for the report (Ctrl-C leaves it running)")
        print(format_report(await handle.result()))
    return 0


async def _health(args: argparse.Namespace) -> int:
    """Exit 0 when a worker in this container polls the task queue (a container
    healthcheck: the worker itself has no HTTP port)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.service import RPCError

    from bootstrap.discovery import Unreachable, stack_settings
    from bootstrap.settings import Settings, secret
    from bootstrap.temporal import connect

    settings, stack = stack_settings(Settings)
    host = socket.gethostname()
    try:
        client = await asyncio.wait_for(
            connect(
                settings.temporal_address,
                settings.temporal_namespace,
                tls=settings.temporal_tls,
                api_key=secret(settings.temporal_api_key),
            ),
            timeout=10,
        )
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=5),
        )
    except (RPCError, RuntimeError, OSError, TimeoutError, Unreachable) as err:
        where = stack.origin("temporal_address")
        reason = " ".join(str(err).split()) or type(err).__name__
        print(
            f"unhealthy: Temporal at {settings.temporal_address} ({where}): {reason}",
            file=sys.stderr,
        )
        return 1
    now = datetime.now(UTC)
    polling = [
        p
        for p in described.pollers
        if p.identity.endswith(f"@{host}")
        and now - p.last_access_time.ToDatetime(UTC) < timedelta(seconds=args.within)
    ]
    if not polling:
        print(f"unhealthy: no worker on {host} polls {settings.task_queue}", file=sys.stderr)
        return 1
    print(f"healthy: {len(polling)} poller(s) on {settings.task_queue}")
    return 0


# -- portfolios (straight on the store: the API serves one key's portfolio only) -------------


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text.replace(",", "").replace("_", "").removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}")
    return value


# option -> (RiskLimits field, parser, help)
LIMIT_OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "--max-position-size": ("max_position_size", _amount, "market value of one position"),
    "--max-order-notional": ("max_order_notional", _amount, "notional of one order"),
    "--max-concentration": ("max_concentration", _amount, "one position / equity, 0-1"),
    "--max-positions": ("max_positions", int, "number of open positions"),
    "--max-leverage": ("max_leverage", _amount, "gross exposure / equity"),
    "--max-portfolio-risk": ("max_portfolio_risk", _amount, "equity risked per trade, 0-1"),
    "--daily-loss-limit": ("daily_loss_limit", _amount, "equity drop since the session start"),
    "--market-order-buffer": (
        "market_order_buffer",
        _amount,
        "extra reserved for market orders, 0-1",
    ),
}


async def _portfolio_create(args: argparse.Namespace) -> int:
    from activities.store import ledger
    from domain.errors import ValidationError
    from domain.portfolio import Portfolio, RiskLimits

    limits = {
        field: getattr(args, field)
        for field, _, _ in LIMIT_OPTIONS.values()
        if getattr(args, field) is not None
    }
    if not args.name.strip():
        print("error: --name must not be blank", file=sys.stderr)
        return 1
    try:  # bad input is refused before anything is written
        portfolio = Portfolio(
            name=args.name, initial_capital=args.capital, limits=RiskLimits(**limits)
        )
    except ValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    async with connected(temporal=False) as c:
        await ledger.create_portfolio(c.db, portfolio)
    if args.json:
        print(as_json(_portfolio_json(portfolio)))
        return 0
    print(f"created portfolio {portfolio.name!r} with {Usd(portfolio.initial_capital)}")
    print(f"  id  {portfolio.id}")
    print(f"next: trading keys create --portfolio {portfolio.id}")
    return 0


def _portfolio_json(portfolio: Any) -> dict[str, Any]:
    return {
        "id": str(portfolio.id),
        "name": portfolio.name,
        "currency": portfolio.currency,
        "trading_state": portfolio.trading_state.value,
        "initial_capital": portfolio.initial_capital,
        "cash_balance": portfolio.cash_balance,
        "open_positions": sum(1 for p in portfolio.positions.values() if p.quantity),
        "limits": dataclasses.asdict(portfolio.limits),
    }


async def _portfolio_list(args: argparse.Namespace) -> int:
    from activities.store.queries import portfolio_ids
    from activities.store.repositories import UnitOfWork

    async with connected(temporal=False) as c:
        portfolios = []
        for portfolio_id in await portfolio_ids(c.db):
            async with UnitOfWork(c.db) as uow:
                portfolios.append(await uow.portfolios.get(portfolio_id))
    if args.json:
        print(as_json([_portfolio_json(p) for p in portfolios]))
        return 0
    if not portfolios:
        print("no portfolios: trading portfolios create --name NAME --capital AMOUNT")
        return 0
    headers = ["ID", "NAME", "STATE", "CAPITAL", "CASH", "POSITIONS"]
    rows = [
        [
            p.id,
            p.name,
            p.trading_state,
            Usd(p.initial_capital),
            Usd(p.cash_balance),
            sum(1 for position in p.positions.values() if position.quantity),
        ]
        for p in portfolios
    ]
    print(table(headers, rows))
    return 0


def register(subparsers: Any) -> None:
    """Add `orders`, `halt`, `reduce`, `resume`, `reconciliation`, `portfolios` and `health`
    to `trading`."""
    orders = subparsers.add_parser("orders", help="find stuck orders and repair one")
    actions = orders.add_subparsers(dest="orders_action", required=True, metavar="ACTION")
    stuck = actions.add_parser("stuck", help="orders waiting on the broker for too long")
    stuck.add_argument(
        "--older-than",
        type=parse_duration,
        default=timedelta(minutes=15),
        help="unchanged for at least this long (15m, 2h, 1h30m; default 15m)",
    )
    stuck.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    stuck.add_argument("--ui-url", default=None, help="the Temporal UI (default: local)")
    stuck.add_argument("--json", action="store_true", help="print JSON")
    stuck.set_defaults(handler=_run(_stuck))
    reconcile = actions.add_parser(
        "reconcile", help="make one order re-read its status at the broker now"
    )
    reconcile.add_argument("order_id", type=order_id_argument, help="order id or order-<id>")
    reconcile.set_defaults(handler=_run(_reconcile))

    for name, (state, what) in STATE_COMMANDS.items():
        command = subparsers.add_parser(name, help=f"kill switch: {what}")
        command.add_argument(
            "--portfolio",
            type=UUID,
            action="append",
            help="only this portfolio (repeatable; default: every portfolio)",
        )
        command.add_argument(
            "--reason", default=f"operator: trading {name}", help="why (kept in the history)"
        )
        command.set_defaults(handler=_run(_trading_state), state=state)

    reports = subparsers.add_parser("reconciliation", help="reconciliation reports")
    report_actions = reports.add_subparsers(dest="report_action", required=True, metavar="ACTION")
    show = report_actions.add_parser("show", help="the latest reports and their discrepancies")
    show.add_argument("--last", type=int, default=1, help="how many reports (default 1)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_run(_show_reports))
    run = report_actions.add_parser("run", help="reconcile with the broker now")
    run.set_defaults(handler=_run(_run_reconciliation))

    portfolios = subparsers.add_parser("portfolios", help="create and list portfolios")
    portfolio_actions = portfolios.add_subparsers(
        dest="portfolios_action", required=True, metavar="ACTION"
    )
    create = portfolio_actions.add_parser(
        "create", help="create a portfolio (then: trading keys create --portfolio ID)"
    )
    create.add_argument("--name", required=True)
    create.add_argument("--capital", type=_amount, required=True, help="initial cash, e.g. 50000")
    for option, (field, parse, what) in LIMIT_OPTIONS.items():
        create.add_argument(option, dest=field, type=parse, help=f"risk limit: {what}")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=_run(_portfolio_create))
    listing = portfolio_actions.add_parser("list", help="every portfolio, oldest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_run(_portfolio_list))

    health = subparsers.add_parser(
        "health", help="exit 0 if a worker on this host polls its task queue (healthcheck)"
    )
    health.add_argument(
        "--within", type=int, default=120, help="seconds since its last poll (default 120)"
    )
    health.set_defaults(handler=_run(_health))
