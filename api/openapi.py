"""The OpenAPI document: the three signing headers as one security requirement of every
/api/v1 operation (FastAPI would list them as alternatives)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.routes import API_V1
from api.signing import API_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

SCHEMES = {
    "ApiKey": API_KEY_HEADER,
    "Timestamp": TIMESTAMP_HEADER,
    "Signature": SIGNATURE_HEADER,
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {})
            components["securitySchemes"] = {
                name: {"type": "apiKey", "in": "header", "name": header}
                for name, header in SCHEMES.items()
            }
            requirement: list[dict[str, list[str]]] = [{name: [] for name in SCHEMES}]
            for path, operations in schema["paths"].items():
                if path.startswith(API_V1 + "/"):
                    for operation in operations.values():
                        operation["security"] = requirement
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
