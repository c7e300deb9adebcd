"""/docs works offline: Swagger UI's assets come from this app, under the pages' CSP."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tests.support.harness import running_app


async def test_docs_reference_no_other_host_and_their_assets_answer(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as app:
        page = await app.http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "<script>" not in page.text and "<style" not in page.text  # no inline code
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 3, assets
        for asset in assets:
            assert not urlsplit(asset).netloc, f"{asset} is on another host"
            answer = await app.http.get(asset)
            assert answer.status_code == 200, asset
            assert len(answer.content) > 100, asset
        spec = await app.http.get(re.search(r'data-openapi-url="([^"]+)"', page.text)[1])  # type: ignore[index]
        assert spec.status_code == 200 and spec.json()["paths"]
        # ReDoc would load from a CDN: it is not served.
        assert (await app.http.get("/redoc")).status_code == 404
