"""Every email extends one layout per format, so the frame, greeting and support lines live once.

A structural check: it reads the templates and what they render, not how a mail client shows them.
"""

from __future__ import annotations

import html.parser
from collections import Counter
from itertools import combinations, pairwise
from typing import Any

import pytest
from jinja2 import nodes

from core.templating import EMAIL_SUBJECTS, TEMPLATES_DIR, Agency, environment, render_email

EMAIL_DIR = TEMPLATES_DIR / "email"
LAYOUTS = {"html": "email/_layout.html", "txt": "email/_layout.txt"}
SUPPORT = "help@example.org"
# Every variable each email's callers in activities/ pass, with representative values.
CONTEXTS: dict[str, dict[str, Any]] = {
    "sso_welcome": {
        "link": "https://sso.example.test/sso/setup/tok",
        "ttl_words": "15 minutes",
        "expires_at_text": "10:15 UTC on 01 March 2030",
    },
    "verification_code": {"code": "123456", "ttl_words": "15 minutes"},
    "password_reset_code": {"code": "654321", "ttl_words": "15 minutes"},
    "password_reset_link": {"link": "https://sso.example.test/sso/reset/link/tok", "ttl_words": "15 minutes"},
    "password_changed": {"login_email": "jane@agentos.example", "changed_at": "01 March 2030 at 10:00 UTC"},
    "entra_linked": {"account": "jane@contoso.example", "linked_at": "01 March 2030 at 10:00 UTC"},
    "email_change_code": {
        "code": "246810",
        "ttl_words": "24 hours",
        "account_url": "https://sso.example.test/sso/account",
    },
    "email_changed": {"new_email": "j***@example.org", "changed_at": "01 March 2030 at 10:00 UTC"},
    "mfa_changed": {
        "login_email": "jane@agentos.example",
        "what": "an authenticator app was set up",
        "changed_at": "01 March 2030 at 10:00 UTC",
    },
}


def email_templates(suffix: str) -> list[str]:
    return sorted(path.stem for path in EMAIL_DIR.glob(f"*.{suffix}") if not path.name.startswith("_"))


def render(name: str) -> Any:
    return render_email(
        name,
        to="jane@example.org",
        brand="agentOS",
        first_name="Jane",
        support_email=SUPPORT,
        **CONTEXTS[name],
    )


