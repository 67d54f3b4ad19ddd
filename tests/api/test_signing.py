"""Request signing, replay protection and key storage, as docs/signing.md fixes them."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from activities.store import keys as api_keys
from api.client import AsyncTradingClient
from api.signing import API_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.api.conftest import MASTER_KEY, Api, Caller, assert_envelope, build_app, fresh_id

pytestmark = pytest.mark.integration

ORDER = {"symbol": "AAPL", "quantity": "1", "side": "buy", "time_in_force": "gtc"}


async def test_a_correctly_signed_request_passes(api: Api):
    response = await api.caller.get("/api/v1/portfolio")

    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(api.caller.portfolio_id)


async def test_the_signature_is_the_hmac_of_the_documented_message(api: Api):
    """Sign by hand exactly as docs/signing.md writes it, with no helper from this project."""
    import hashlib
    import hmac

    timestamp = str(int(time.time()))
    body = '{"symbol":"AAPL","quantity":"1","side":"buy","client_order_id":"by-hand-1"}'
    message = f"POST|/api/v1/orders|{body}|{timestamp}"
    signature = hmac.new(api.caller.secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    response = await api.http.post(
        "/api/v1/orders",
        content=body,
        headers={
            "X-API-Key": api.caller.key_id,
            "X-Timestamp": timestamp,
            "X-Signature": signature,
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 201, response.text

    query_target = "/api/v1/orders?status=open&limit=5"
    message = f"GET|{query_target}||{timestamp}"
    signature = hmac.new(api.caller.secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    headers = {"X-API-Key": api.caller.key_id, "X-Timestamp": timestamp, "X-Signature": signature}
    listed = await api.http.get(query_target, headers=headers)
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize("header", [API_KEY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
async def test_a_missing_header_is_refused(api: Api, header: str):
    response = await api.caller.get("/api/v1/portfolio", headers={header: ""})

    error = assert_envelope(response, 401, "AUTHENTICATION_ERROR")
    assert error["details"]["missing"] == [header]


async def test_an_unsigned_request_is_refused_before_its_body_is_read(api: Api):
    response = await api.http.post("/api/v1/orders", content=b"{not json")

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")  # not the parser's 422


@pytest.mark.parametrize(
    ("header", "value"),
    [(TIMESTAMP_HEADER, "yesterday"), (TIMESTAMP_HEADER, "1.5"), (SIGNATURE_HEADER, "abc123")],
)
async def test_a_malformed_header_is_refused(api: Api, header: str, value: str):
    response = await api.caller.get("/api/v1/portfolio", headers={header: value})

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")


async def test_a_tampered_body_is_refused_and_places_nothing(api: Api):
    signed = b'{"symbol":"AAPL","quantity":"1","side":"buy","client_order_id":"t-1"}'
    sent = b'{"symbol":"AAPL","quantity":"500","side":"buy","client_order_id":"t-1"}'

    response = await api.caller.post("/api/v1/orders", content=sent, signed_body=signed)

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")
    assert await api.counts() == (0, 0)
    assert not await api.workflow_exists("t-1")


async def test_a_tampered_query_is_refused(api: Api):
    response = await api.caller.get(
        "/api/v1/orders?status=filled", signed_target="/api/v1/orders?status=open"
    )
    assert_envelope(response, 401, "AUTHENTICATION_ERROR")


async def test_a_signature_without_the_query_string_is_refused(api: Api):
    response = await api.caller.get("/api/v1/orders?limit=5", signed_target="/api/v1/orders")
    assert_envelope(response, 401, "AUTHENTICATION_ERROR")


async def test_a_get_signed_as_sent_with_an_empty_query_string_passes(api: Api):
    """PATH is the target as sent: `/api/v1/portfolio?` is signed with its `?`."""
    response = await api.caller.get("/api/v1/portfolio?")

    assert api.caller.sent[-1].url.raw_path == b"/api/v1/portfolio?"
    assert response.status_code == 200, response.text


async def test_a_trailing_question_mark_signed_by_hand_passes_over_the_wire(api: Api, server: str):
    """Through uvicorn, whose request line keeps the `?` that ASGI then drops."""
    import hashlib
    import hmac

    timestamp = str(int(time.time()))
    message = f"GET|/api/v1/orders?||{timestamp}"
    signature = hmac.new(api.caller.secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    headers = {"X-API-Key": api.caller.key_id, "X-Timestamp": timestamp, "X-Signature": signature}
    async with httpx.AsyncClient(base_url=server) as http:
        request = http.build_request("GET", "/api/v1/orders?", headers=headers)
        response = await http.send(request)

    assert request.url.raw_path == b"/api/v1/orders?"  # what went on the request line
    assert response.status_code == 200, response.text


async def test_the_python_client_signs_a_trailing_question_mark_as_the_server_checks_it(
    api: Api, server: str
):
    async with AsyncTradingClient(server, api.caller.key_id, api.caller.secret) as client:
        response = await client.http.get("/api/v1/portfolio?")

    assert response.status_code == 200, response.text


async def test_an_empty_query_string_verifies_whether_or_not_the_signer_kept_its_mark(api: Api):
    """The server cannot see an empty query's `?` (ASGI drops it): both forms name the same
    request, so a signature over either passes."""
    with_mark = await api.caller.get("/api/v1/portfolio", signed_target="/api/v1/portfolio?")
    without_mark = await api.caller.get("/api/v1/portfolio?", signed_target="/api/v1/portfolio")

    assert with_mark.status_code == without_mark.status_code == 200


async def test_a_signature_over_an_empty_query_string_does_not_cover_a_query(api: Api):
    response = await api.caller.get("/api/v1/orders?status=filled", signed_target="/api/v1/orders?")

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")


async def test_a_replay_under_the_other_form_of_an_empty_query_is_refused(api: Api):
    """The replay guard keys on the signature, so adding a `?` does not make a replay new."""
    first = await api.caller.post("/api/v1/orders", json=ORDER)
    captured = api.caller.sent[-1]
    replay = await api.http.send(
        api.http.build_request(
            "POST", "/api/v1/orders?", content=captured.content, headers=captured.headers
        )
    )

    assert first.status_code == 201, first.text
    error = assert_envelope(replay, 401, "AUTHENTICATION_ERROR")
    assert "replayed" in error["message"]
    orders, _ = await api.counts()
    assert orders == 1


async def test_a_signature_for_another_method_is_refused(api: Api):
    placed = await api.place(order_type="limit", limit_price="100.00")
    target = f"/api/v1/orders/{placed.json()['order_id']}"
    timestamp = int(time.time())
    headers = {
        API_KEY_HEADER: api.caller.key_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(api.caller.secret, "GET", target, b"", timestamp),
    }
    response = await api.http.delete(target, headers=headers)

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")


async def test_an_unknown_key_and_a_wrong_secret_get_the_same_answer(api: Api):
    unknown = Caller(api.http, "tk_unknownunknown", api.caller.secret, api.caller.portfolio_id)
    wrong_secret = await unknown.get("/api/v1/portfolio", secret="0" * 64)
    no_such_key = await unknown.get("/api/v1/portfolio")
    mine_wrong = await api.caller.get("/api/v1/portfolio", secret="f" * 64)

    messages = {
        assert_envelope(response, 401, "AUTHENTICATION_ERROR")["message"]
        for response in (wrong_secret, no_such_key, mine_wrong)
    }
    assert messages == {"invalid API key or signature"}  # never says which part was wrong


@pytest.mark.parametrize(("offset", "status"), [(-31, 401), (31, 401), (-29, 200), (29, 200)])
async def test_timestamps_outside_the_clock_skew_are_refused_both_ways(
    api: Api, offset: int, status: int
):
    response = await api.caller.get("/api/v1/portfolio", timestamp=int(time.time()) + offset)

    assert response.status_code == status, response.text
    if status == 401:
        error = assert_envelope(response, 401, "AUTHENTICATION_ERROR")
        assert "clock skew" in error["message"]
        assert abs(error["details"]["server_time"] - time.time()) < 5


async def test_the_clock_skew_comes_from_settings(stack):  # type: ignore[no-untyped-def]
    app = build_app(stack, api_clock_skew_seconds=5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        key_id, secret = await api_keys.create_key(stack.pool, stack.portfolio.id, MASTER_KEY)
        caller = Caller(http, key_id, secret, stack.portfolio.id)
        stale = await caller.get("/api/v1/portfolio", timestamp=int(time.time()) - 10)
    assert_envelope(stale, 401, "AUTHENTICATION_ERROR")


async def test_a_replayed_post_is_refused_and_places_no_second_order(api: Api):
    # No client_order_id: the server would generate a new one, so a replay that got through
    # would be a second order.
    first = await api.caller.post("/api/v1/orders", json=ORDER)
    replay = await api.caller.resend(api.caller.sent[-1])

    assert first.status_code == 201, first.text
    error = assert_envelope(replay, 401, "AUTHENTICATION_ERROR")
    assert "replayed" in error["message"]
    orders, _ = await api.counts()
    assert orders == 1


async def test_a_replay_through_a_second_api_process_is_refused(api: Api):
    """Two app instances share only the database, as two API processes would."""
    second = build_app(api.stack)
    first = await api.caller.post("/api/v1/orders", json=ORDER)
    captured = api.caller.sent[-1]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(second), base_url="http://second"
    ) as other:
        replay = await other.send(
            other.build_request(
                "POST", "/api/v1/orders", content=captured.content, headers=captured.headers
            )
        )

    assert first.status_code == 201
    assert_envelope(replay, 401, "AUTHENTICATION_ERROR")
    orders, _ = await api.counts()
    assert orders == 1


async def test_a_replayed_delete_changes_nothing(api: Api):
    """DELETE is idempotent, so not recorded: its replay finds the order already canceled."""
    placed = await api.place(order_type="limit", limit_price="100.00")
    canceled = await api.caller.delete(f"/api/v1/orders/{placed.json()['order_id']}")
    replay = await api.caller.resend(api.caller.sent[-1])

    assert canceled.status_code == 200, canceled.text
    assert_envelope(replay, 409, "CONFLICT")


async def test_identical_reads_in_one_second_both_pass(api: Api):
    """Reads are not recorded: polling an order twice a second is not an attack."""
    first = await api.caller.get("/api/v1/portfolio")
    again = await api.caller.resend(api.caller.sent[-1])

    assert first.status_code == again.status_code == 200


async def test_expired_signatures_are_purged(api: Api):
    await api.pool.execute(
        "INSERT INTO api_request_signatures (digest, key_id, expires_at) "
        "VALUES ($1, $2, now() - interval '1 hour')",
        b"x" * 32,
        api.caller.key_id,
    )
    await api.caller.post("/api/v1/orders", json=ORDER | {"client_order_id": fresh_id()})

    left = await api.pool.fetchval("SELECT count(*) FROM api_request_signatures")
    assert left == 1  # the POST's own signature; the expired one is gone


async def test_a_revoked_key_is_refused(api: Api):
    assert await api_keys.revoke_key(api.pool, api.caller.key_id)

    response = await api.caller.get("/api/v1/portfolio")

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")


async def test_a_rotated_master_key_refuses_keys_made_with_the_old_one(api: Api, caplog):  # type: ignore[no-untyped-def]
    rotated = build_app(api.stack, master_key=b"another-master-key-0123456789abcdef0123")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(rotated), base_url="http://r"
    ) as http:
        caller = Caller(http, api.caller.key_id, api.caller.secret, api.caller.portfolio_id)
        with caplog.at_level(logging.INFO):
            response = await caller.get("/api/v1/portfolio")

    assert_envelope(response, 401, "AUTHENTICATION_ERROR")
    assert "rotated" in caplog.text


async def test_no_secret_is_stored_and_none_reaches_logs_or_answers(api: Api, caplog):  # type: ignore[no-untyped-def]
    row = await api.pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", api.caller.key_id)
    assert api.caller.secret not in [str(value) for value in row.values()]
    assert row["secret_hash"] == api_keys.secret_hash(api.caller.secret)

    with caplog.at_level(logging.DEBUG):
        answers = [
            await api.caller.get("/api/v1/portfolio", secret="0" * 64),
            await api.caller.get("/api/v1/nowhere"),
            await api.place(quantity="-1"),
            await api.place(),
        ]
    for answer in answers:
        assert api.caller.secret not in answer.text
    assert api.caller.secret not in caplog.text
    assert MASTER_KEY.decode() not in caplog.text


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/openapi.json", "/docs"])
async def test_service_routes_are_not_signed(api: Api, path: str):
    response = await api.http.get(path)

    assert response.status_code == 200, response.text
