"""CSV files of people and the checks of a bulk send, shared by the end-to-end import test
and the bulk-send fault test: every person's copies of the setup email carry one link, the
links are distinct across people, and a link opens the setup page."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.e2e import SUBJECT
from tests.support.fault_people import emails_to, link_token
from tests.support.stack import SmtpSink

# The kinds of bad row a file carries, in turn: (the column at fault, how the row is spoilt).
BAD_KINDS = (
    ("external_email_1", "not-an-address"),
    ("last_name", ""),
    ("is_admin", "perhaps"),
    ("external_email_1", "duplicate"),
)


@dataclass
class PeopleFile:
    text: str
    good: list[str] = field(default_factory=list)  # addresses of the rows without problems
    bad: dict[int, str] = field(default_factory=dict)  # row number -> the column at fault


def people_csv(label: str, count: int, bad_every: int = 0) -> PeopleFile:
    """`count` people as Excel writes them (BOM, CRLF, TRUE/FALSE); every `bad_every`-th row
    spoilt, in turn, by each of BAD_KINDS."""
    lines = ["first_name,last_name,external_email_1,is_admin"]
    made = PeopleFile(text="")
    for n in range(count):
        row = n + 2
        first, last, email, admin = f"P{n}", f"Bulk {label}", f"{label}.{n}@example.com", "FALSE"
        if bad_every and n % bad_every == bad_every - 1:
            column, spoil = BAD_KINDS[(n // bad_every) % len(BAD_KINDS)]
            made.bad[row] = column
            if column == "last_name":
                last = spoil
            elif column == "is_admin":
                admin = spoil
            elif spoil == "duplicate":
                email = f"{label}.0@example.com"
            else:
                email = spoil
        else:
            made.good.append(email)
        lines.append(f'{first},"{last}",{email},{admin}')
    made.text = "\ufeff" + "\r\n".join(lines) + "\r\n"
    return made


async def batch_until_done(api: httpx.AsyncClient, batch_id: str, timeout: float) -> list[dict[str, Any]]:
    """Every progress answer until the batch is done, each with the monotonic time it came
    (`at`); a moment without an answer, while a process restarts, is waited out."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = await api.get(f"/api/v1/staff/batches/{batch_id}")
            if response.status_code == 200:
                seen.append({**response.json(), "at": time.monotonic()})
                if seen[-1]["state"] in ("done", "cancelled"):
                    return seen
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the batch is not done after {timeout:.0f} s: {seen[-1:]}"
        await asyncio.sleep(0.5)


async def links_when_all_sent(
    smtp: SmtpSink, addresses: list[str], base_url: str, timeout: float
) -> dict[str, list[str]]:
    """Each address's setup-email link tokens, once every address has at least one (then a
    moment more, for a late duplicate)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [a for a in addresses if not emails_to(smtp, a, SUBJECT)]
        if not missing:
            break
        assert time.monotonic() < deadline, f"{len(missing)} people have no setup email, e.g. {missing[:3]}"
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    return {a: [link_token(m, base_url) for m in emails_to(smtp, a, SUBJECT)] for a in addresses}


def one_distinct_link_each(links: dict[str, list[str]]) -> dict[str, str]:
    """Each person's one link (every copy carries it); the links are distinct across people."""
    single = {}
    for address, tokens in links.items():
        assert tokens and len(set(tokens)) == 1, (address, len(tokens), len(set(tokens)))
        single[address] = tokens[0]
    assert len(set(single.values())) == len(single)
    return single


async def opens_the_setup_page(base_url: str, token: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        page = await browser.get(f"/sso/setup/{token}")
    assert page.status_code == 200, (page.status_code, page.text[:500])
    assert f'href="/sso/setup/{token}/password"' in page.text, page.text[:500]
