"""/api/v1/events: the key's order updates as Server-Sent Events, read from the store.

Each event is one row of `order_events` (written by a trigger in the transaction that
changed the order): `id:` its id, `event:` new | partial_fill | fill | canceled | expired |
rejected | replaced, `data:` the order's JSON as it was then. A client that reconnects with
`Last-Event-ID` (the header browsers send, or the `last_event_id` query parameter) gets
every later event exactly once: the ids are committed in order per portfolio. Without it
the stream starts with events after now (`since=0` replays the whole history).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import CurrentKey, Deps, rate_limited
from api.errors import invalid, unavailable
from api.routes import API_V1
from api.schemas import OrderPublic

log = logging.getLogger("trading.api.events")

router = APIRouter(prefix=API_V1, tags=["events"])

BATCH = 200
POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


@router.get(
    "/events",
    summary="Order updates as Server-Sent Events",
    description="A `text/event-stream` of the key's order updates (`new`, `partial_fill`, "
    "`fill`, `canceled`, `expired`, `rejected`, `replaced`), each with the order's JSON. "
    "Resume with `Last-Event-ID`: every later event comes once, in order. `since=0` starts "
    "from the first event; without either, from now. `limit` ends the stream after that "
    "many events (for scripts; a browser leaves it out).",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the stream"}},
    dependencies=[Depends(rate_limited("get_positions"))],
)
async def stream_events(
    deps: Deps,
    key: CurrentKey,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=20, include_in_schema=False)
    ] = None,
    since: Annotated[int | None, Query(ge=0, description="events after this id")] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> StreamingResponse:
    after = since
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise invalid("Last-Event-ID", "must be the id of an event of this stream")
        after = int(last_event_id)
    try:
        if after is None:
            after = await deps.pool.fetchval(
                "SELECT coalesce(max(id), 0) FROM order_events WHERE portfolio_id = $1",
                key.portfolio_id,
            )
    except (OSError, asyncpg.PostgresError) as err:
        log.warning("events: store unavailable: %s", type(err).__name__)
        raise unavailable("the event store is unavailable; retry") from None
    assert after is not None
    return StreamingResponse(
        _events(deps.pool, key.portfolio_id, after, limit),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    pool: asyncpg.Pool, portfolio_id: UUID, after: int, limit: int | None
) -> AsyncIterator[bytes]:
    sent = 0
    idle = 0.0
    yield b": stream of order events\n\n"
    while limit is None or sent < limit:
        try:
            rows = await pool.fetch(
                "SELECT id, event, order_row FROM order_events "
                "WHERE portfolio_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                portfolio_id,
                after,
                BATCH if limit is None else min(BATCH, limit - sent),
            )
        except (OSError, asyncpg.PostgresError) as err:
            # The client reconnects with Last-Event-ID and misses nothing.
            log.warning("events: store unavailable, ending the stream: %s", type(err).__name__)
            return
        for row in rows:
            after = row["id"]
            sent += 1
            yield sse(row["id"], row["event"], order_json(row["order_row"]))
        if rows:
            idle = 0.0
            continue
        await asyncio.sleep(POLL_SECONDS)
        idle += POLL_SECONDS
        if idle >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield b": keepalive\n\n"


def sse(event_id: int, event: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def order_json(row: Any) -> str:
    """The stored row (jsonb, decoded without floats) as the API's order JSON."""
    fields = dict(row) if not isinstance(row, str) else json.loads(row, parse_float=Decimal)
    fields["order_id"] = fields["id"]
    fields["remaining_quantity"] = Decimal(str(fields["quantity"])) - Decimal(
        str(fields["filled_quantity"])
    )
    return OrderPublic.model_validate(fields).model_dump_json()
