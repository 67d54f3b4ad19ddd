"""The OpenAPI document: the three signing headers as one security requirement of every
/api/v1 operation (FastAPI would list them as alternatives); and /docs and /redoc served
offline: Swagger UI and ReDoc load their scripts from this server (the files ship in the
`fastapi-offline` wheel), never from a CDN."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

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
    install_offline_docs(app)


DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
# The files Swagger UI and ReDoc need, as the fastapi-offline wheel ships them.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


def assets_directory() -> Any:
    return files("fastapi_offline") / "static"


def install_offline_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-backed /docs and /redoc (and its plain /openapi.json route) with
    routes that load every asset from this server. They are API routes, so metrics and logs
    name them by their path, not `unmatched`."""
    replaced = {DOCS_URL, REDOC_URL, OPENAPI_URL, OAUTH2_REDIRECT_URL}
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in replaced
    ]
    directory = assets_directory()
    title = app.title

    @app.get(OPENAPI_URL, include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:  # only the known files: no path ever reaches the filesystem
            raise HTTPException(404, f"no docs asset {name!r}")
        return FileResponse(str(directory / name), media_type=media_type)
