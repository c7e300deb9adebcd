"""The admin API's interactive documentation (Swagger UI) at /docs, from assets shipped in a
PyPI package (fastapi-offline) and served here: it works offline, under the pages' CSP."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from core.templating import environment

ASSETS_URL = "/api-docs-assets"
ASSETS = StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static")

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
async def api_docs(request: Request) -> HTMLResponse:
    settings = request.app.state.settings
    html = (
        environment()
        .get_template("pages/api_docs.html")
        .render(brand=settings.brand_name, assets=ASSETS_URL, openapi_url=request.app.openapi_url)
    )
    return HTMLResponse(html)
