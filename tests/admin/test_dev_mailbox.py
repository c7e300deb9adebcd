"""The development mailbox shows an email as part of its page, not in a frame: its links
open their pages (a setup page refuses to be framed), and nothing of it is cut off."""

from __future__ import annotations

import re

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.harness import running_stack

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


async def test_an_email_is_shown_without_a_frame_and_its_button_is_a_plain_link(
    temporal_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    async with running_stack(temporal_env, sqlite_url, env="development") as s:
        staff = await s.create_staff()
        sent = await s.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=s.admin)
        assert sent.status_code == 202, sent.text
        await s.wait_for(staff["id"], lambda st: st["state"] == "email_sent")
        [token] = await s.links_sent_to(staff["external_email_1"])
        [email_id] = re.findall(
            r'href="/dev/mailbox/([0-9a-f-]{36})"', (await s.http.get("/dev/mailbox")).text
        )

        shown = await s.http.get(f"/dev/mailbox/{email_id}")
        assert shown.status_code == 200
        assert "<iframe" not in shown.text and "srcdoc" not in shown.text
        link = f"https://sso.example.test/sso/setup/{token}"
        [button] = re.findall(rf'<a href="{re.escape(link)}"[^>]*>([^<]+)</a>', shown.text)
        assert button == "Set Up Single Sign-On"
        assert '<section aria-label="Email as HTML">' in shown.text
        assert (
            "<html" not in shown.text.split("<section", 1)[1]
        )  # the email's body, not a document in a document
        policy = shown.headers["Content-Security-Policy"]
        # The email's own style attributes, and nothing else inline; still never framed.
        assert "style-src-attr 'unsafe-inline'" in policy
        assert "style-src 'self';" in policy and "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy and "frame-src" not in policy
        assert policy.count("unsafe-inline") == 1
