"""Request signing as DESIGN.md fixes it, shared by the server and the Python client.

    message   = f"{METHOD}|{PATH}|{BODY}|{TIMESTAMP}"
    signature = hex(HMAC_SHA256(api_secret, message))

PATH is the request target as sent (query string included) and BODY the raw body. Both
sides work on bytes: for a UTF-8 body that is exactly the contract's string, and nothing
is ever decoded and re-encoded on the way, so the two sides cannot disagree.
"""

from __future__ import annotations

import hmac

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


def verify(
    secret: str, method: str, target: str | bytes, body: bytes, timestamp: int | str, given: str
) -> bool:
    """Constant-time comparison of `given` with the expected signature."""
    if not given.isascii():
        return False  # compare_digest refuses non-ASCII text; no signature contains any
    expected = sign(secret, method, target, body, timestamp)
    return hmac.compare_digest(expected, given.lower())


__all__ = [
    "API_KEY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "message",
    "sign",
    "signed_headers",
    "verify",
]
