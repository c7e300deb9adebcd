"""Structured JSON logs, one event a line, with link tokens and OAuth codes scrubbed from
request paths, and the id of the request being served (if any) on every line."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

# Tokens only ever travel in these path segments; the access log must never carry them.
# Lookbehinds, not a consumed prefix: in `/sso/setup/sso/setup/<token>` the second prefix
# starts inside the first match, which a consuming pattern would have skipped.
SECRET_PATH = re.compile(
    r"(?:(?<=/sso/setup/)(?!(?:confirm|resend|mfa|done)(?:[/?\s\"]|$))|(?<=/sso/reset/link/))"
    r"[^/?\s\"]+"
)
# Microsoft's callback carries the authorization code and state in its query string (also
# with a trailing slash, which the app redirects to the callback, query and all); an app's
# authorization request carries the person's email address (login_hint), its state and nonce;
# an app's logout request carries an ID token.
SECRET_QUERY = re.compile(r"(/sso/entra/callback/?|/oidc/authorize/?|/oidc/logout/?)\?[^\s\"]*")
# login_hint goes on to the sign-in page's address, to fill in the email there.
LOGIN_HINT = re.compile(r"(?<=[?&]login_hint=)[^&#\s\"]*")

# Set by the web app's request id middleware for the time of one request.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def redact(text: str) -> str:
    # The query first: a setup token redacted first can eat the start of a callback's path
    # ("/sso/setup" + "/sso/entra/callback?code=…"), which the query pattern then misses.
    text = SECRET_PATH.sub("[redacted]", SECRET_QUERY.sub(r"\1?[redacted]", text))
    return LOGIN_HINT.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact(a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            event["request_id"] = request_id
        if record.exc_info:
            event["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(event, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.addFilter(RedactingFilter())
