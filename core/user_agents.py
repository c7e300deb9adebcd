"""A browser named in plain words ("Firefox on Windows") from its User-Agent header.

Only this short label is stored with a session: the full header says more about the
person's machine than "where you're signed in" needs. A handful of substring checks, no
regular expressions on input a client chooses.
"""

from __future__ import annotations

# The longest header looked at; real ones are a few hundred characters.
MAX_LENGTH = 512
# First match wins: Edge and Opera also say "Chrome", Chrome also says "Safari".
BROWSERS = (
    ("Edg", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
# iPhones and iPads also say "Mac OS X", Android also says "Linux".
SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)
UNKNOWN = "An unknown browser"


def browser_label(user_agent: str | None) -> str:
    header = (user_agent or "")[:MAX_LENGTH]
    browser = next((name for token, name in BROWSERS if token in header), None)
    system = next((name for token, name in SYSTEMS if token in header), None)
    if browser and system:
        return f"{browser} on {system}"
    if system:
        return f"A browser on {system}"
    return browser or UNKNOWN
