"""Authentication of /api/v1 requests: body size limit, HMAC signature, replay guard, and
then the body rules of api/body.py.

Done in an ASGI middleware rather than a route dependency because it must see the raw body
before FastAPI parses it: a request is authenticated before anything about its content is
answered (a malformed JSON body from an unknown caller gets 401, not a parser's 422). The
order of the answers is fixed: 413 (too large to read), 401 (the signature covers the
body), then 415 (not application/json in UTF-8) and 422 (not strict JSON) from
`check_body`, and only then FastAPI's routing and validation.

The signed target: api/signing.py (`targets`) says which forms of the target a request
reported by the ASGI server may have been signed with.

Replays: a captured request re-sent inside the clock-skew window carries a valid signature.
For non-idempotent methods (POST) the digest of every accepted signature is inserted into
PostgreSQL (`api_request_signatures`, primary key on the digest) before the handler runs,
so a replay fails on any API process sharing the database. Idempotent methods (GET, HEAD,
DELETE, ...) are not recorded: a replay of one does nothing its original did not already
do (a canceled order stays canceled), and two identical requests in the same second (a
client polling an order, a cancel typed twice) must not refuse each other. The Python
client gives every order a fresh client_order_id, so two intended orders never share a
signature; a retry of the same POST must come a second later, with a new timestamp.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import asyncpg
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activities.store import keys as api_keys
from api import signing
from api.body import check_body
from api.deps import Principal
from api.errors import ApiError, error_response
from api.metrics import Metrics
from api.ratelimit import AddressGuard, rate_limit_exceeded
from bootstrap.resources import is_outage
from domain.errors import ErrorCode

log = logging.getLogger("trading.api.security")

SIGNED_PREFIX = "/api/v1"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")
REJECTED = "invalid API key or signature"  # one message: do not say which part was wrong
KEY_CACHE_SECONDS = 10.0
KEY_CACHE_SIZE = 10_000
LOOKUPS_PER_ADDRESS = 8


class _CountedLog:
    """One log line per LOG_EVERY seconds for a repeated refusal, with the count."""

    LOG_EVERY = 30.0

    def __init__(self) -> None:
        self._last = float("-inf")
        self._held = 0

    def failed(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.LOG_EVERY:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        suffix = (
            f" ({held} more refusals like it in the last {self.LOG_EVERY:.0f} s)" if held else ""
        )
        log.info("refused %s" + suffix, message % args)


class Authenticator:
    """Checks one signed request and names its caller, or raises a 401 ApiError."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        master_key: bytes,
        skew_seconds: int,
        clock: Callable[[], datetime],
        metrics: Metrics,
    ) -> None:
        self.pool = pool
        self._master_key = master_key
        self.skew = skew_seconds
        self.clock = clock
        self.metrics = metrics
        self._next_purge = 0.0
        # key id -> (expires, key or None): see `_key`
        self._keys: dict[str, tuple[float, api_keys.ApiKey | None]] = {}
        self._inflight: dict[str, asyncio.Future[api_keys.ApiKey | None]] = {}
        # client address -> its slots for lookups of distinct key ids (and who waits on them)
        self._lookups: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        self._refused_keys = _CountedLog()

    def _slots_of(self, address: str) -> asyncio.Semaphore:
        slots, users = self._lookups.setdefault(
            address, (asyncio.Semaphore(LOOKUPS_PER_ADDRESS), [0])
        )
        users[0] += 1
        return slots

    def _release_slots(self, address: str, slots: asyncio.Semaphore) -> None:
        entry = self._lookups.get(address)
        if entry is not None and entry[0] is slots:
            entry[1][0] -= 1
            if not entry[1][0]:
                del self._lookups[address]

    async def _key(
        self, key_id: str, *, fresh: bool = False, address: str = "-"
    ) -> tuple[api_keys.ApiKey | None, bool]:
        """The key, from a cache of KEY_CACHE_SECONDS (at most KEY_CACHE_SIZE entries) of
        both found and unknown keys: a flood of unknown or wrongly signed key ids costs no
        database lookup after the first. A signature that verifies against a cached key
        re-reads it (`fresh`), so revocation is immediate for every accepted request.
        Concurrent lookups of one key id share one query, and one client address has at
        most LOOKUPS_PER_ADDRESS lookups of distinct key ids in flight; more wait their turn
        (a flood of made-up key ids cannot fill the pool, while a gateway presenting many
        keys from one address is only queued, never refused; the address's budget of
        failed signatures is what refuses a flood; a `fresh` re-read, which follows a
        valid signature, is not held back). Returns the key and whether it came from the cache."""
        now = time.monotonic()
        cached = None if fresh else self._keys.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1], True
        pending = self._inflight.get(key_id)
        if pending is None:
            # A re-read after a valid signature is never held back; any other lookup waits
            # for one of the address's LOOKUPS_PER_ADDRESS slots.
            slots = None if fresh else self._slots_of(address)
            if slots is not None:
                await slots.acquire()
            try:
                pending = self._inflight.get(key_id)  # another request may have started it
                if pending is None:
                    pending = asyncio.ensure_future(api_keys.lookup_key(self.pool, key_id))
                    self._inflight[key_id] = pending
                try:
                    key = await asyncio.shield(pending)
                finally:
                    if self._inflight.get(key_id) is pending:
                        del self._inflight[key_id]
            finally:
                if slots is not None:
                    slots.release()
                    self._release_slots(address, slots)
        else:
            key = await asyncio.shield(pending)
        self._keys.pop(key_id, None)
        if len(self._keys) >= KEY_CACHE_SIZE:
            for name, (expires, _) in list(self._keys.items()):
                if expires <= now:
                    del self._keys[name]
            while len(self._keys) >= KEY_CACHE_SIZE:
                del self._keys[next(iter(self._keys))]
        self._keys[key_id] = (now + KEY_CACHE_SECONDS, key)
        return key, False

    def _refuse(self, reason: str, message: str, **details: object) -> ApiError:
        self.metrics.auth_failures.labels(reason).inc()
        return ApiError(401, ErrorCode.AUTHENTICATION_ERROR, message, details)

    async def authenticate(
        self,
        method: str,
        targets: Sequence[bytes],
        body: bytes,
        headers: Headers,
        address: str = "-",
    ) -> Principal:
        """`targets`: the forms of the request target the signature may cover (see
        `signing.targets`)."""
        key_id = headers.get(signing.API_KEY_HEADER)
        timestamp = headers.get(signing.TIMESTAMP_HEADER)
        signature = headers.get(signing.SIGNATURE_HEADER)
        missing = [
            name
            for name, value in (
                (signing.API_KEY_HEADER, key_id),
                (signing.TIMESTAMP_HEADER, timestamp),
                (signing.SIGNATURE_HEADER, signature),
            )
            if not value
        ]
        if missing or key_id is None or timestamp is None or signature is None:
            raise self._refuse(
                "missing", f"missing {', '.join(missing)}: sign the request", missing=missing
            )
        if not TIMESTAMP.match(timestamp):
            raise self._refuse("malformed", "X-Timestamp must be unix seconds (an integer)")
        if not SIGNATURE.match(signature):
            raise self._refuse("malformed", "X-Signature must be 64 hexadecimal digits")
        now = self.clock()
        drift = int(timestamp) - int(now.timestamp())
        if abs(drift) > self.skew:
            when = "in the future" if drift > 0 else "old"
            raise self._refuse(
                "stale",
                f"X-Timestamp is {abs(drift)} s {when}; the allowed clock skew is {self.skew} s",
                server_time=int(now.timestamp()),
            )
        key, cached = await self._key(key_id, address=address)
        if key is None or key.revoked:
            self._refused_keys.failed("unknown or revoked key %r", key_id[:64])
            raise self._refuse("unknown_key", REJECTED)
        if not api_keys.matches(key, self._master_key):
            log.warning("key %s does not match the master key (was it rotated?)", key.key_id)
            raise self._refuse("master_key_mismatch", REJECTED)
        secret = api_keys.derive_secret(self._master_key, key.key_id)
        if not signing.verify(secret, method, targets, body, timestamp, signature):
            raise self._refuse("bad_signature", REJECTED)
        if cached:
            # A valid signature on a key from the cache: read the key again, so that a
            # revocation takes effect on the next request, not after the cache's TTL.
            key, _ = await self._key(key_id, fresh=True)
            if key is None or key.revoked:
                raise self._refuse("unknown_key", REJECTED)
        if method not in IDEMPOTENT_METHODS:
            expires_at = datetime.fromtimestamp(int(timestamp), now.tzinfo) + timedelta(
                seconds=self.skew
            )
            fresh = await api_keys.remember_signature(
                self.pool, key.key_id, signature.lower(), expires_at
            )
            if not fresh:
                raise self._refuse("replay", "replayed request: this signature was already used")
            await self._purge(now)
        return Principal(key.key_id, key.portfolio_id)

    async def _purge(self, now: datetime) -> None:
        """Forget expired signatures, at most once per skew window per process. The margin
        of one more window covers API processes whose clocks differ a little."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.skew
        try:
            await api_keys.purge_signatures(self.pool, now - timedelta(seconds=self.skew))
        except Exception as error:
            if not is_outage(error) and not isinstance(error, asyncpg.PostgresError):
                raise
            log.warning("purging old request signatures failed (%s); retrying later", error)


class SignatureMiddleware:
    """Buffers the body (refusing more than `max_body_bytes` with 413), then authenticates
    every /api/v1 request, hands the principal to the routes in `scope["state"]`, and
    checks its body against api/body.py's rules (415, 422)."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        max_body_bytes: int,
        clock: Callable[[], datetime],
        addresses: AddressGuard | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.addresses = addresses or AddressGuard()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
            path: str = scope["path"]
            if path == SIGNED_PREFIX or path.startswith(SIGNED_PREFIX + "/"):
                body = await self._admit(scope, body)
        except ApiError as error:
            await error_response(scope, error, self.clock())(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _admit(self, scope: Scope, body: bytes) -> bytes:
        """Address guard (429, before any key lookup), signature (401, counted against the
        address), then the body rules (415/422, which cost the portfolio a token of the
        route's class like any request: a flood of malformed bodies is rate limited; see
        deps.refuse_malformed_body). Returns the body the app gets."""
        client = scope.get("client")
        address = str(client[0]) if client else "-"
        wait = self.addresses.blocked(address)
        if wait:
            self.authenticator.metrics.rate_limited.labels(AddressGuard.ROUTE_CLASS).inc()
            rule = self.addresses.limiter.rules[AddressGuard.ROUTE_CLASS]
            raise rate_limit_exceeded(AddressGuard.ROUTE_CLASS, wait, rule, scope="address")
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        targets = signing.targets(raw_path, scope.get("query_string", b""))
        headers = Headers(scope=scope)
        try:
            principal = await self.authenticator.authenticate(
                scope["method"], targets, body, headers, address
            )
        except ApiError as error:
            if error.status == 401:
                self.addresses.failed(address)
            raise
        scope.setdefault("state", {})["principal"] = principal
        try:
            check_body(headers, body)
        except ApiError as error:
            # Refused by deps.refuse_malformed_body once routed, after it took the token.
            scope["state"]["body_error"] = error
            return b""
        return body

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large(self) -> ApiError:
        limit = self.max_body_bytes
        reason = f"the request body is larger than {limit} bytes"
        return ApiError(
            413,
            ErrorCode.VALIDATION_ERROR,
            reason,
            {"field": "body", "reason": reason, "max_bytes": limit},
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the buffered body once, then defers to the server's."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
