"""The README stays a front page, and the documentation's relative links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Markdown links and images, and the src of HTML images (the screenshots).
_LINK = re.compile(r"\]\(([^)\s]+)\)|<img\s[^>]*src=\"([^\"]+)\"")


def _relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    targets = [a or b for a, b in _LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_at_most_10_kib() -> None:
    size = len(README.read_bytes())
    assert size <= 10 * 1024, f"README.md is {size} bytes; move detail into docs/"


def test_the_readme_links_every_document() -> None:
    linked = {(README.parent / t).resolve() for t in _relative_links(README)}
    expected = {
        *(
            ROOT / "docs" / f"{name}.md"
            for name in (
                "settings",
                "admin-api",
                "flows",
                "entra",
                "architecture",
                "security",
                "operations",
                "testing",
                "deployment",
            )
        ),
        ROOT / "bench" / "README.md",
    }
    assert not sorted(str(p.relative_to(ROOT)) for p in expected - linked)
    assert all(p.exists() for p in expected)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_without_anchors(path: Path) -> None:
    links = _relative_links(path)
    # Anchors break silently when a heading is reworded; name the section in words instead.
    assert not [t for t in links if "#" in t], "link to the file and name the section in words"
    missing = [t for t in links if not (path.parent / t).is_file()]
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"
