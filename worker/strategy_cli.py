"""`trading strategy start|list|show|stop` (live strategies on a Temporal Schedule) and
`trading backtest` (the same strategy workflow and order workflows over history).

`register(subparsers)` adds both to the command line. Bad input is one line on stderr
(exit 2) and nothing is written or scheduled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from temporalio.client import Schedule

    from domain.commissions import CommissionModel
    from domain.market import Bar, Timeframe

SCHEDULE_PREFIX = "strategy-"
_EVERY = re.compile(r"^(\d+)([mh])$")


class InputError(ValueError):
    """Bad command-line input: one line for the user."""


def _fail(message: str) -> int:
    print(f"trading: {message}", file=sys.stderr)
    return 2


def _params(pairs: list[str] | None) -> dict[str, str]:
    from bootstrap.strategies import parse_param

    params: dict[str, str] = {}
    for text in pairs or []:
        key, value = parse_param(text)
        if key in params:
            raise InputError(f"--param {key} given twice")
        params[key] = value
    return params


def _every_minutes(text: str) -> int:
    match = _EVERY.match(text.strip().lower())
    if match is None:
        raise InputError(f"--every wants minutes or hours like 5m, 15m or 1h, got {text!r}")
    minutes = int(match.group(1)) * (60 if match.group(2) == "h" else 1)
    if not 1 <= minutes <= 60 or 60 % minutes:
        raise InputError(f"--every must divide an hour (1m, 5m, 15m, 30m, 1h), got {text!r}")
    return minutes


def _symbols(text: str | None) -> list[str]:
    from domain.errors import ValidationError
    from domain.orders import validate_symbol

    symbols = [s.strip().upper() for s in (text or "").split(",") if s.strip()]
    try:
        for symbol in symbols:
            validate_symbol(symbol)
    except ValidationError as err:
        raise InputError(f"--symbols: {err}") from None
    if len(set(symbols)) != len(symbols):
        raise InputError("--symbols lists a symbol twice")
    return symbols


# -- backtest ------------------------------------------------------------------------------


def _commission(text: str) -> CommissionModel:
    from domain.commissions import PercentageOfNotional, model_from_config
    from domain.errors import ValidationError

    try:
        if text.strip().startswith("{"):
            return model_from_config(json.loads(text))
        rate = Decimal(text)
        if not rate.is_finite() or not 0 <= rate < Decimal("0.1"):
            raise InputError(f"--commission is a fraction of the notional in [0, 0.1), got {text}")
        return PercentageOfNotional(rate=rate)
    except (InvalidOperation, json.JSONDecodeError, ValidationError, TypeError, KeyError) as err:
        raise InputError(f"--commission: not a fraction or a commission model: {err}") from None


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{flag}: not an ISO date (YYYY-MM-DD): {text!r}") from None


async def _market_bars(
    symbols: list[str], timeframe: Timeframe, start: date, end: date
) -> dict[str, list[Bar]]:
    """Bars from the configured market data (Polygon, or the simulated feed)."""
    from activities.backtest.data import BacktestInputError, align
    from activities.market_data.simulated import SimulatedFeed
    from bootstrap.settings import Settings
    from bootstrap.vendors import build_market_data
    from domain.market import SymbolNotFoundError

    settings = Settings()
    feed = build_market_data(settings, SimulatedFeed(seed=settings.feed_seed))
    first = datetime(start.year, start.month, start.day, tzinfo=UTC)
    last = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    limit = int((last - first).total_seconds() // timeframe.seconds) + 1
    series: dict[str, list[Bar]] = {}
    for symbol in symbols:
        try:
            bars = await feed.get_bars(symbol, timeframe, limit, end=last)
        except SymbolNotFoundError:
            raise BacktestInputError(f"unknown symbol {symbol}") from None
        series[symbol] = [bar for bar in bars if first <= bar.start < last]
        if not series[symbol]:
            raise BacktestInputError(f"no {timeframe.value} bars for {symbol} in {start}..{end}")
    return align(series) if len(series) > 1 else series


@dataclass
class _Bar:
    total: int = 0
    shown: int = -1
    started: float = 0.0

    def __call__(self, done: int, total: int) -> None:
        if total <= 0 or not sys.stderr.isatty():
            return
        percent = done * 100 // total
        if percent == self.shown:
            return
        self.shown = percent
        width = 30
        filled = width * done // total
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}% {done}/{total} bars "
            f"{elapsed:5.1f}s"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _backtest(args: argparse.Namespace) -> int:
    from activities.backtest.data import BacktestInputError, read_csv
    from bootstrap.backtest import BacktestSpec, check_spec, run_backtest
    from bootstrap.strategies import StrategyError
    from domain.market import Timeframe

    try:
        params = _params(args.param)
        try:
            timeframe = Timeframe(args.timeframe)
        except ValueError:
            known = ", ".join(t.value for t in Timeframe)
            raise InputError(f"--timeframe must be one of {known}") from None
        try:
            cash = Decimal(args.cash)
            if not cash.is_finite() or cash <= 0:
                raise InvalidOperation
        except InvalidOperation:
            raise InputError(f"--cash must be a positive amount, got {args.cash!r}") from None
        commission = _commission(args.commission)
        symbols = _symbols(args.symbols)
        if args.data is not None:
            if args.start or args.end:
                raise InputError("--start/--end go with --symbols, not with --data")
            if len(symbols) > 1:
                raise InputError("--data holds one symbol: give at most one in --symbols")
            path = Path(args.data)
            symbol = symbols[0] if symbols else re.sub(r"[^A-Z0-9.]", "", path.stem.upper())[:10]
            if not symbol or not symbol[0].isalpha():
                raise InputError(f"cannot name a symbol after {path.name}: use --symbols")
            bars = {symbol: read_csv(path, symbol, timeframe)}
        else:
            if not symbols or not args.start or not args.end:
                raise InputError("give --data FILE.csv, or --symbols with --start and --end")
            start, end = _day(args.start, "--start"), _day(args.end, "--end")
            if start > end:
                raise InputError(f"--start {start} is after --end {end}")
            bars = {}  # read below, after the strategy is known to be valid
        spec = BacktestSpec(
            strategy=args.name,
            bars=bars,
            params=params,
            timeframe=timeframe,
            cash=cash,
            commission=commission,
            commission_text=args.commission,
            market_fill=args.market_fill,
        )
        if args.data is None:
            from bootstrap.strategies import load_strategy

            load_strategy(args.name, params)
            spec.bars = asyncio.run(_market_bars(symbols, timeframe, start, end))
        check_spec(spec)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} is a file, not a directory")
    except (InputError, BacktestInputError, StrategyError) as err:
        return _fail(str(err))

    progress = _Bar(started=time.monotonic())
    report = asyncio.run(run_backtest(spec, progress))
    from activities.backtest.html import write_html
    from activities.backtest.report import summary_rows, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    write_html(report, spec.bars, out / "report.html")
    rows = summary_rows(report)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>20}")
    print(f"report: {out / 'report.json'}  {out / 'report.html'}")
    return 0


# -- live strategies -----------------------------------------------------------------------


def schedule_id(name: str, given: str | None) -> str:
    base = given or re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    return base if base.startswith(SCHEDULE_PREFIX) else SCHEDULE_PREFIX + base


def strategy_schedule(
    workflow_input: Any, every: int, calendar_mode: bool, task_queue: str, sid: str
) -> Schedule:
    """Every `every` minutes in the session (weekdays 09:30-16:00 New York in calendar
    mode, around the clock in always-open mode); a run that would overlap the previous one
    is skipped. Each run also checks the session itself (holidays, early closes)."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
    )

    from worker.schedules import TIME_ZONE, intraday_times
    from workflows.strategy import StrategyRunWorkflow

    return Schedule(
        action=ScheduleActionStartWorkflow(
            StrategyRunWorkflow.run,
            workflow_input,
            id=f"{sid}-run",
            task_queue=task_queue,
            execution_timeout=timedelta(hours=1),
        ),
        spec=ScheduleSpec(calendars=intraday_times(calendar_mode, every), time_zone_name=TIME_ZONE),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=every)
        ),
    )


