"""The local Microsoft Entra stand-in of `sso dev`: oidc-provider-mock with the development
tenant's people, its pages styled from a local stylesheet instead of a CDN's (nothing is
downloaded at run time, and the page works offline).

Run as `python -m core.entra_stand_in --host H --port P --users '<JSON list of claims>'`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import flask
import jinja2
import uvicorn
from oidc_provider_mock import app as provider_app
from oidc_provider_mock._storage import User

from core.templating import TEMPLATES_DIR

STAND_IN_TEMPLATES = TEMPLATES_DIR / "entra_stand_in"
STYLESHEET = "stand-in.css"


def build(users: Sequence[dict[str, object]]) -> flask.Flask:
    app = provider_app(
        require_nonce=True,
        user_claims=[
            User(sub=str(claims["sub"]), claims={k: v for k, v in claims.items() if k != "sub"})
            for claims in users
        ],
    )
    # Ours first: the frame and error page that load the local stylesheet; the rest are its own.
    app.jinja_loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(STAND_IN_TEMPLATES), app.jinja_loader]  # type: ignore[list-item]
    )

    @app.get(f"/{STYLESHEET}")
    def stylesheet() -> flask.Response:
        return flask.send_from_directory(STAND_IN_TEMPLATES, STYLESHEET, mimetype="text/css")

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="entra-stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", default="[]", help="a JSON list of each person's claims")
    args = parser.parse_args(argv)
    # The stand-in is plain http on loopback; authlib refuses that unless told.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    uvicorn.run(build(json.loads(args.users)), interface="wsgi", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
