"""Request signing as docs/signing.md fixes it, shared by the server and the Python client.

    message   = f"{METHOD}|{PATH}|{BODY}|{TIMESTAMP}"
    signature = hex(HMAC_SHA256(api_secret, message))

PATH is the request target exactly as sent on the request line: the path as the client
encoded it, then the query string with its `?`. Nothing is normalised: no percent-decoding,
no reordering of parameters, and a `?` with nothing after it is part of the target
(`/api/v1/orders?` is signed as `GET|/api/v1/orders?||...`). BODY is the raw body. Both
sides work on bytes: for a UTF-8 body that is exactly the contract's string, and nothing is
ever decoded and re-encoded on the way, so the two sides cannot disagree.

The client signs the target it writes on the request line (httpx's `URL.raw_path`).

The server cannot see an empty query's `?`: an ASGI server hands the application the path
and the query string separately (`raw_path`, `query_string`) and drops a `?` that has
nothing after it. So for a target without a query string the server accepts a signature
over either form, with and without the trailing `?` (`targets`): the one the client sent is
among them. Both forms name the same request, so neither lets a signature be moved to
another request; the replay guard keys on the signature itself, so a replay under the
other form is refused too. A target with a query string has exactly one form.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

API_KEY_HEADER = "X-API-Key"
TIMESTAMP_HEADER = "X-Timestamp"
SIGNATURE_HEADER = "X-Signature"


def message(method: str, target: str | bytes, body: bytes, timestamp: int | str) -> bytes:
    path = target if isinstance(target, bytes) else target.encode("ascii")
    return b"|".join([method.upper().encode("ascii"), path, body, str(timestamp).encode("ascii")])


def sign(secret: str, method: str, target: str | bytes, body: bytes, timestamp: int | str) -> str:
    digest = hmac.new(secret.encode("utf-8"), message(method, target, body, timestamp), "sha256")
    return digest.hexdigest()


def signed_headers(
    key_id: str, secret: str, method: str, target: str | bytes, body: bytes, timestamp: int
) -> dict[str, str]:
    """The three headers of a signed request."""
    return {
        API_KEY_HEADER: key_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, method, target, body, timestamp),
    }


def targets(raw_path: bytes, query_string: bytes) -> tuple[bytes, ...]:
    """The targets a request reported by an ASGI server may have been sent with: the path
    and its query string, or, without a query string, the path with and without a `?`."""
    if query_string:
        return (raw_path + b"?" + query_string,)
    return (raw_path, raw_path + b"?")


def verify(
    secret: str,
    method: str,
    target: str | bytes | Sequence[bytes],
    body: bytes,
    timestamp: int | str,
    given: str,
) -> bool:
    """Whether `given` signs the request under `target`, or under any of several targets
    (`targets`); constant-time comparisons, each candidate checked."""
    if not given.isascii():
        return False  # compare_digest refuses non-ASCII text; no signature contains any
    candidates = [target] if isinstance(target, str | bytes) else list(target)
    given = given.lower()
    matched = False
    for candidate in candidates:
        expected = sign(secret, method, candidate, body, timestamp)
        matched |= hmac.compare_digest(expected, given)
    return matched


__all__ = [
    "API_KEY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "message",
    "sign",
    "signed_headers",
    "targets",
    "verify",
]
