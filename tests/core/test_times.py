"""Times as people read them (core/times.py): SSO_TIME_ZONE, validated when the settings load,
in emails and as the server's fallback text of a page's <time>; in summer and in winter."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from core.templating import environment, render_email
from core.times import email_at, email_until, time_element, time_zone
from tests.support.config import make_settings

LONDON = ZoneInfo("Europe/London")
SUMMER = datetime(2026, 7, 1, 19, 43, 5, tzinfo=UTC)  # BST, an hour ahead of UTC
WINTER = datetime(2026, 1, 7, 19, 43, 5, tzinfo=UTC)  # GMT, the same as UTC


def test_the_default_zone_is_london_and_is_validated_at_start_up() -> None:
    assert make_settings().time_zone == "Europe/London"
    assert make_settings().zone == LONDON
    assert make_settings(time_zone="Asia/Kolkata").zone == ZoneInfo("Asia/Kolkata")


@pytest.mark.parametrize(
    "name", ["", "BST", "Mars/Olympus", "Europe", "Europe/", "../../etc/passwd", "/etc/localtime", "x" * 300]
)
def test_a_zone_that_is_not_iana_is_refused_naming_what_is_expected(name: str) -> None:
    with pytest.raises(ValidationError, match="is not an IANA time zone; use a name such as Europe/London"):
        make_settings(time_zone=name)


def test_emails_say_local_time_in_summer_and_winter() -> None:
    assert email_until(SUMMER, LONDON) == "20:43 BST on 1 July 2026"
    assert email_until(WINTER, LONDON) == "19:43 GMT on 7 January 2026"
    assert email_at(SUMMER, LONDON) == "1 July 2026 at 20:43 BST"
    assert email_at(WINTER, time_zone("America/New_York")) == "7 January 2026 at 14:43 EST"


def test_the_welcome_email_says_until_when_in_the_zone() -> None:
    email = render_email(
        "sso_welcome",
        to="jo@example.org",
        brand="agentOS",
        first_name="Jo",
        support_email="help@example.org",
        link="https://sso.example.test/sso/setup/tok",
        ttl_words="15 minutes",
        expires_at_text=email_until(SUMMER, LONDON),
    )
    assert "(until 20:43 BST on 1 July 2026)" in email.text
    assert "until 20:43 BST on 1 July 2026" in email.html
    assert "UTC" not in email.text + email.html


@pytest.mark.parametrize(
    ("moment", "style", "shown"),
    [
        (SUMMER, "day", "1 Jul 2026, 20:43 BST"),
        (WINTER, "day", "7 Jan 2026, 19:43 GMT"),
        (SUMMER, "seconds", "1 Jul 2026, 20:43:05 BST"),
        (WINTER, "clock", "19:43 GMT"),
    ],
)
def test_a_page_time_carries_the_instant_and_a_local_fallback(
    moment: datetime, style: str, shown: str
) -> None:
    instant = moment.isoformat().replace("+00:00", "Z")
    expected = f'<time datetime="{instant}" data-style="{style}">{shown}</time>'
    assert str(time_element(moment, LONDON, style)) == expected
    # The same through the pages' filter, in the zone the page is given.
    template = environment().from_string("{{ moment | when(style) }}")
    assert template.render(moment=moment, style=style, time_zone=LONDON) == expected


def test_an_unknown_style_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown time style"):
        time_element(SUMMER, LONDON, "weekday")
