"""The local Microsoft Entra stand-in's pages load their stylesheet from the stand-in itself,
never from a CDN (nothing is downloaded at run time)."""

from __future__ import annotations

import re

from core.devstack import DEV_ENTRA_USERS
from core.entra_stand_in import build


def test_the_stand_in_pages_use_a_local_stylesheet() -> None:
    client = build(DEV_ENTRA_USERS).test_client()
    authorize = (
        "/oauth2/authorize?client_id=agentos-sso-dev&response_type=code&scope=openid"
        "&redirect_uri=http://localhost:8000/cb&state=s&nonce=n"
    )
    for path in ("/", authorize, "/oauth2/authorize"):  # the last: its error page
        page = client.get(path)
        html = page.get_data(as_text=True)
        assert "cdn" not in html.lower(), path
        assert re.findall(r'rel="stylesheet"\s+href="([^"]+)"', html) == ["/stand-in.css"], path
    assert "jo.bloggs" in client.get(authorize).get_data(as_text=True)  # its people are there
    css = client.get("/stand-in.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert b".container" in css.data
