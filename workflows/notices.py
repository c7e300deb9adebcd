"""Emails that must go out even after the flow that asked for them has closed."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.account import AccountActivities
    from activities.inputs import MfaNoticeInput, NoticeInput
    from activities.reset import ResetActivities
    from workflows.common import EmailRetry, required, start_email


@workflow.defn(name="PasswordChangedNotice")
class PasswordChangedNoticeWorkflow:
    """Retries "Your password was changed" on its own, so a reset flow can close at once and a
    new reset for the same account can start while the notice is still being delivered."""

    @workflow.run
    async def run(self, notice: NoticeInput | None = None, retry: EmailRetry | None = None) -> None:
        notice, retry = required(notice, "This start"), required(retry, "This start")
        await start_email(
            ResetActivities.send_password_changed, notice, retry, "Tell the person their password was changed"
        )


@dataclass
class MfaNoticeStart:
    """Started by the web app, so it carries the email retry policy a flow gets at its start."""

    notice: MfaNoticeInput
    email_retry: EmailRetry


@workflow.defn(name="MfaChangedNotice")
class MfaChangedNoticeWorkflow:
    """ "Your Multi-Factor Authentication was changed": a takeover that adds or replaces a
    factor must not go unnoticed, so the email is retried like every flow's."""

    @workflow.run
    async def run(self, start: MfaNoticeStart | None = None) -> None:
        start = required(start, "This start")
        await start_email(
            AccountActivities.send_mfa_changed,
            start.notice,
            start.email_retry,
            "Tell the person their Multi-Factor Authentication changed",
        )