async def _default_portfolio(pool: Any) -> UUID:
    rows = await pool.fetch("SELECT id FROM portfolios ORDER BY created_at LIMIT 2")
    if len(rows) != 1:
        raise InputError("several portfolios (or none): name one with --portfolio")
    return UUID(str(rows[0]["id"]))


async def _start(args: argparse.Namespace) -> int:
    from temporalio.client import ScheduleAlreadyRunningError

    from bootstrap.strategies import StrategyError, load_strategy
    from contracts.strategies import StrategyRunInput
    from domain.market import Timeframe
    from worker.operator_cli import connected

    try:
        params = _params(args.param)
        load_strategy(args.name, params)
        symbols = _symbols(args.symbols)
        if not symbols:
            raise InputError("--symbols needs at least one symbol")
        every = _every_minutes(args.every)
        timeframe = Timeframe(args.timeframe)
    except (InputError, StrategyError, ValueError) as err:
        return _fail(str(err))
    async with connected() as c:
        try:
            portfolio = args.portfolio or await _default_portfolio(c.db)
            if await c.db.fetchval("SELECT 1 FROM portfolios WHERE id = $1", portfolio) is None:
                raise InputError(f"portfolio {portfolio} not found")
        except InputError as err:
            return _fail(str(err))
        sid = schedule_id(args.name, args.id)
        workflow_input = StrategyRunInput(
            strategy=args.name,
            symbols=symbols,
            portfolio_id=portfolio,
            params=params,
            timeframe=timeframe,
        )
        schedule = strategy_schedule(
            workflow_input,
            every,
            c.settings.market_session_mode == "calendar",
            c.settings.task_queue,
            sid,
        )
        try:
            await c.temporal.create_schedule(sid, schedule)
        except ScheduleAlreadyRunningError:
            return _fail(f"schedule {sid} exists: stop it first, or pass --id")
    print(f"started {sid}: {args.name} on {','.join(symbols)} every {every}m in the session")
    return 0


