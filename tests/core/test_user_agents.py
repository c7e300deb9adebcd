"""Browsers named in plain words from their User-Agent header, for Where you're signed in."""

from __future__ import annotations

import pytest

from api.services.account_sessions import how_signed_in
from core.user_agents import browser_label

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15"
)


@pytest.mark.parametrize(
    ("header", "label"),
    [
        (FIREFOX, "Firefox on Windows"),
        (IPHONE, "Safari on iPhone"),
        (EDGE, "Edge on Windows"),
        (ANDROID_CHROME, "Chrome on Android"),
        (MAC_SAFARI, "Safari on macOS"),
        ("curl/8.5.0", "An unknown browser"),
        ("", "An unknown browser"),
        (None, "An unknown browser"),
        ("Linux " + "x" * 10_000 + " Firefox/1", "A browser on Linux"),
    ],
)
def test_a_browser_is_named_in_plain_words(header: str | None, label: str) -> None:
    assert browser_label(header) == label


def test_how_a_session_was_signed_in_names_a_passkey_with_or_without_the_password() -> None:
    assert how_signed_in({"method": "passkey", "amr": ["hwk", "user", "mfa"]}) == "Passkey"
    assert (
        how_signed_in({"method": "passkey", "amr": ["pwd", "swk", "user", "mfa"]}) == "Password and passkey"
    )
    assert how_signed_in({"method": "totp"}) == "Password and Multi-Factor Authentication"
    assert how_signed_in({"method": "entra"}) == "Microsoft"
    assert how_signed_in({}) == "Password"
