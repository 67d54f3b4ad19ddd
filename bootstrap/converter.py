"""How every payload crosses Temporal: JSON written and read by pydantic, so Decimal,
datetime, UUID, enums and dataclasses arrive exactly as they left (Decimal as a string, never
a float). Every client, worker and replayer of the project uses DATA_CONVERTER.

It is temporalio.contrib.pydantic's converter with one change: the pydantic TypeAdapters are
cached once per process instead of once per converter. The workflow worker builds a fresh
payload converter for every workflow run (the run's sandbox gets its own), so the SDK's
per-converter cache started empty for every order, and building the adapters (pydantic's
schema generation for each dataclass) was a tenth of the worker's CPU per order
(py-spy over `bench/order_bench.py`'s setup). A TypeAdapter is immutable once built and
safe to share between threads; the payload types live in `contracts` and `domain`, which
the workflows import passed through the sandbox, so every run shares the same type objects
and hits the same entries. (Here, not in `contracts`, which import only the standard
library and the domain.)
"""

from __future__ import annotations

import functools
from typing import Any

import temporalio.api.common.v1
from pydantic import TypeAdapter
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

# Bounded: a type that is not shared between runs (one defined inside a workflow module,
# re-created in every sandbox) only ever takes a slot until it is evicted.
_cached_adapter = functools.lru_cache(maxsize=512)(TypeAdapter)


def type_adapter(hint: Any) -> TypeAdapter[Any]:
    """The process-wide TypeAdapter for `hint`; an unhashable hint gets an uncached one."""
    try:
        hash(hint)
    except TypeError:
        return TypeAdapter(hint)
    return _cached_adapter(hint)


class SharedAdapterJSONConverter(PydanticJSONPlainPayloadConverter):
    """The SDK's pydantic JSON converter, reading through the process-wide adapter cache."""

    def from_payload(
        self, payload: temporalio.api.common.v1.Payload, type_hint: type | None = None
    ) -> Any:
        return type_adapter(Any if type_hint is None else type_hint).validate_json(payload.data)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default encodings (null, binary, protobuf), with JSON through pydantic."""

    def __init__(self) -> None:
        json = SharedAdapterJSONConverter()
        super().__init__(
            *(
                json if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)
