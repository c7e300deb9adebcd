"""Times as people read them: in the deployment's zone (SSO_TIME_ZONE) in emails, and on
pages as <time> elements that templates/static/times.js turns into the reader's own zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup, escape


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; a ValueError naming what is expected otherwise."""
    try:
        # A path-like key ("../x") would read outside the zone database.
        if not name or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA time zone; use a name such as Europe/London") from None


def clock(moment: datetime, zone: ZoneInfo, seconds: bool = False) -> str:
    """ "20:43 BST": a time within the next hours, such as when a link stops working."""
    return moment.astimezone(zone).strftime("%H:%M:%S %Z" if seconds else "%H:%M %Z")


def date(moment: datetime, zone: ZoneInfo, month: str = "%B") -> str:
    """ "7 June 2026" (the day not zero-padded, as people write it)."""
    local = moment.astimezone(zone)
    return f"{local.day} {local.strftime(month)} {local.year}"


def email_until(moment: datetime, zone: ZoneInfo) -> str:
    """When a link stops working, as its email says it: "20:43 BST on 7 June 2026"."""
    return f"{clock(moment, zone)} on {date(moment, zone)}"


def email_at(moment: datetime, zone: ZoneInfo) -> str:
    """When something happened, as a notice says it: "7 June 2026 at 20:43 BST"."""
    return f"{date(moment, zone)} at {clock(moment, zone)}"


# The styles a page may ask for; times.js knows the same names.
STYLES = ("clock", "day", "seconds")


def time_element(moment: datetime, zone: ZoneInfo, style: str = "day") -> Markup:
    """A <time> with the instant in UTC for the script and the server's rendering as the text
    a browser without scripts shows."""
    if style not in STYLES:
        raise ValueError(f"unknown time style {style!r}")
    text = clock(moment, zone, seconds=style == "seconds")
    if style != "clock":
        text = f"{date(moment, zone, '%b')}, {text}"
    instant = moment.astimezone(ZoneInfo("UTC")).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Markup('<time datetime="{}" data-style="{}">{}</time>').format(instant, style, escape(text))
