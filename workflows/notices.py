"""Emails that must go out even after the flow that asked for them has closed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.inputs import NoticeInput
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
