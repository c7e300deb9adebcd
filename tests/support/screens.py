"""What every browser test shares: Debian's Chromium, the two viewports, and `Screen`, which
checks each page a person sees (axe-core, labels, announced errors, keyboard focus, the
stylesheet) and, with SSO_SCREENSHOTS=1, saves it to docs/screenshots/."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import ConsoleMessage, Frame, Locator, Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
SAVE_SCREENSHOTS = os.environ.get("SSO_SCREENSHOTS") == "1"

# Every browser test: selectable with -m browser, and skipped (saying how to enable it) when
# Debian's Chromium is not installed. They run the real stack, so they are e2e tests too.
MARKS = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=(
            "the browser tests need /usr/bin/chromium: install Debian's chromium: apt-get install chromium"
        ),
    ),
    pytest.mark.asyncio(loop_scope="session"),
]

# Chromium as a test browser: headless, and nothing of its own on the network.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--metrics-recording-only",
    "--disable-domain-reliability",
    "--no-pings",
]

VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
}

BODY_BACKGROUND = "rgb(244, 245, 247)"  # app.css; tells that the stylesheet was applied
BLOCKING = ("serious", "critical")

# Marks every element a keyboard should reach, in document order.
_TAB_STOPS = """() => {
  const selector = 'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]),'
    + ' select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"]),'
    + ' details > summary';
  // What a closed <details> holds is not on the page until it is opened (its summary is).
  const stops = Array.from(document.querySelectorAll(selector))
    .filter(el => el.getClientRects().length > 0
                  && !el.closest('details:not([open]) > :not(summary)'));
  stops.forEach((el, i) => el.setAttribute('data-tab-stop', String(i)));
  return stops.map(el => el.outerHTML.slice(0, 160));
}"""

_FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) { return null; }
  const style = getComputedStyle(el);
  return {stop: el.getAttribute('data-tab-stop'), html: el.outerHTML.slice(0, 160),
          outline: style.outlineStyle, width: parseFloat(style.outlineWidth) || 0,
          shadow: style.boxShadow};
}"""

_WIDTHS = """() => ({scroll: document.documentElement.scrollWidth,
                    client: document.documentElement.clientWidth})"""

