"""Bodies are application/json in UTF-8 without a BOM, nothing else (api/body.py): any other
media type, charset or encoding answers 415 UNSUPPORTED_MEDIA_TYPE and leaves nothing
behind; the signature is checked before any of it."""

from __future__ import annotations

import json
import time

import pytest

from api.signing import signed_headers
from tests.api.conftest import Api, assert_envelope

pytestmark = pytest.mark.integration

CLIENT_ORDER_ID = "media-type-1"
ORDER = {
    "symbol": "AAPL",
    "quantity": "10",
    "side": "buy",
    "time_in_force": "gtc",
    "client_order_id": CLIENT_ORDER_ID,
    "reason": "café",
}
UTF8 = json.dumps(ORDER, ensure_ascii=False).encode("utf-8")

REFUSED = [
    ("UTF-16 body, labelled", "application/json; charset=utf-16", UTF8.decode().encode("utf-16")),
    ("UTF-8 body labelled UTF-16", "application/json; charset=utf-16", UTF8),
    (
        "latin-1 body, labelled",
        "application/json; charset=latin-1",
        UTF8.decode().encode("latin-1"),
    ),
    ("ASCII label", "application/json; charset=us-ascii", json.dumps(ORDER).encode()),
    ("latin-1 body, unlabelled", "application/json", UTF8.decode().encode("latin-1")),
    ("UTF-16 body, unlabelled", "application/json", UTF8.decode().encode("utf-16")),
    ("UTF-8 with a BOM", "application/json", b"\xef\xbb\xbf" + UTF8),
    ("a JSON subtype", "application/vnd.api+json", UTF8),
    ("a JSON suffix type", "application/merge-patch+json", UTF8),
    ("plain text", "text/plain", UTF8),
    ("a form", "application/x-www-form-urlencoded", UTF8),
    ("JSON as text", "text/json", UTF8),
    ("another parameter", "application/json; charset=utf-8; version=2", UTF8),
    ("a parameter without a value", "application/json; charset", UTF8),
    ("a near miss", "application/jsonx", UTF8),
    ("utf8 without the hyphen", "application/json; charset=utf8", UTF8),
]


@pytest.mark.parametrize(
    ("content_type", "content"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_a_body_that_is_not_utf8_json_is_refused_with_415_and_leaves_nothing_behind(
    api: Api, content_type: str, content: bytes
):
    response = await api.caller.post(
        "/api/v1/orders", content=content, headers={"Content-Type": content_type}
    )

    error = assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error["details"]["field"] in ("Content-Type", "body")
    assert error["details"]["reason"]
    assert error["details"]["accepted"] == "application/json; charset=utf-8"
    assert await api.counts() == (0, 0)
    assert not await api.workflow_exists(CLIENT_ORDER_ID)


async def test_a_body_without_a_content_type_is_refused_with_415(api: Api):
    timestamp = int(time.time())
    headers = signed_headers(
        api.caller.key_id, api.caller.secret, "POST", "/api/v1/orders", UTF8, timestamp
    )

    response = await api.http.post("/api/v1/orders", content=UTF8, headers=headers)

    error = assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error["details"]["field"] == "Content-Type"
    assert await api.counts() == (0, 0)


async def test_two_content_type_headers_are_refused_with_415(api: Api):
    timestamp = int(time.time())
    signed = signed_headers(
        api.caller.key_id, api.caller.secret, "POST", "/api/v1/orders", UTF8, timestamp
    )
    headers = [*signed.items(), ("Content-Type", "application/json")]
    headers.append(("Content-Type", "text/plain"))
    request = api.http.build_request("POST", "/api/v1/orders", content=UTF8, headers=headers)

    response = await api.http.send(request)

    error = assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error["details"]["field"] == "Content-Type"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; Charset=UTF-8",
        "application/json;charset=utf-8",
        'application/json; charset="utf-8"',
        "application/json;",
    ],
)
async def test_application_json_in_utf8_is_accepted_however_it_is_spelled(
    api: Api, content_type: str
):
    response = await api.caller.post(
        "/api/v1/orders", content=UTF8, headers={"Content-Type": content_type}
    )

    assert response.status_code == 201, response.text
    assert response.json()["client_order_id"] == CLIENT_ORDER_ID


async def test_the_signature_is_checked_before_the_media_type(api: Api):
    """The body is part of what is signed: an unsigned or wrongly signed body gets 401, not
    415 (nothing about a stranger's body is answered)."""
    unsigned = await api.http.post(
        "/api/v1/orders", content=b"\xff\xfe", headers={"Content-Type": "text/plain"}
    )
    wrongly_signed = await api.caller.post(
        "/api/v1/orders",
        content=UTF8.decode().encode("utf-16"),
        headers={"Content-Type": "text/plain"},
        secret="0" * 64,
    )

    assert_envelope(unsigned, 401, "AUTHENTICATION_ERROR")
    assert_envelope(wrongly_signed, 401, "AUTHENTICATION_ERROR")


async def test_the_body_size_limit_is_checked_before_the_media_type(api: Api):
    response = await api.caller.post(
        "/api/v1/orders", content=b"x" * 20_000, headers={"Content-Type": "text/plain"}
    )

    assert_envelope(response, 413, "VALIDATION_ERROR")


async def test_a_request_without_a_body_needs_no_content_type(api: Api):
    response = await api.caller.get("/api/v1/portfolio", headers={"Content-Type": "text/plain"})

    assert response.status_code == 200, response.text


async def test_the_kill_switch_body_follows_the_same_rules(api: Api):
    content = json.dumps({"state": "halted", "reason": "test"}).encode()
    text = await api.caller.request(
        "PUT",
        "/api/v1/portfolio/trading-state",
        content=content,
        headers={"Content-Type": "text/plain"},
    )
    duplicate = await api.caller.request(
        "PUT",
        "/api/v1/portfolio/trading-state",
        content=b'{"state": "halted", "state": "active", "reason": "test"}',
    )

    assert_envelope(text, 415, "UNSUPPORTED_MEDIA_TYPE")
    error = assert_envelope(duplicate, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "state"


async def test_every_signed_operation_documents_415(api: Api):
    schema = (await api.http.get("/openapi.json")).json()

    for path, operations in schema["paths"].items():
        if path.startswith("/api/v1/"):
            for method, operation in operations.items():
                assert "415" in operation["responses"], (method, path)
