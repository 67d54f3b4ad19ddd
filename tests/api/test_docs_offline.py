"""/docs and /redoc work without internet: every asset their pages name is served by the API
itself, and the metrics name these routes by their path."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from api.openapi import ASSETS, ASSETS_URL
from tests.api.conftest import Api

# Every URL an HTML page can make the browser load: src/href attributes and `url: '...'`.
URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


def referenced(html: str) -> list[str]:
    return [a or b for a, b in URL.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_reference_only_this_server_and_every_asset_is_served(
    api: Api, page: str
):
    response = await api.http.get(page)
    assert response.status_code == 200
    urls = referenced(response.text)
    assert urls, f"{page} references nothing: the scan is broken"
    assert "cdn." not in response.text and "googleapis" not in response.text
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from elsewhere"
        asset = await api.http.get(url)
        assert asset.status_code == 200, (
            f"{page} references {url}, which answers {asset.status_code}"
        )
        assert asset.content


async def test_the_assets_are_the_real_swagger_ui_and_redoc_bundles(api: Api):
    swagger = await api.http.get(f"{ASSETS_URL}/swagger-ui-bundle.js")
    redoc = await api.http.get(f"{ASSETS_URL}/redoc.standalone.js")
    css = await api.http.get(f"{ASSETS_URL}/swagger-ui.css")
    assert "SwaggerUIBundle" in swagger.text and swagger.headers["content-type"].startswith(
        "text/javascript"
    )
    assert "Redoc" in redoc.text
    assert css.headers["content-type"].startswith("text/css")
    assert set(ASSETS) == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "redoc.standalone.js",
        "favicon.png",
    }


async def test_only_the_known_asset_names_are_served(api: Api):
    for name in ("..%2F..%2Fapi%2Fapp.py", "secrets.txt", "%2Fetc%2Fpasswd"):
        response = await api.http.get(f"{ASSETS_URL}/{name}")
        assert response.status_code == 404


async def test_docs_routes_are_counted_under_their_paths_with_process_metrics(api: Api):
    for path in ("/docs", "/redoc", "/openapi.json", f"{ASSETS_URL}/swagger-ui.css"):
        assert (await api.http.get(path)).status_code == 200
    text = (await api.http.get("/metrics")).text
    for route in ("/docs", "/redoc", "/openapi.json", ASSETS_URL + "/{name}"):
        assert f'api_requests_total{{method="GET",route="{route}",status="200"}}' in text
    assert 'route="unmatched"' not in text
    assert "process_cpu_seconds_total" in text
    assert "process_resident_memory_bytes" in text


async def test_the_openapi_document_does_not_list_the_docs_routes(api: Api):
    schema = (await api.http.get("/openapi.json")).json()
    assert not {"/docs", "/redoc", "/openapi.json"} & set(schema["paths"])
    assert not any(path.startswith(ASSETS_URL) for path in schema["paths"])