_UNLABELLED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)"""

# Messages a person must hear: every error or notice box inside a live region, every field
# marked invalid described by an alert.
_UNANNOUNCED = """() => {
  const problems = [];
  for (const box of document.querySelectorAll('.error, .notice, .success')) {
    if (!box.closest('[role=alert], [role=status], [aria-live]')) {
      problems.push('not in a live region: ' + box.outerHTML.slice(0, 200));
    }
  }
  for (const field of document.querySelectorAll('[aria-invalid=true]')) {
    const ids = (field.getAttribute('aria-describedby') || '').split(/\\s+/).filter(Boolean);
    const described = ids.map(id => document.getElementById(id)).filter(Boolean);
    if (described.length !== ids.length) {
      problems.push('aria-describedby names a missing element: ' + field.outerHTML);
    }
    if (!described.some(el => el.closest('[role=alert]'))) {
      problems.push('invalid field not described by the error: ' + field.outerHTML);
    }
  }
  return problems;
}"""


def axe_report(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        lines.append(
            f"- {violation['id']} ({violation['impact']}): {violation['help']} {violation['helpUrl']}"
        )
        for node in violation["nodes"]:
            lines.append(f"    {', '.join(map(str, node['target']))}: {node['html'][:200]}")
            if node.get("failureSummary"):
                lines.append("      " + node["failureSummary"].replace("\n", "\n      "))
    return "\n".join(lines)


class Screen:
    """One person's browser tab at one viewport. Every page of the app it lands on must go
    through `check` before the test moves on (the fixture asserts it at the end)."""

    def __init__(self, page: Page, viewport: str, origin: str) -> None:
        self.page = page
        self.viewport = viewport
        self.origin = origin
        self.visits: list[str] = []
        self.checked: set[int] = set()
        self.console_errors: list[str] = []
        page.on("framenavigated", self._navigated)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def _navigated(self, frame: Frame) -> None:
        if frame == self.page.main_frame and frame.url.startswith(self.origin):
            self.visits.append(frame.url)

    def _console(self, message: ConsoleMessage) -> None:
        """Errors in the console (a refused script or style, a missing file); the page's own
        status (a 400 for a refused form) is not one."""
        if message.type != "error" or not self.page.url.startswith(self.origin):
            return
        if (
            message.text.startswith("Failed to load resource: the server responded with")
            and message.location.get("url") == self.page.url
        ):
            return
        self.console_errors.append(f"{self.page.url}: {message.text}")

    def unchecked(self) -> list[str]:
        return [url for i, url in enumerate(self.visits) if i not in self.checked]

    # -- moving on ----------------------------------------------------------------------

    async def goto(self, path: str) -> None:
        await self.page.goto(path)

    @asynccontextmanager
    async def navigating(self) -> AsyncIterator[None]:
        """Wrap the action (a click, Enter) that leaves the page; waits for the next one."""
        async with self.page.expect_navigation(wait_until="load"):
            yield

    async def press(self, name: str) -> None:
        """Click the button with this name and wait for the page it leads to."""
        async with self.navigating():
            await self.button(name).click()

    async def follow(self, name: str) -> None:
        async with self.navigating():
            await self.link(name).click()

    def button(self, name: str) -> Locator:
        return self.page.get_by_role("button", name=name, exact=True)

    def link(self, name: str) -> Locator:
        return self.page.get_by_role("link", name=name, exact=True)

    def field(self, label: str) -> Locator:
        return self.page.get_by_label(label, exact=True)

    async def text(self) -> str:
        return " ".join((await self.page.locator("main").inner_text()).split())

    async def heading(self) -> str:
        return " ".join((await self.page.locator("h1").inner_text()).split())

    # -- the checks ---------------------------------------------------------------------

    async def check(
        self, name: str, *, alert: str | None = None, invalid: str | None = None, screenshot: bool = True
    ) -> None:
        """The page now shown: screenshot, axe-core, labels, announcements, keyboard focus.

        `alert`: text the page must announce (role="alert"); `invalid`: the id of the field
        it concerns, which must be marked aria-invalid and described by the alert."""
        page = self.page
        await page.wait_for_load_state("load")
        assert page.url.startswith(self.origin), page.url
        where = f"{name} ({self.viewport}, {page.url})"
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == BODY_BACKGROUND, f"{where}: app.css not applied ({background})"
        if screenshot and SAVE_SCREENSHOTS:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(
                path=SCREENSHOTS / f"{name}-{self.viewport}.png",
                full_page=True,
                animations="disabled",
                caret="hide",
            )

        # Nothing scrolls sideways, on a phone either: long names and tables wrap.
        widths = await page.evaluate(_WIDTHS)
        assert widths["scroll"] <= widths["client"], (
            f"{where}: {widths['scroll']} px wide in {widths['client']} px"
        )

        results = await Axe().run(page)
        blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING]
        assert not blocking, f"{where}: axe-core found\n{axe_report(blocking)}"

        unlabelled = await page.evaluate(_UNLABELLED)
        assert not unlabelled, f"{where}: fields without a label: {unlabelled}"
        unannounced = await page.evaluate(_UNANNOUNCED)
        assert not unannounced, f"{where}: {unannounced}"
        if alert is not None:
            alerts = [" ".join(t.split()) for t in await page.locator("[role=alert]").all_inner_texts()]
            assert any(alert in t for t in alerts), f"{where}: no alert saying {alert!r}: {alerts}"
        if invalid is not None:
            field = page.locator(f"#{invalid}")
            assert await field.get_attribute("aria-invalid") == "true", f"{where}: #{invalid}"
            described = (await field.get_attribute("aria-describedby") or "").split()
            texts = [await page.locator(f"#{i}").inner_text() for i in described]
            assert alert is None or any(alert in " ".join(t.split()) for t in texts), (
                f"{where}: #{invalid} is not described by {alert!r}: {texts}"
            )

        await self._keyboard_walk(where)
        assert not self.console_errors, f"{where}: {self.console_errors}"
        self.checked.add(len(self.visits) - 1)

    async def _keyboard_walk(self, where: str) -> None:
        """Tab through the page: every link, button and field is reached, and each shows a
        visible focus outline. Focus goes back where the page put it (autofocus)."""
        page = self.page
        stops = await page.evaluate(_TAB_STOPS)
        start = await page.evaluate_handle("document.activeElement")
        reached: dict[str, dict[str, Any]] = {}
        for _ in range(2 * len(stops) + 4):
            await page.keyboard.press("Tab")
            focused = await page.evaluate(_FOCUSED)
            if focused is None:
                continue
            if focused["stop"] in reached:
                break
            reached[str(focused["stop"])] = focused
        missing = [html for i, html in enumerate(stops) if str(i) not in reached]
        assert not missing, f"{where}: the keyboard never reaches {missing}"
        invisible = [
            f["html"]
            for f in reached.values()
            if not ((f["outline"] != "none" and f["width"] >= 2) or f["shadow"] != "none")
        ]
        assert not invisible, f"{where}: no visible focus on {invisible}"
        await page.evaluate("el => el && el.focus && el.focus()", start)
        await start.dispose()
