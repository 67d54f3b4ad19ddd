"""The rules every /api/v1 request body follows, in one place.

`check_body` runs in the signature middleware (api/security.py) once the signature checked
out, because the body is part of what is signed, and before FastAPI parses anything. A
request without a body is not checked here (a route that needs one answers 422 for it).

1. Media type. A body must come with exactly one `Content-Type: application/json`,
   optionally with `; charset=utf-8` (names and values case-insensitive, the value may be
   quoted). Any other type (text/plain, application/vnd.api+json, ...), any other charset
   (utf-16, latin-1, ...), any other parameter, or no Content-Type at all: 415
   UNSUPPORTED_MEDIA_TYPE with details.field "Content-Type".
2. Encoding. The body is UTF-8 without a byte order mark (RFC 8259 section 8.1). A BOM, or
   bytes that are not valid UTF-8, answer 415 UNSUPPORTED_MEDIA_TYPE with details.field
   "body", even under `application/json`: such a body is not in the one encoding the API
   reads, whatever its Content-Type claims, which is the same fault as a body sent in
   UTF-16 (RFC 9110 section 15.5.16 lets a 415 follow from inspecting the data). A client
   with an encoding bug so gets one answer for it, labelled or not.
3. JSON. The body is one JSON text (RFC 8259), refused with 422 VALIDATION_ERROR naming
   the field (details.field, the dotted path of object keys; "body" for the whole) when:
   - it is malformed, or nests objects and arrays more than MAX_DEPTH deep ("body");
   - an object repeats a key, at any depth, even with the same value (Python's parser
     would keep the last one silently: `"side":"buy","side":"sell"` would sell);
   - it holds NaN, Infinity or -Infinity (not JSON; Python's parser takes them);
   - a number is longer than MAX_NUMBER_CHARS characters, or too large for a double
     (`1e999999`). No field of this API needs such a number, and a long integer would
     cost the parser quadratic time before any field rule sees it.
   Each field's own range (a quantity, a price) is its schema's rule (api/schemas.py).

Once these hold, FastAPI's own parse of the same bytes gives the same value: these rules
only refuse bodies, they never change one.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.datastructures import Headers

from api.errors import ApiError, invalid, unsupported_media_type

MEDIA_TYPE = "application/json"
CHARSET = "utf-8"
MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40


def check_body(headers: Headers, body: bytes) -> None:
    """Raise the 415 or 422 ApiError for the first rule `body` breaks; nothing if none."""
    if not body:
        return
    _check_media_type(headers.getlist("content-type"))
    text = _decode(body)
    try:
        document = json.loads(
            text,
            object_pairs_hook=_Pairs,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_Constant,
        )
    except json.JSONDecodeError as err:
        raise invalid("body", f"malformed JSON: {err.msg} at line {err.lineno}") from None
    except RecursionError:
        raise _too_deep() from None
    _check_value(document, (), 0)


def _check_media_type(values: list[str]) -> None:
    if not values:
        raise unsupported_media_type(
            "Content-Type", f"a request with a body needs Content-Type: {MEDIA_TYPE}"
        )
    if len(values) > 1:
        raise unsupported_media_type("Content-Type", "send one Content-Type header, not several")
    media_type, *parameters = (part.strip() for part in values[0].split(";"))
    if media_type.lower() != MEDIA_TYPE:
        raise unsupported_media_type(
            "Content-Type", f"the body must be {MEDIA_TYPE}; no other media type is read"
        )
    for parameter in parameters:
        if not parameter:
            continue  # "application/json;" has an empty parameter list (RFC 9110 5.6.6)
        name, _, value = (part.strip() for part in parameter.partition("="))
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name.lower() != "charset" or value.lower() != CHARSET:
            raise unsupported_media_type(
                "Content-Type", f"only charset={CHARSET} is read, and no other parameter"
            )


def _decode(body: bytes) -> str:
    if body.startswith(b"\xef\xbb\xbf"):
        raise unsupported_media_type("body", "the body starts with a byte order mark; omit it")
    try:
        return body.decode(CHARSET)
    except UnicodeDecodeError as err:
        raise unsupported_media_type(
            "body", f"the body is not valid UTF-8 (byte {err.start})"
        ) from None


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its parser read it: every key, in order, duplicates kept."""


class _Number(str):
    """A JSON number's literal text, checked before anything converts it."""


class _Constant(str):
    """NaN, Infinity or -Infinity: not JSON, but Python's parser reads them."""


def _check_value(value: Any, path: tuple[str, ...], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _too_deep()
    field = ".".join(path) or "body"
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, item in value:
            if key in seen:
                where = ".".join((*path, key))
                raise invalid(where, f"duplicate key {key!r}: each key may appear once")
            seen.add(key)
            _check_value(item, (*path, key), depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, path, depth + 1)  # no index in the field, as FastAPI's errors
    elif isinstance(value, _Constant):
        raise invalid(field, f"{value} is not a JSON number")
    elif isinstance(value, _Number):
        if len(value) > MAX_NUMBER_CHARS:
            raise invalid(field, f"a number may have at most {MAX_NUMBER_CHARS} characters")
        if not math.isfinite(float(value)):
            raise invalid(field, "the number is out of range")


def _too_deep() -> ApiError:
    return invalid("body", f"the body nests more than {MAX_DEPTH} levels deep")