class Outline(html.parser.HTMLParser):
    """The tags of a rendered email, and the text and links inside its footer."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.lang: str | None = None
        self.table_roles: list[str | None] = []
        self.open: list[str] = []
        self.header_tags: list[str] = []
        self.footer_text = ""
        self.footer_links: list[str | None] = []
        self.title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags[tag] += 1
        if tag == "html":
            self.lang = found.get("lang")
        if tag == "table":
            self.table_roles.append(found.get("role"))
        if "header" in self.open:
            self.header_tags.append(tag)
        if "footer" in self.open and tag == "a":
            self.footer_links.append(found.get("href"))
        if tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        if "footer" in self.open:
            self.footer_text += data
        if self.open and self.open[-1] == "title":
            self.title += data


def test_the_emails_are_the_ones_with_subjects() -> None:
    assert email_templates("html") == email_templates("txt") == sorted(EMAIL_SUBJECTS)


@pytest.mark.parametrize("suffix", ["html", "txt"])
def test_every_email_extends_the_layout(suffix: str) -> None:
    env = environment()
    for name in email_templates(suffix):
        source = (EMAIL_DIR / f"{name}.{suffix}").read_text()
        parents = [
            node.template.value
            for node in env.parse(source).find_all(nodes.Extends)
            if isinstance(node.template, nodes.Const)
        ]
        assert parents == [LAYOUTS[suffix]], f"{name}.{suffix} extends {parents}"


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_email_renders_the_layout_landmarks(name: str) -> None:
    message = render(name)
    outline = Outline()
    outline.feed(message.html)
    outline.close()
    assert not outline.open, f"unclosed {outline.open}"
    assert outline.lang == "en"
    assert outline.title == message.subject
    assert outline.tags["header"] == 1 and outline.header_tags == ["h1"]
    assert outline.tags["h1"] == 1
    assert outline.tags["footer"] == 1
    assert SUPPORT in outline.footer_text
    assert outline.footer_links == [f"mailto:{SUPPORT}"]
    assert outline.table_roles and set(outline.table_roles) == {"presentation"}
    # Mail clients drop <style> and ignore classes: the layout styles inline.
    assert outline.tags["style"] == 0 and " class=" not in message.html
    # No preheader unless an email asks for one: a hidden line would reach screen readers.
    assert "display:none" not in message.html
    assert message.text.startswith("Hello Jane,\n\n")
    assert SUPPORT in message.text.split("\n\n")[-1]


def test_a_preheader_is_hidden_before_the_frame() -> None:
    template = environment().from_string(
        '{% extends "email/_layout.html" %}{% block preheader %}Your code is inside{% endblock %}'
    )
    page = template.render(subject="S", first_name="Jane", support_email=SUPPORT)
    hidden = '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all;">'
    assert f"{hidden}Your code is inside</div>" in page
    assert page.index(hidden) < page.index("<table")


def test_no_two_email_templates_share_six_lines() -> None:
    def runs(name: str) -> set[tuple[str, ...]]:
        lines = [line.strip() for line in (EMAIL_DIR / name).read_text().splitlines()]
        lines = [line for line in lines if line]
        return {tuple(lines[i : i + 6]) for i in range(len(lines) - 5)}

    files = sorted(path.name for path in EMAIL_DIR.iterdir())
    shared = [(a, b) for a, b in combinations(files, 2) if runs(a) & runs(b)]
    assert not shared, f"templates that repeat six lines; move them into the layout: {shared}"


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_text_emails_let_the_mail_client_wrap(name: str) -> None:
    """A hard-wrapped plain-text line breaks again on a phone, leaving a fragment on every
    other line: a paragraph is one line. Only a line ending with ":" may go on, to the link
    or code it introduces."""
    for paragraph in render(name).text.split("\n\n"):
        lines = paragraph.split("\n")
        for line, following in pairwise(lines):
            assert line.endswith(":"), f"{name}.txt breaks a sentence: {line!r} / {following!r}"


def test_a_long_name_wraps_inside_the_html_email() -> None:
    """The content cell lets a long unbroken name or address wrap (the browser suite checks
    the rendered width at 390 px)."""
    message = render_email(
        "sso_welcome",
        to="x@example.org",
        brand="agentOS",
        first_name="A" * 120,
        support_email=SUPPORT,
        **CONTEXTS["sso_welcome"],
    )
    cell = message.html.split("<header>", 1)[0].rsplit("<td", 1)[1]
    assert "overflow-wrap:anywhere" in cell and "word-break:break-word" in cell


def test_the_welcome_email_names_the_agency_when_it_is_given() -> None:
    context = {"first_name": "Jane", "support_email": SUPPORT, **CONTEXTS["sso_welcome"]}
    harbour = Agency(slug="harbour", name="Harbour Lettings", sender_name="Harbour Lettings via agentOS")
    named = render_email("sso_welcome", to="x@example.org", brand="agentOS", agency=harbour, **context)
    said = "Harbour Lettings has set up agentOS Single Sign-On for you."
    assert said in named.text and said in named.html
    assert named.subject == "Welcome to agentOS Single Sign-On"
    assert (named.sender_name, named.org) == ("Harbour Lettings via agentOS", "harbour")
    # A one-organisation deployment without a sender name: the words of today.
    default = Agency("default")
    plain = render_email("sso_welcome", to="x@example.org", brand="agentOS", agency=default, **context)
    assert "has set up" not in plain.text and "has set up" not in plain.html
    assert "Your administrator has invited you" in plain.text and plain.sender_name is None
