"""The signed HTTP API (FastAPI), its Python client and the client commands of `trading`."""

DESCRIPTION = """\
Places and manages orders, each a durable Temporal workflow, and reads the portfolio,
positions and market data.

**Signing.** Every `/api/v1/*` request carries `X-API-Key`, `X-Timestamp` (unix seconds)
and `X-Signature`:

```
message   = f"{METHOD}|{PATH}|{BODY}|{TIMESTAMP}"   # PATH with its query string
signature = hex(HMAC_SHA256(api_secret, message))    # BODY "" when there is none
```

PATH is the request target exactly as sent: `/api/v1/orders?status=open`, and
`/api/v1/orders?` with its `?` when the query is empty (the server accepts a signature
over either form of an empty query, as it cannot see that `?`).

A timestamp more than 30 s (API_CLOCK_SKEW_SECONDS) from the server's clock, a wrong
signature, or a state-changing request replayed with a signature already used answers 401
`AUTHENTICATION_ERROR`. A key acts for one portfolio: another portfolio's ids answer 404.

**Bodies** are `application/json` (optionally `; charset=utf-8`) in UTF-8 without a BOM;
anything else answers 415 `UNSUPPORTED_MEDIA_TYPE`. A repeated key, NaN or Infinity, a
number beyond 40 characters or a double's range, or nesting deeper than 32 answers 422
`VALIDATION_ERROR` naming the field. **Amounts** are decimal strings (`"150.50"`, at most 20
digits each side of the point); enums are lower case. **Errors** use one envelope:
`{"error": {"code", "message", "details", "timestamp", "request_id"}}`.
Per-key rate limits answer 429 `RATE_LIMIT_EXCEEDED` with `Retry-After`.
"""
