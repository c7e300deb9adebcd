"""An unknown address: a page in the product's look for a browser, JSON for an API client."""

from __future__ import annotations

from tests.support.harness import running_app

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def test_a_browser_gets_a_page(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as app:
        for path in ("/no/such/page", "/sso/no-such-step", "/admin/nothing-here"):
            answer = await app.http.get(path, headers=BROWSER)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"].startswith("text/html"), path
            assert "<title>Page not found · agentOS Single Sign-On</title>" in answer.text
            assert '<link rel="stylesheet" href="/static/app.css">' in answer.text
            assert 'href="/sso/login"' in answer.text
            assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


async def test_api_clients_keep_json(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as app:
        for path, headers in (
            ("/no/such/page", {"Accept": "application/json"}),
            ("/no/such/page", {}),
            ("/api/v1/no-such-thing", BROWSER),  # the API answers JSON whoever asks
        ):
            answer = await app.http.get(path, headers=headers)
            assert answer.status_code == 404, path
            assert answer.json() == {"error": "not_found", "message": "Not Found"}, path