async def _list(args: argparse.Namespace) -> int:
    from worker.operator_cli import connected

    async with connected(database=False) as c:
        found = []
        async for entry in await c.temporal.list_schedules():
            if entry.id.startswith(SCHEDULE_PREFIX):
                found.append(entry.id)
    for sid in sorted(found):
        print(sid)
    if not found:
        print("no strategy is scheduled")
    return 0


async def _show(args: argparse.Namespace) -> int:
    from temporalio.service import RPCError

    from worker.operator_cli import connected

    sid = schedule_id(args.name, None)
    async with connected() as c:
        try:
            described = await c.temporal.get_schedule_handle(sid).describe()
        except RPCError:
            return _fail(f"no schedule {sid}")
        rows = await c.db.fetch(
            """
            SELECT run_id, status, note, started_at, report FROM strategy_runs
            WHERE run_id LIKE $1 ORDER BY started_at DESC LIMIT $2
            """,
            f"{sid}-run%",
            args.last,
        )
    action: Any = described.schedule.action
    args_in = action.args[0] if getattr(action, "args", None) else None
    print(f"schedule {sid}  paused={described.schedule.state.paused}")
    if args_in is not None:
        print(f"  input: {args_in}")
    for row in rows:
        orders = len((row["report"] or {}).get("orders", []))
        note = f" ({row['note']})" if row["note"] else ""
        print(f"  {row['started_at'].isoformat()}  {row['status']}{note}  orders={orders}")
    if not rows:
        print("  no run recorded yet")
    return 0


async def _stop(args: argparse.Namespace) -> int:
    from temporalio.service import RPCError

    from worker.operator_cli import connected

    sid = schedule_id(args.name, None)
    async with connected(database=False) as c:
        try:
            await c.temporal.get_schedule_handle(sid).delete()
        except RPCError:
            return _fail(f"no schedule {sid}")
    print(f"stopped {sid}")
    return 0


def _run(command: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        return int(asyncio.run(command(args)))

    return handler


def register(subparsers: Any) -> None:
    """Add `strategy` and `backtest` to `trading`."""
    strategy = subparsers.add_parser("strategy", help="run strategies live on a schedule")
    actions = strategy.add_subparsers(dest="strategy_action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="schedule a strategy inside market hours")
    start.add_argument("name", help="sma_crossover, breakout, or module.path:ClassName")
    start.add_argument("--symbols", required=True, help="comma-separated, e.g. AAPL,MSFT")
    start.add_argument("--every", default="5m", help="5m, 15m, 1h ... (divides an hour)")
    start.add_argument("--param", action="append", help="strategy parameter k=v (repeatable)")
    start.add_argument("--portfolio", type=UUID, default=None, help="default: the only one")
    start.add_argument("--timeframe", default="5min", help="bars the strategy reads")
    start.add_argument("--id", default=None, help="schedule id (default strategy-NAME)")
    start.set_defaults(handler=_run(_start))
    actions.add_parser("list", help="scheduled strategies").set_defaults(handler=_run(_list))
    show = actions.add_parser("show", help="a strategy's schedule and its latest runs")
    show.add_argument("name", help="the strategy name or schedule id")
    show.add_argument("--last", type=int, default=10)
    show.set_defaults(handler=_run(_show))
    stop = actions.add_parser("stop", help="delete a strategy's schedule")
    stop.add_argument("name", help="the strategy name or schedule id")
    stop.set_defaults(handler=_run(_stop))

    backtest = subparsers.add_parser(
        "backtest", help="run a strategy over history through the real workflows"
    )
    backtest.add_argument("name", help="sma_crossover, breakout, or module.path:ClassName")
    backtest.add_argument("--data", default=None, help="CSV: Date,Open,High,Low,Close,Volume")
    backtest.add_argument("--symbols", default=None, help="with --start/--end: market data")
    backtest.add_argument("--start", default=None, help="first day, YYYY-MM-DD")
    backtest.add_argument("--end", default=None, help="last day, YYYY-MM-DD")
    backtest.add_argument("--timeframe", default="1day")
    backtest.add_argument("--cash", default="10000")
    backtest.add_argument(
        "--commission", default="0", help="fraction of the notional, or a COMMISSION JSON model"
    )
    backtest.add_argument("--param", action="append", help="strategy parameter k=v (repeatable)")
    backtest.add_argument(
        "--market-fill",
        choices=("open", "close"),
        default="open",
        help="market orders fill at the next bar's open (default) or close",
    )
    backtest.add_argument("--out", default="backtest-report", help="output directory")
    backtest.set_defaults(handler=_backtest)
