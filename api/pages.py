"""Server-rendered pages share one Jinja environment and one set of page defaults."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from core.templating import environment


def render_page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    html = environment().get_template(f"pages/{name}.html").render(
        brand=settings.brand_name, support_email=settings.support_email, **context
    )
    return HTMLResponse(html, status_code=status_code)
